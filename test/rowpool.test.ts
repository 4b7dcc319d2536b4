// Row-parallel matvec must give exactly the single-thread numbers (each row reduced by one thread).
import { describe, expect, it } from 'vitest';
import { quantizeQ8_0Weights, encodeF16, matvecQ8_0, matvecF16 } from '../model/quant/index.ts';
import { GGMLType } from '../model/quant/types.ts';
import { matvec } from '../reference/matvec.ts';
import { availableParallelism } from 'node:os';
import { PARALLEL_MIN_MACS, awaitRowPool, isShared } from '../reference/rowpool.ts';

function sharedCopy(b: Uint8Array): Uint8Array {
  const s = new Uint8Array(new SharedArrayBuffer(b.length));
  s.set(b);
  return s;
}

describe('row-parallel matvec', () => {
  it('Q8_0 and F16 over shared weights match the single-thread kernels bit for bit', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    const cols = 1024;
    const rows = Math.ceil(PARALLEL_MIN_MACS / cols) + 13; // odd count: uneven split
    // a product does not wait for the workers: wait here, so that this one is split
    const up = awaitRowPool(20_000);
    const vals = Float32Array.from({ length: rows * cols }, rnd);
    const x = Float32Array.from({ length: cols }, rnd);
    for (const [type, bytes, single] of [
      [GGMLType.Q8_0, quantizeQ8_0Weights(vals), matvecQ8_0],
      [GGMLType.F16, encodeF16(vals), matvecF16],
    ] as const) {
      const w = sharedCopy(bytes);
      expect(isShared(w)).toBe(true);
      const par = matvec({ name: 't', type, rows, cols, data: w }, x, 'ds4') as Float32Array;
      const ref = new Float32Array(rows);
      single(bytes, rows, cols, x, ref);
      expect(Buffer.from(par.buffer).equals(Buffer.from(ref.buffer))).toBe(true);
    }
    // the rows really were split across threads
    if (availableParallelism() > 1) expect(up).toBeGreaterThan(0);
  });
});
