// The fuzz driver: prepares what the cases mutate (test/fuzz-case.ts), runs the cases on a pool of
// worker threads — a case that does not finish within its time limit is a hang: its worker is
// terminated and replaced — and counts the outcomes per reader. Used by test/fuzz.test.ts (a few
// hundred cases per reader) and `npm run fuzz -- --n 10000` (test/fuzz-run.ts).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { recordBaseline } from '../diff/baseline.ts';
import { stringifyJson } from '../diff/json.ts';
import { defaultModelPath } from '../model/default-model.ts';
import { openGguf } from '../model/gguf.ts';
import { configFromGguf } from '../model/config.ts';
import { runReference } from '../reference/runner.ts';
import { stage } from '../model/stages.ts';
import { runDeviceBounds } from '../ascend/budgets.ts';
import { makeJudge } from '../diff/gate.ts';
import { readManifest } from '../diff/manifest.ts';
import type { CaseResult, Fixtures, Outcome, Reader } from './fuzz-case.ts';

export { READERS, type Fixtures, type Outcome, type Reader } from './fuzz-case.ts';

const CLI = path.join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
export const OUTCOMES: readonly Outcome[] = ['ok', 'refused', 'internal', 'hang', 'misleading'];

/** The tiny model, a run directory of it with its recorded baseline, and ds4-named dumps of its reference. */
export async function prepareFixtures(dir: string): Promise<Fixtures> {
  const model = await defaultModelPath();
  const runDir = path.join(dir, 'run');
  const run = spawnSync(process.execPath, [CLI, 'run', '--layer', '0', '-p', 'Hello', '--no-teacher', '--no-baseline', '--out', runDir], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`fuzz fixture run failed (${run.status}): ${run.stderr}`);
  const baseline = path.join(dir, 'baseline.json');
  fs.writeFileSync(baseline, stringifyJson(await recordBaseline(runDir, makeJudge({ deviceBound: runDeviceBounds(readManifest(runDir)) }), { now: new Date('2026-01-01T00:00:00Z') })));
  // ds4's graph dumps of 4 tokens through layers 0..2 (raw, raw, ratio 4: a compressed row closes at pos 3) and the head
  const dumps = path.join(dir, 'dumps');
  fs.mkdirSync(dumps);
  const dumpPrefix = path.join(dumps, 'ds4');
  const dumpTokens = [0, 5, 9, 3];
  const m = await openGguf(model);
  const cfg = configFromGguf(m);
  await runReference({
    model: m, cfg, tokens: dumpTokens, lastLayer: 2,
    tap: (rec) => {
      const graph = stage(rec.stage).aliases.graph?.[0];
      // the head as ds4 dumps it: layer n_layer, pos 0
      const pos = stage(rec.stage).scope === 'head' ? 0 : rec.pos;
      if (!graph || rec.stage === 'raw_cache' || rec.stage === 'index_scores') return;
      fs.writeFileSync(`${dumpPrefix}_${graph}-${rec.layer}_pos${pos}.${rec.dtype === 'i32' ? 'i32' : 'bin'}`, Buffer.from(rec.values.buffer, rec.values.byteOffset, rec.values.byteLength));
    },
  });
  m.close();
  return { model, runDir, baseline, dumpPrefix, dumpTokens };
}

export interface FuzzReport {
  /** per reader, per outcome */
  counts: Record<string, Record<Outcome, number>>;
  /** the cases that were internal errors, hangs or misleading passes (reader, index, detail) */
  failures: Array<{ reader: Reader; i: number; outcome: Outcome; detail: string }>;
  seconds: number;
}

export interface FuzzOptions {
  fixtures: Fixtures;
  readers: readonly Reader[];
  /** cases per reader */
  n: number;
  seed: number;
  /** a case running longer than this is a hang */
  timeoutMs: number;
  workers: number;
  /** scratch space; each worker works in its own subdirectory */
  workDir: string;
  onProgress?: (done: number, total: number) => void;
}

interface PoolWorker {
  worker: Worker;
  id: number;
}

/** Runs every case on a pool of worker threads; see the file comment. */
export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const t0 = Date.now();
  const queue: Array<{ reader: Reader; i: number }> = [];
  for (let i = 0; i < o.n; i++) for (const reader of o.readers) queue.push({ reader, i });
  const counts: FuzzReport['counts'] = {};
  for (const r of o.readers) counts[r] = { ok: 0, refused: 0, internal: 0, hang: 0, misleading: 0 };
  const failures: FuzzReport['failures'] = [];
  const total = queue.length;
  let done = 0;
  let nextId = 0;

  const start = (): Promise<PoolWorker> => {
    const id = nextId++;
    const work = path.join(o.workDir, `w${id}`);
    fs.rmSync(work, { recursive: true, force: true });
    const worker = new Worker(new URL('./fuzz-worker.mjs', import.meta.url), { workerData: { fixtures: o.fixtures, work } });
    return new Promise((resolve, reject) => {
      worker.once('message', () => resolve({ worker, id }));
      worker.once('error', reject);
    });
  };

  const runOne = (w: PoolWorker, c: { reader: Reader; i: number }): Promise<CaseResult | 'hang'> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        w.worker.removeAllListeners('message');
        resolve('hang');
      }, o.timeoutMs);
      w.worker.once('message', (res: CaseResult) => {
        clearTimeout(timer);
        resolve(res);
      });
      w.worker.postMessage({ reader: c.reader, seed: o.seed, i: c.i });
    });

  const lane = async () => {
    let w = await start();
    for (let c = queue.shift(); c; c = queue.shift()) {
      const res = await runOne(w, c);
      const outcome: Outcome = res === 'hang' ? 'hang' : res.outcome;
      counts[c.reader][outcome]++;
      if (outcome === 'internal' || outcome === 'hang' || outcome === 'misleading') {
        failures.push({ reader: c.reader, i: c.i, outcome, detail: res === 'hang' ? `no result within ${o.timeoutMs} ms` : res.detail });
      }
      if (res === 'hang') {
        await w.worker.terminate();
        w = await start();
      }
      o.onProgress?.(++done, total);
    }
    await w.worker.terminate();
  };
  await Promise.all(Array.from({ length: o.workers }, lane));
  return { counts, failures, seconds: (Date.now() - t0) / 1000 };
}

/** The report as lines: per reader, the count of every outcome class, then each failure. */
export function formatFuzzReport(rep: FuzzReport, seed: number): string[] {
  const lines = [`seed ${seed}, ${rep.seconds.toFixed(1)} s`, `${'reader'.padEnd(10)}${OUTCOMES.map((x) => x.padStart(12)).join('')}`];
  for (const [reader, c] of Object.entries(rep.counts)) lines.push(`${reader.padEnd(10)}${OUTCOMES.map((x) => String(c[x]).padStart(12)).join('')}`);
  for (const f of rep.failures) lines.push(`${f.outcome} ${f.reader} #${f.i}: ${f.detail}`);
  return lines;
}
