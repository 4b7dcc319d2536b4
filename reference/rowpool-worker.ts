// Worker side of reference/rowpool.ts: computes a row range of a matvec into shared memory.
import { parentPort, workerData } from 'node:worker_threads';
import { matvecF16, matvecQ8_0Act, type Q8Act } from '../model/quant/index.ts';

interface Msg {
  kind: 'q8_0' | 'f16';
  w: Uint8Array;
  rows: number;
  cols: number;
  x?: Float32Array;
  act?: Q8Act;
  out: Float32Array;
  r0: number;
  r1: number;
  done: Int32Array;
}

const ready = (workerData as { ready: Int32Array }).ready;

parentPort!.on('message', (m: Msg) => {
  let status = 1;
  try {
    if (m.kind === 'q8_0') matvecQ8_0Act(m.w, m.rows, m.cols, m.act!, m.out, m.r0, m.r1);
    else matvecF16(m.w, m.rows, m.cols, m.x!, m.out, m.r0, m.r1);
  } catch {
    status = -1;
  }
  Atomics.store(m.done, 0, status);
  Atomics.notify(m.done, 0);
});

// loaded and listening: tell the (blocked) parent
Atomics.store(ready, 0, 1);
Atomics.notify(ready, 0);
