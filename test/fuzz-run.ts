// `npm run fuzz -- --n 10000 [--seed S] [--readers gguf,arrow,baseline,ds4dump] [--timeout 30] [--workers 2]`:
// the long fuzz run. Prints the count of every outcome class per reader; exits 1 when any case was an
// internal error, a hang or a misleading pass (each is listed with what was mutated).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { READERS, formatFuzzReport, prepareFixtures, runFuzz, type Reader } from './fuzz.ts';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const n = Number(opt('n', '1000'));
const seed = Number(opt('seed', '1'));
const readers = opt('readers', READERS.join(',')).split(',') as Reader[];
const timeoutMs = Number(opt('timeout', '30')) * 1000;
const workers = Number(opt('workers', String(Math.max(1, Math.min(2, os.availableParallelism())))));
if (!(n > 0) || !readers.every((r) => (READERS as readonly string[]).includes(r))) {
  process.stderr.write(`usage: npm run fuzz -- --n N [--seed S] [--readers ${READERS.join(',')}] [--timeout SECONDS] [--workers W]\n`);
  process.exit(3);
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-fuzz-'));
try {
  const fixtures = await prepareFixtures(dir);
  let last = 0;
  const rep = await runFuzz({
    fixtures, readers, n, seed, timeoutMs, workers, workDir: path.join(dir, 'work'),
    onProgress: (done, total) => {
      if (Date.now() - last < 10_000) return;
      last = Date.now();
      process.stderr.write(`fuzz: ${done}/${total} cases\n`);
    },
  });
  process.stdout.write(formatFuzzReport(rep, seed).join('\n') + '\n');
  process.exitCode = rep.failures.length ? 1 : 0;
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
