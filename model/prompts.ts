// Prompts nobody chose: seeded word sequences for the clean runs that measure the judge's false-alarm rate
// (`ds4-diff calibrate`). Deterministic per seed, so a reported false alarm can be re-run.
import { mulberry32 } from './fixture.ts';

const WORDS = [
  'sky', 'river', 'stone', 'light', 'quiet', 'number', 'seven', 'blue', 'tree', 'window', 'north', 'cloud', 'paper',
  'engine', 'small', 'bright', 'under', 'above', 'green', 'fast', 'slow', 'code', 'function', 'return', 'value',
  'ocean', 'mountain', 'red', 'write', 'explain', 'list', 'count', 'why', 'the', 'of', '42', '3.14', 'x*2', '你好', 'é',
];

/** `n` prompts of 2..15 words each, from `seed`. */
export function generatePrompts(n: number, seed: number): string[] {
  const rnd = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const len = 2 + Math.floor(rnd() * 14);
    return Array.from({ length: len }, () => WORDS[Math.floor(rnd() * WORDS.length)]).join(' ');
  });
}
