// The bundled default model: the tiny fixture (seed 0), generated on first use into the cache and reused.
// The file name carries a stamp hashed from the model/ sources, so any change to what the code would
// write (fixture, writer, quant encoders, vocabulary) makes a new file instead of reusing a stale one.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { writeFixture } from './fixture.ts';

const MODEL_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.dirname(MODEL_DIR);

export function cacheDir(): string {
  return process.env.DS4_DIFF_CACHE || path.join(REPO_ROOT, '.cache');
}

/** Hash of the model/ sources (fixture, writer, quant encoders, vocabulary and what they import). */
function generatorStamp(): string {
  const h = createHash('sha256');
  for (const sub of ['', 'quant']) {
    const d = path.join(MODEL_DIR, sub);
    for (const f of fs.readdirSync(d).filter((x) => x.endsWith('.ts')).sort()) h.update(`${sub}/${f}\0`).update(fs.readFileSync(path.join(d, f)));
  }
  return h.digest('hex').slice(0, 12);
}

export async function defaultModelPath(): Promise<string> {
  const dir = cacheDir();
  const name = `tiny-seed0-${generatorStamp()}.gguf`;
  const file = path.join(dir, name);
  if (fs.existsSync(file)) return file;
  fs.mkdirSync(dir, { recursive: true });
  await writeFixture({ preset: 'tiny', seed: 0, out: file }); // atomic: written under a temporary name, then renamed
  // Older fixtures go once nothing has read or written them for a week: a cache shared by checkouts of
  // other versions (DS4_DIFF_CACHE) must not lose the file another checkout's running process is about to open.
  const stale = Date.now() - STALE_FIXTURE_MS;
  for (const f of fs.readdirSync(dir)) {
    if (!/^tiny-seed0-[0-9a-f]{12}\.gguf$/.test(f) || f === name) continue;
    const p = path.join(dir, f);
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (st && Math.max(st.atimeMs, st.mtimeMs) < stale) fs.rmSync(p, { force: true });
  }
  return file;
}

const STALE_FIXTURE_MS = 7 * 24 * 3600 * 1000;
