// Worker side of reference/rowpool.ts: claims chunks of a job's rows and computes them into shared memory.
import { parentPort, workerData } from 'node:worker_threads';
import { loadAddon } from '../ascend/native.ts';
import { claimRows, warmRowKernels, type MappedRange, type RowJob, type RowOutputs } from './rowpool.ts';

interface Msg extends Omit<RowJob, 'w'> {
  /** the weight in shared memory, or undefined when `src` names it in the file mapping */
  w?: Uint8Array;
  bytes: number;
  out: RowOutputs;
  /** the job's chunk counter, shared with every thread on it */
  next: Int32Array;
  done: Int32Array;
}

const ready = (workerData as { ready: Int32Array }).ready;
const addon = loadAddon();
/** the last mapped weight (a job's weight is usually the next job's too: the two halves of one projection) */
let last: { key: string; w: Uint8Array } | undefined;

function mapped(src: MappedRange, bytes: number): Uint8Array {
  const key = `${src.mapId}:${src.offset}:${bytes}`;
  if (last?.key !== key) {
    if (!addon.ok) throw new Error('a mapped weight without the addon');
    last = { key, w: new Uint8Array(addon.addon.mapRange(src.mapId, src.offset, bytes)) };
  }
  return last.w;
}

parentPort!.on('message', (m: Msg) => {
  let status = 1;
  try {
    const w = m.w ?? mapped(m.src!, m.bytes);
    claimRows({ kind: m.kind, w, rows: m.rows, cols: m.cols, xs: m.xs }, m.out, m.next);
  } catch {
    status = -1;
  }
  Atomics.store(m.done, 0, status);
  Atomics.notify(m.done, 0);
});

// loaded, warm (see warmRowKernels) and listening: tell the parent
warmRowKernels();
Atomics.store(ready, 0, 1);
Atomics.notify(ready, 0);
