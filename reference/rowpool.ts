// Row-parallel products for the large projections (the 129280-row output head, attn_q_b, the routed
// experts, ...): the output rows are split into chunks that this thread and the worker threads claim in
// turn (a thread slowed by the machine's other load takes fewer); every output element is still reduced
// by exactly one thread with the same code, so results are bit-identical to the single-thread path (ds4
// splits its threaded matvecs by output rows the same way). A worker reaches the
// weight through the model file's mapping (the addon maps it in every thread: no copy) or, without the
// addon, through the shared memory ModelWeights read it into; anything else runs on this thread.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { onCancel } from '../diff/cancel.ts';
import {
  CODES_CAPACITY, f16Rows, iq2xxsRows, q2kRows, q8_0Rows, q8_0RowsPaired, quantizeQ8_0Act, quantizeQ8_K, stageCodes, stagePairedCodes, type Q8Act, type Q8KAct,
} from '../model/quant/index.ts';

/**
 * Products of at least this many multiply-adds are split across threads. Counted in multiply-adds, not
 * weight bytes (an F16 byte is half a multiply-add, an IQ2_XXS byte four): a worker compiles each kernel it
 * runs for itself (tens of ms), which a product smaller than this does not pay back.
 */
export const PARALLEL_MIN_MACS = 1 << 22;

export type RowKernel = 'q8_0' | 'f16' | 'iq2_xxs' | 'q2_k';

/** Where a worker finds a weight's bytes: `mapId` (model/gguf.ts GgufModel.mapId) at an absolute file offset. */
export interface MappedRange {
  mapId: number;
  offset: number;
}

/** One activation as its kernel takes it: Q8_0 codes, Q8_K codes, or f16 rows' f64 input. */
export type RowInput = Q8Act | Q8KAct | Float64Array;

export interface RowJob {
  kind: RowKernel;
  /** the weight's bytes on this thread */
  w: Uint8Array;
  /** where a worker finds them when they are mapped (else `w` must be in shared memory to be split) */
  src?: MappedRange;
  rows: number;
  cols: number;
  /** one input per product */
  xs: RowInput[];
}

/** What a product delivers per input: the f32 result (ds4's arithmetic) and/or the f64 twin's combination. */
export interface RowOutputs {
  f32?: Float32Array[];
  f64?: Float64Array[];
}

/** Chunks a job's rows are claimed in: enough that the threads finish together, few enough to cost nothing. */
const CHUNKS = 64;

/**
 * Claims chunks of the job's rows from the shared counter until none is left, computing each: what this
 * thread and every worker run for a job. The inputs' codes are staged once, then every claimed chunk is
 * computed by the kernel of model/quant for the weight's type; a Q8_0 weight with several inputs (a
 * prompt's positions) takes them two per double (q8_0RowsPaired).
 */
export function claimRows(job: Omit<RowJob, 'src'>, out: RowOutputs, next: Int32Array): void {
  const { kind, w, cols, xs } = job;
  const size = Math.ceil(job.rows / CHUNKS);
  let rows: (r0: number, r1: number) => void;
  if (kind === 'f16') {
    rows = (r0, r1) => xs.forEach((x, t) => f16Rows(w, cols, x as Float64Array, r0, r1, out.f32?.[t], out.f64?.[t]));
  } else if (kind === 'q8_0' && xs.length > 1) {
    const acts = xs as Q8Act[];
    const at = stagePairedCodes(acts.map((x) => x.q));
    rows = (r0, r1) => q8_0RowsPaired(w, cols / 32, at, acts.map((x) => x.d), r0, r1, out.f32, out.f64);
  } else {
    const acts = xs as Array<Q8Act | Q8KAct>;
    const at = stageCodes(acts.map((x) => x.q));
    rows = (r0, r1) => acts.forEach((x, t) => {
      const o32 = out.f32?.[t], o64 = out.f64?.[t];
      if (kind === 'q8_0') q8_0Rows(w, cols / 32, at[t], x.d, r0, r1, o32, o64);
      else if (kind === 'iq2_xxs') iq2xxsRows(w, x.d, at[t], r0, r1, o32, o64);
      else q2kRows(w, x.d, (x as Q8KAct).bsums, at[t], r0, r1, o32, o64);
    });
  }
  for (let c = Atomics.add(next, 0, 1); c * size < job.rows; c = Atomics.add(next, 0, 1)) rows(c * size, Math.min(job.rows, (c + 1) * size));
}

/** Calls of each kernel warmRowKernels makes: enough for V8 to mark it for optimization. */
const WARM_CALLS = 32;

/**
 * V8 runs a kernel interpreted (~100× slower) until it has run enough to be optimized, then compiles it
 * for tens of ms: left to the first products, that cost ~150 ms of a one-token run on each thread, and a
 * worker still cold held a product up on its slow chunk. So each thread first runs every single-input row
 * kernel on a small made-up product, in short calls: V8 compiles them on its background threads while
 * this thread goes on (the model opening), and a worker says it is ready only after. The calls take every
 * path real products take — two weights in turn (a new weight's views), groups of four rows and a short
 * one, the f64 twin or not — so that no real product throws the optimized code away. The paired Q8_0
 * kernel (a prompt's positions) warms on its own products, long enough to pay for it.
 */
export function warmRowKernels(): void {
  const rows = 5, cols = 256;
  // any bytes are some weights; enough for the widest format (F16, 2 per weight)
  const ws = [0, 1].map((k) => Uint8Array.from({ length: rows * cols * 2 }, (_, i) => (i * 37 + k) & 255));
  const x = Float32Array.from({ length: cols }, (_, i) => Math.sin(i));
  const q8 = quantizeQ8_0Act(x), qk = quantizeQ8_K(x), xf = Float64Array.from(x);
  const o32 = new Float32Array(rows), o64 = new Float64Array(rows);
  for (let c = 0; c < WARM_CALLS; c++) {
    const w = ws[c & 1], twin = c % 3 === 0 ? o64 : undefined;
    const [x8, xk] = stageCodes([q8.q, qk.q]);
    q8_0Rows(w, cols / 32, x8, q8.d, 0, rows, o32, twin);
    iq2xxsRows(w, qk.d, xk, 0, rows, o32, twin);
    q2kRows(w, qk.d, qk.bsums, xk, 0, rows, o32, twin);
    f16Rows(w, cols, xf, 0, rows, o32, twin);
  }
}

/** How many inputs of `cols` codes one job stages at once (CODES' capacity; paired Q8_0 codes take half). */
export function inputsPerJob(kind: RowKernel, cols: number): number {
  return Math.max(1, Math.floor(CODES_CAPACITY / cols) * (kind === 'q8_0' ? 2 : 1));
}

interface PoolWorker {
  worker: Worker;
  ready: Int32Array;
  done: Int32Array;
}

let pool: PoolWorker[] | undefined;
const JOB_TIMEOUT_MS = 120_000;

/**
 * The compiled worker beside a compiled module; from the TypeScript sources (tests, benchmarks), the
 * shim that loads them through tsx.
 */
const WORKER_FILE = import.meta.url.endsWith('.js') ? './rowpool-worker.js' : './rowpool-worker.mjs';

/**
 * Start the worker threads without waiting for them (a command calls it before it opens the model, so
 * they load while the model is read), and warm this thread's kernels; products use the workers that are up.
 */
export function startRowPool(): void {
  if (pool) return;
  const n = Math.max(0, Math.min(3, availableParallelism() - 1));
  pool = [];
  // a signal stops the workers with the run (they are idle then: the main thread is at a cancellation point)
  onCancel(stopRowPool);
  for (let i = 0; i < n; i++) {
    const ready = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(new URL(WORKER_FILE, import.meta.url), { workerData: { ready } });
    worker.unref();
    pool.push({ worker, ready, done: new Int32Array(new SharedArrayBuffer(4)) });
  }
  // the workers warm up as they start; this thread too
  warmRowKernels();
}

/**
 * The workers that are up (each says so through shared memory once its kernels are warm). A product does
 * not wait for the others: this thread claims their chunks too, so a worker slow to start (a loaded
 * machine) or one that never comes up costs no time, and the numbers are the same either way.
 */
function readyWorkers(): PoolWorker[] {
  startRowPool();
  return pool!.filter((p) => Atomics.load(p.ready, 0) === 1);
}

/** Blocks until every worker is up or `timeoutMs` has passed; how many are up (the tests' way to be sure a product is split). */
export function awaitRowPool(timeoutMs: number): number {
  startRowPool();
  const t0 = Date.now();
  for (const p of pool!) while (Atomics.load(p.ready, 0) === 0 && Date.now() - t0 < timeoutMs) Atomics.wait(p.ready, 0, 0, 50);
  return readyWorkers().length;
}

/** Terminates the worker threads; later products run on this thread. */
export function stopRowPool(): void {
  for (const p of pool ?? []) void p.worker.terminate();
  pool = [];
}

export function isShared(b: Uint8Array): boolean {
  return b.buffer instanceof SharedArrayBuffer;
}

const sharedF32 = (n: number) => new Float32Array(new SharedArrayBuffer(4 * n));
const sharedF64 = (n: number) => new Float64Array(new SharedArrayBuffer(8 * n));

/**
 * Every product of the job (f32 results when `f32`, the twin's f64 combinations when `f64`), the rows split
 * across this thread and the pool when the weight is large and a worker can reach it.
 */
export function parallelRows(job: RowJob, want: { f32: boolean; f64: boolean }): RowOutputs {
  const reachable = job.src !== undefined || isShared(job.w);
  const ws = reachable && job.rows * job.cols * job.xs.length >= PARALLEL_MIN_MACS ? readyWorkers() : [];
  const n = job.xs.length;
  const out: RowOutputs = {
    f32: want.f32 ? Array.from({ length: n }, () => (ws.length ? sharedF32(job.rows) : new Float32Array(job.rows))) : undefined,
    f64: want.f64 ? Array.from({ length: n }, () => (ws.length ? sharedF64(job.rows) : new Float64Array(job.rows))) : undefined,
  };
  const per = job.kind === 'f16' ? n : inputsPerJob(job.kind, job.cols);
  for (let t0 = 0; t0 < n; t0 += per) {
    const part = { ...job, xs: job.xs.slice(t0, t0 + per) };
    const partOut = { f32: out.f32?.slice(t0, t0 + per), f64: out.f64?.slice(t0, t0 + per) };
    const next = new Int32Array(new SharedArrayBuffer(4));
    for (const pw of ws) {
      Atomics.store(pw.done, 0, 0);
      const w = part.src ? undefined : part.w;
      pw.worker.postMessage({ kind: part.kind, w, src: part.src, bytes: part.w.length, rows: part.rows, cols: part.cols, xs: part.xs, out: partOut, next, done: pw.done });
    }
    claimRows(part, partOut, next);
    const start = Date.now();
    for (const pw of ws) {
      while (Atomics.load(pw.done, 0) === 0 && Date.now() - start < JOB_TIMEOUT_MS) Atomics.wait(pw.done, 0, 0, 1000);
      if (Atomics.load(pw.done, 0) !== 1) throw new Error(`product worker failed or timed out on a ${job.kind} ${job.rows}x${job.cols} matrix`);
    }
  }
  return out;
}
