// Seeded mutants of every reader's input — a GGUF, an Arrow dump, a baseline, a ds4 dump directory —
// through the real reader and command path (test/fuzz-case.ts says what each oracle checks). None may
// end in an internal error, a hang or a misleading pass; `npm run fuzz -- --n 10000` is the long run.
import { afterAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { READERS, formatFuzzReport, prepareFixtures, runFuzz } from './fuzz.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-fuzz-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const PER_READER = 250;
const SEED = 12;

describe('fuzz: bad input never passes, never crashes, never hangs', () => {
  it(`${PER_READER} mutants per reader: 0 internal errors, 0 hangs, 0 misleading passes`, async () => {
    const fixtures = await prepareFixtures(dir);
    const rep = await runFuzz({ fixtures, readers: READERS, n: PER_READER, seed: SEED, timeoutMs: 20_000, workers: Math.max(1, Math.min(2, os.availableParallelism())), workDir: path.join(dir, 'work') });
    const report = formatFuzzReport(rep, SEED).join('\n');
    expect(rep.failures, report).toEqual([]);
    for (const reader of READERS) {
      const c = rep.counts[reader];
      expect(c.ok + c.refused + c.internal + c.hang + c.misleading, reader).toBe(PER_READER);
      // the mutants reach both sides of every reader: some are refused, some accepted and run through
      expect(c.refused, `${reader}\n${report}`).toBeGreaterThan(PER_READER / 20);
      expect(c.ok, `${reader}\n${report}`).toBeGreaterThan(PER_READER / 20);
    }
  });
});
