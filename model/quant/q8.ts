// Activation quantizers and the int8 dot products built on them (catalog §3 "Q8_0 matvec", "Q8_K").
// DS4's CPU path never multiplies a Q8_0 weight by a float: the activation is quantized to int8
// per 32-block first (ds4.c quantize_q8_0_activation), each block is an int32 dot, and the f32
// accumulator adds f16(d_w)·d_x·dot (dot_q8_0_row). All arithmetic below is rounded to f32 at the
// same points as the C scalar path so that the reference reproduces it, not just approximates it.

import { F16_TABLE } from './f16.ts';
import { QK_K } from './types.ts';

const fround = Math.fround;
// Module-local alias: reading an imported binding in a hot loop is measurably slower than a local const.
const F16 = F16_TABLE;

/** Q8_0 block: f16 d (2 bytes) then 32 int8 q; value = d·q. */
export const Q8_0_BLOCK_BYTES = 34;

// 1.5·2^52: adding and subtracting it rounds a double to an integer with the FPU's
// round-to-nearest-even, i.e. lrintf in the default rounding mode (exact for |v| < 2^51).
const RNE_MAGIC = 6755399441055744;

/** lrintf: round to nearest integer, ties to even. */
export function roundHalfEven(v: number): number {
  return v + RNE_MAGIC - RNE_MAGIC;
}

let lastBytes: Uint8Array | null = null;
let lastInt8: Int8Array = new Int8Array(0);

/** Signed view of the same bytes (cached for the last buffer, so a dot product does not allocate). */
export function int8View(bytes: Uint8Array): Int8Array {
  if (bytes !== lastBytes) {
    lastInt8 = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    lastBytes = bytes;
  }
  return lastInt8;
}

/** An activation quantized per 32-block: q has ceil(n/32)·32 entries (zero padded), d one f32 scale per block. */
export interface Q8Act {
  q: Int8Array;
  d: Float32Array;
}

/**
 * ds4 quantize_q8_0_activation: per 32-block d = amax/127 (kept in f32, not f16),
 * q = clamp(lrintf(x · (1/d)), -128, 127). ds4 multiplies by the reciprocal, so we do too.
 */
export function quantizeQ8_0Act(x: Float32Array | Float64Array, off = 0, n = x.length - off): Q8Act {
  const blocks = Math.ceil(n / 32);
  const q = new Int8Array(blocks * 32);
  const d = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const i0 = off + b * 32;
    const bn = Math.min(32, n - b * 32);
    let amax = 0;
    for (let i = 0; i < bn; i++) amax = Math.max(amax, Math.abs(fround(x[i0 + i])));
    const db = fround(amax / 127);
    const id = db !== 0 ? fround(1 / db) : 0;
    d[b] = db;
    for (let i = 0; i < bn; i++) {
      const v = roundHalfEven(fround(fround(x[i0 + i]) * id));
      q[b * 32 + i] = v > 127 ? 127 : v < -128 ? -128 : v;
    }
  }
  return { q, d };
}

/**
 * Dot of `blocks` Q8_0 weight blocks starting at byte o with the activation blocks (ds4 dot_q8_0_row,
 * scalar order). The int8 block dots are exact integers; `exact` combines them in f64 instead of ds4's
 * f32 (the reference's rounding-noise twin keeps the quantization and drops only the float rounding).
 */
function dotQ8_0Blocks(u8: Uint8Array, i8: Int8Array, o: number, xq: Int8Array, xd: Float32Array, blocks: number, exact: boolean): number {
  let acc = 0;
  for (let b = 0, xi = 0; b < blocks; b++, o += Q8_0_BLOCK_BYTES) {
    const dw = F16[u8[o] | (u8[o + 1] << 8)];
    let dot = 0;
    for (let j = o + 2, end = o + 34; j < end; j += 4, xi += 4) {
      dot += i8[j] * xq[xi] + i8[j + 1] * xq[xi + 1] + i8[j + 2] * xq[xi + 2] + i8[j + 3] * xq[xi + 3];
    }
    acc = exact ? acc + dw * xd[b] * dot : fround(acc + fround(fround(dw * xd[b]) * dot));
  }
  return acc;
}

/** One Q8_0 weight row (act.d.length blocks) at byte offset wOffset of w, dotted with a quantized activation. */
export function dotQ8_0(w: Uint8Array, wOffset: number, act: Q8Act, exact = false): number {
  return dotQ8_0Blocks(w, int8View(w), wOffset, act.q, act.d, act.d.length, exact);
}

/** out[r] = row r of the Q8_0 matrix w (rows × cols, row-major, cols % 32 == 0) · act, for r in [rowStart, rowEnd). */
export function matvecQ8_0Act(
  w: Uint8Array, rows: number, cols: number, act: Q8Act, out: Float32Array, rowStart = 0, rowEnd = rows,
): void {
  if (cols % 32 !== 0) throw new Error(`Q8_0 matvec: ${cols} columns is not a multiple of 32`);
  const blocks = cols / 32;
  if (act.d.length !== blocks) throw new Error(`Q8_0 matvec: activation has ${act.d.length} blocks, matrix rows have ${blocks}`);
  const rb = blocks * Q8_0_BLOCK_BYTES;
  if (w.length < rows * rb) throw new Error(`Q8_0 matvec: ${w.length} bytes is less than ${rows}×${cols}`);
  const i8 = int8View(w);
  for (let r = rowStart; r < rowEnd; r++) out[r] = dotQ8_0Blocks(w, i8, r * rb, act.q, act.d, blocks, false);
}

/** ds4 Q8_0 projection: quantize x[0..cols) once, then int8 dots for every row (see matvecQ8_0Act). */
export function matvecQ8_0(
  w: Uint8Array, rows: number, cols: number, x: Float32Array, out: Float32Array, rowStart = 0, rowEnd = rows,
): void {
  matvecQ8_0Act(w, rows, cols, quantizeQ8_0Act(x, 0, cols), out, rowStart, rowEnd);
}

/**
 * ds4 matvec_f16 / dot_f16_row: F16 weights (rows × cols, row-major), f32 activations,
 * one f32 accumulator per row in column order (the scalar path).
 */
export function matvecF16(
  w: Uint8Array, rows: number, cols: number, x: Float32Array, out: Float32Array, rowStart = 0, rowEnd = rows,
): void {
  if (w.length < rows * cols * 2) throw new Error(`F16 matvec: ${w.length} bytes is less than ${rows}×${cols}`);
  // A half-word view when aligned (the fast path); an odd byte offset needs one copy.
  const halves = w.byteOffset % 2 === 0
    ? new Uint16Array(w.buffer, w.byteOffset, rows * cols)
    : new Uint16Array(w.slice(0, rows * cols * 2).buffer);
  for (let r = rowStart; r < rowEnd; r++) out[r] = dotF16Row(halves, r * cols, x, cols);
}

function dotF16Row(halves: Uint16Array, o: number, x: Float32Array, cols: number): number {
  let acc = 0;
  for (let i = 0; i < cols; i++) acc = fround(acc + fround(F16[halves[o + i]] * x[i]));
  return acc;
}

/** An activation quantized per 256-block for K-quant expert dots: d per block, q, and 16-element sums of q. */
export interface Q8KAct {
  d: Float32Array;
  q: Int8Array;
  bsums: Int16Array;
}

/**
 * ds4_quantize_row_q8_K: per 256-block take the element of largest |x| with its sign (`max`),
 * iscale = -127/max, q = clamp(lrintf(iscale·x), -128, 127), bsums = sums of 16 q's, d = 1/iscale.
 * (The negative iscale is ggml's convention; d·q still reconstructs x.) An all-zero block gives d = 0.
 */
export function quantizeQ8_K(x: Float32Array | Float64Array, off = 0, n = x.length - off): Q8KAct {
  if (n % QK_K !== 0) throw new Error(`Q8_K quantization: length ${n} is not a multiple of ${QK_K}`);
  const blocks = n / QK_K;
  const d = new Float32Array(blocks);
  const q = new Int8Array(n);
  const bsums = new Int16Array(n / 16);
  for (let b = 0; b < blocks; b++) {
    const i0 = off + b * QK_K;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK_K; j++) {
      const v = fround(x[i0 + j]);
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    if (amax === 0) continue; // d, q and bsums stay zero
    const iscale = fround(-127 / max);
    for (let j = 0; j < QK_K; j++) {
      const v = roundHalfEven(fround(iscale * fround(x[i0 + j])));
      q[b * QK_K + j] = v > 127 ? 127 : v < -128 ? -128 : v;
    }
    for (let g = b * 16; g < b * 16 + 16; g++) {
      let s = 0;
      for (let i = g * 16; i < g * 16 + 16; i++) s += q[i];
      bsums[g] = s;
    }
    d[b] = fround(1 / iscale);
  }
  return { d, q, bsums };
}
