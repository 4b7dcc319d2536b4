// Row-parallel matvec for the large projections (the 129280-row output head, attn_q_b, ...): the
// output rows are split between this thread and worker threads; every output element is still reduced
// by exactly one thread with the same code, so results are bit-identical to the single-thread path
// (ds4 splits its threaded matvecs by output rows the same way). Weights must sit in a
// SharedArrayBuffer (ModelWeights puts large tensors there); anything else runs on this thread.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { onCancel } from '../diff/cancel.ts';
import type { Q8Act } from '../model/quant/index.ts';

/** Tensors at least this large are read into shared memory and split across threads. */
export const PARALLEL_MIN_BYTES = 8 << 20;

export type RowKernel = 'q8_0' | 'f16';

export interface RowJob {
  kind: RowKernel;
  w: Uint8Array;
  rows: number;
  cols: number;
  /** f16: the activation; q8_0: the quantized activation */
  x?: Float32Array;
  act?: Q8Act;
}

interface PoolWorker {
  worker: Worker;
  done: Int32Array;
}

let pool: PoolWorker[] | undefined;
const READY_TIMEOUT_MS = 20_000;
const JOB_TIMEOUT_MS = 120_000;

/**
 * Start the workers and wait (blocking: matvec is synchronous) until each has loaded its module and
 * said so through shared memory. A worker that does not come up disables the pool: everything then
 * runs on this thread, which is slower but gives the same numbers.
 */
function workers(): PoolWorker[] {
  if (!pool) {
    const n = Math.max(0, Math.min(3, availableParallelism() - 1));
    pool = [];
    // a signal stops the workers with the run (they are idle then: the main thread is at a cancellation point)
    onCancel(stopRowPool);
    for (let i = 0; i < n; i++) {
      const ready = new Int32Array(new SharedArrayBuffer(4));
      const worker = new Worker(new URL('./rowpool-worker.mjs', import.meta.url), { workerData: { ready } });
      worker.unref();
      const t0 = Date.now();
      while (Atomics.load(ready, 0) === 0 && Date.now() - t0 < READY_TIMEOUT_MS) Atomics.wait(ready, 0, 0, 50);
      if (Atomics.load(ready, 0) !== 1) {
        void worker.terminate();
        for (const p of pool) void p.worker.terminate();
        pool = [];
        break;
      }
      pool.push({ worker, done: new Int32Array(new SharedArrayBuffer(4)) });
    }
  }
  return pool;
}

/** Terminates the worker threads; later matvecs run on this thread. */
export function stopRowPool(): void {
  for (const p of pool ?? []) void p.worker.terminate();
  pool = [];
}

/** Worker threads the pool runs (0 on a one-core machine or if the workers could not start). */
export function poolSize(): number {
  return pool?.length ?? 0;
}

export function isShared(b: Uint8Array): boolean {
  return b.buffer instanceof SharedArrayBuffer;
}

/**
 * Compute `out[r]` for every row, splitting the rows across this thread and the pool.
 * `local(rowStart, rowEnd)` computes a range on this thread.
 */
export function parallelRows(job: RowJob, out: Float32Array, local: (r0: number, r1: number) => void): void {
  const ws = isShared(job.w) && job.w.length >= PARALLEL_MIN_BYTES ? workers() : [];
  if (ws.length === 0) {
    local(0, job.rows);
    return;
  }
  const parts = ws.length + 1;
  const shared = new Float32Array(new SharedArrayBuffer(job.rows * 4));
  const bound = (i: number) => Math.floor((job.rows * i) / parts);
  ws.forEach((pw, i) => {
    Atomics.store(pw.done, 0, 0);
    pw.worker.postMessage({ ...job, out: shared, r0: bound(i + 1), r1: bound(i + 2), done: pw.done });
  });
  local(0, bound(1));
  const t0 = Date.now();
  for (const pw of ws) {
    while (Atomics.load(pw.done, 0) === 0 && Date.now() - t0 < JOB_TIMEOUT_MS) Atomics.wait(pw.done, 0, 0, 1000);
    if (Atomics.load(pw.done, 0) !== 1) throw new Error(`matvec worker failed or timed out on a ${job.kind} ${job.rows}x${job.cols} matrix`);
  }
  out.set(shared.subarray(bound(1)), bound(1));
}
