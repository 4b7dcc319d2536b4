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

let lastViewed: Uint8Array | null = null;
let lastView: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));

/**
 * A little-endian DataView of the same bytes (cached for the last buffer). The row kernels load weights
 * four int8 codes at a time through it (any alignment) and sign-extend each with two shifts: fewer
 * loads and bounds checks than one typed-array read per code, on any block layout.
 */
export function dataView(bytes: Uint8Array): DataView<ArrayBufferLike> {
  if (bytes !== lastViewed) {
    lastView = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    lastViewed = bytes;
  }
  return lastView;
}

/** How many activation codes CODES holds: a prompt's worth of the widest rows (16384) and more. */
export const CODES_CAPACITY = 1 << 21;

/**
 * The activation codes the row kernels read, as doubles, staged here by stageCodes. Their int8 × int8
 * products and 32-element block sums are exact integers in double (|sum| < 2^20), so a block dot is the
 * same integer the C int32 loop computes. One module-level array on purpose: V8 compiles loads from a
 * constant typed array without re-checking it, ~1.4× faster than reading an array passed in (each worker
 * thread has its own).
 */
export const CODES = new Float64Array(CODES_CAPACITY);
// Hot loops read these non-exported aliases: an exported binding lives in a module cell that V8 reloads,
// a plain module const it compiles in as a constant.
const XQ = CODES;
const Q8_0_BYTES = 34;

/**
 * Two activations' codes in one double: a + b·2^26. A 32-block's products of int8 weights with it sum to
 * A + B·2^26 where A and B are the two exact block dots (|A|, |B| < 2^19 < 2^25): B = round(sum / 2^26),
 * A = sum − B·2^26, both exact (|sum| < 2^46) — two dots for the price of one.
 */
const PAIR = 67108864;

/**
 * Copies activations' codes into CODES two by two (paired: a + b·2^26; an odd last one alone); returns
 * each pair's offset. What q8_0RowsPaired reads.
 */
export function stagePairedCodes(qs: readonly Int8Array[]): number[] {
  const offsets: number[] = [];
  let at = 0;
  for (let p = 0; p < qs.length; p += 2) {
    const a = qs[p], b = qs[p + 1];
    if (at + a.length > CODES_CAPACITY) throw new Error(`activation codes: ${at + a.length} do not fit the ${CODES_CAPACITY} staged at once`);
    offsets.push(at);
    for (let i = 0; i < a.length; i++) XQ[at + i] = b ? a[i] + b[i] * PAIR : a[i];
    at += a.length;
  }
  return offsets;
}

/** One row's 32-block of weight codes as doubles: read once, used for every activation of a batch. */
const W32 = new Float64Array(32);

/**
 * Rows [r0, r1) of a Q8_0 matrix dotted with several activations at once (a prompt's positions): each
 * block's weight codes are extracted once, then multiplied with the paired codes of two activations per
 * double (stagePairedCodes at `xo`); every output is the same f32 (and f64 twin) accumulation as q8_0Rows
 * gives it alone, block by block in order.
 */
export function q8_0RowsPaired(w: Uint8Array, blocks: number, xo: readonly number[], xd: readonly Float32Array[], r0: number, r1: number, out32?: Float32Array[], out64?: Float64Array[]): void {
  const dv = dataView(w);
  const xq = XQ, W = W32;
  const n = xd.length;
  const a32 = new Float64Array(n), a64 = new Float64Array(n);
  const rb = blocks * Q8_0_BYTES;
  for (let r = r0; r < r1; r++) {
    a32.fill(0);
    a64.fill(0);
    for (let b = 0, o = r * rb; b < blocks; b++, o += Q8_0_BYTES) {
      for (let j = o + 2, k = 0; k < 32; j += 4, k += 4) {
        const v = dv.getInt32(j, true);
        W[k] = (v << 24) >> 24;
        W[k + 1] = (v << 16) >> 24;
        W[k + 2] = (v << 8) >> 24;
        W[k + 3] = v >> 24;
      }
      const dw = F16[dv.getUint16(o, true)];
      for (let p = 0; p < xo.length; p++) {
        let sum = 0;
        for (let i = 0, x = xo[p] + 32 * b; i < 32; i += 4, x += 4) sum += W[i] * xq[x] + W[i + 1] * xq[x + 1] + W[i + 2] * xq[x + 2] + W[i + 3] * xq[x + 3];
        const hi = Math.round(sum / PAIR), lo = sum - hi * PAIR;
        const t = 2 * p;
        const s = dw * xd[t][b];
        a32[t] = fround(a32[t] + fround(fround(s) * lo));
        a64[t] += s * lo;
        if (t + 1 < n) {
          const s1 = dw * xd[t + 1][b];
          a32[t + 1] = fround(a32[t + 1] + fround(fround(s1) * hi));
          a64[t + 1] += s1 * hi;
        }
      }
    }
    for (let t = 0; t < n; t++) {
      if (out32) out32[t][r] = a32[t];
      if (out64) out64[t][r] = a64[t];
    }
  }
}

/** Copies the codes of activations into CODES one after another; returns each one's offset. */
export function stageCodes(qs: readonly Int8Array[]): number[] {
  const offsets: number[] = [];
  let at = 0;
  for (const q of qs) {
    if (at + q.length > CODES_CAPACITY) throw new Error(`activation codes: ${at + q.length} do not fit the ${CODES_CAPACITY} staged at once`);
    offsets.push(at);
    for (let i = 0; i < q.length; i++) XQ[at + i] = q[i];
    at += q.length;
  }
  return offsets;
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
 * Rows [r0, r1) of a Q8_0 matrix (`blocks` 32-blocks per row) dotted with one quantized activation (its
 * codes staged in CODES at xo, its scales xd), ds4
 * dot_q8_0_row's order: per block the exact int8 dot, then acc += f16(d_w)·d_x·dot in f32 into out32[r]
 * and/or the same terms combined in f64 into out64[r] (the rounding-noise twin: same codes, no float
 * rounding) — one pass over the weights for both. Four rows run side by side so that each activation code
 * is loaded once for the four (~1.4× faster than a row at a time); every row keeps its own accumulators
 * and block order, so the same bits. A last group of fewer than four rows repeats its last row.
 */
export function q8_0Rows(w: Uint8Array, blocks: number, xo: number, xd: Float32Array, r0: number, r1: number, out32?: Float32Array, out64?: Float64Array): void {
  const dv = dataView(w);
  const xq = XQ;
  const rb = blocks * Q8_0_BYTES;
  for (let i0 = r0; i0 < r1; i0 += 4) {
    const i1 = Math.min(i0 + 1, r1 - 1), i2 = Math.min(i0 + 2, r1 - 1), i3 = Math.min(i0 + 3, r1 - 1);
    // the other rows' byte offsets from the first's
    const o1 = (i1 - i0) * rb, o2 = (i2 - i0) * rb, o3 = (i3 - i0) * rb;
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, e0 = 0, e1 = 0, e2 = 0, e3 = 0;
    for (let b = 0, o = i0 * rb, xi = xo; b < blocks; b++, o += Q8_0_BYTES) {
      let d0 = 0, d1 = 0, d2 = 0, d3 = 0;
      for (let j = o + 2, end = o + Q8_0_BYTES; j < end; j += 4, xi += 4) {
        const x0 = xq[xi], x1 = xq[xi + 1], x2 = xq[xi + 2], x3 = xq[xi + 3];
        let v = dv.getInt32(j, true);
        d0 += ((v << 24) >> 24) * x0 + ((v << 16) >> 24) * x1 + ((v << 8) >> 24) * x2 + (v >> 24) * x3;
        v = dv.getInt32(j + o1, true);
        d1 += ((v << 24) >> 24) * x0 + ((v << 16) >> 24) * x1 + ((v << 8) >> 24) * x2 + (v >> 24) * x3;
        v = dv.getInt32(j + o2, true);
        d2 += ((v << 24) >> 24) * x0 + ((v << 16) >> 24) * x1 + ((v << 8) >> 24) * x2 + (v >> 24) * x3;
        v = dv.getInt32(j + o3, true);
        d3 += ((v << 24) >> 24) * x0 + ((v << 16) >> 24) * x1 + ((v << 8) >> 24) * x2 + (v >> 24) * x3;
      }
      const x = xd[b];
      const s0 = F16[dv.getUint16(o, true)] * x, s1 = F16[dv.getUint16(o + o1, true)] * x;
      const s2 = F16[dv.getUint16(o + o2, true)] * x, s3 = F16[dv.getUint16(o + o3, true)] * x;
      a0 = fround(a0 + fround(fround(s0) * d0));
      a1 = fround(a1 + fround(fround(s1) * d1));
      a2 = fround(a2 + fround(fround(s2) * d2));
      a3 = fround(a3 + fround(fround(s3) * d3));
      e0 += s0 * d0;
      e1 += s1 * d1;
      e2 += s2 * d2;
      e3 += s3 * d3;
    }
    if (out32) out32[i0] = a0, out32[i1] = a1, out32[i2] = a2, out32[i3] = a3;
    if (out64) out64[i0] = e0, out64[i1] = e1, out64[i2] = e2, out64[i3] = e3;
  }
}

/** One Q8_0 weight row (act.d.length blocks) at byte offset wOffset of w, dotted with a quantized activation. */
export function dotQ8_0(w: Uint8Array, wOffset: number, act: Q8Act, exact = false): number {
  const blocks = act.d.length;
  const out = exact ? new Float64Array(1) : new Float32Array(1);
  // a one-row matrix starting at the row: the same kernel as every matvec
  q8_0Rows(w.subarray(wOffset, wOffset + blocks * Q8_0_BLOCK_BYTES), blocks, stageCodes([act.q])[0], act.d, 0, 1,
    exact ? undefined : (out as Float32Array), exact ? (out as Float64Array) : undefined);
  return out[0];
}

/** Checks a Q8_0 matvec's shapes; returns the blocks per row. */
function q8_0Shape(w: Uint8Array, rows: number, cols: number, act: Q8Act): number {
  if (cols % 32 !== 0) throw new Error(`Q8_0 matvec: ${cols} columns is not a multiple of 32`);
  const blocks = cols / 32;
  if (act.d.length !== blocks) throw new Error(`Q8_0 matvec: activation has ${act.d.length} blocks, matrix rows have ${blocks}`);
  if (w.length < rows * blocks * Q8_0_BLOCK_BYTES) throw new Error(`Q8_0 matvec: ${w.length} bytes is less than ${rows}×${cols}`);
  return blocks;
}

/** out[r] = row r of the Q8_0 matrix w (rows × cols, row-major, cols % 32 == 0) · act, for r in [rowStart, rowEnd). */
export function matvecQ8_0Act(
  w: Uint8Array, rows: number, cols: number, act: Q8Act, out: Float32Array, rowStart = 0, rowEnd = rows,
): void {
  q8_0Rows(w, q8_0Shape(w, rows, cols, act), stageCodes([act.q])[0], act.d, rowStart, rowEnd, out);
}

/** ds4 Q8_0 projection: quantize x[0..cols) once, then int8 dots for every row (see matvecQ8_0Act). */
export function matvecQ8_0(
  w: Uint8Array, rows: number, cols: number, x: Float32Array, out: Float32Array, rowStart = 0, rowEnd = rows,
): void {
  matvecQ8_0Act(w, rows, cols, quantizeQ8_0Act(x, 0, cols), out, rowStart, rowEnd);
}

/** F16 codes as f64 (the exact values of every half), for the F16 row kernel's loads. */
const F16_F64 = Float64Array.from(F16_TABLE);

/**
 * Rows [r0, r1) of an F16 matrix (rows × cols, row-major) times x, ds4 matvec_f16 / dot_f16_row: one f32
 * accumulator per row, acc = f32(acc + f32(w·x)) in column order, into out32[r]; and/or the same products
 * summed in f64 into out64[r] (the twin). Four rows run interleaved — four independent dependency chains,
 * each in its own column order, so the same bits as one row at a time.
 */
export function f16Rows(w: Uint8Array, cols: number, x: Float64Array, r0: number, r1: number, out32?: Float32Array, out64?: Float64Array): void {
  const H = F16_F64;
  // a half-word view when aligned (the fast path); an odd byte offset needs one copy
  const halves = w.byteOffset % 2 === 0 ? new Uint16Array(w.buffer, w.byteOffset, w.byteLength >> 1) : new Uint16Array(w.slice().buffer);
  let r = r0;
  for (; r + 4 <= r1; r += 4) {
    const o0 = r * cols, o1 = o0 + cols, o2 = o1 + cols, o3 = o2 + cols;
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    for (let i = 0; i < cols; i++) {
      const xi = x[i];
      const p0 = H[halves[o0 + i]] * xi, p1 = H[halves[o1 + i]] * xi, p2 = H[halves[o2 + i]] * xi, p3 = H[halves[o3 + i]] * xi;
      a0 = fround(a0 + fround(p0));
      a1 = fround(a1 + fround(p1));
      a2 = fround(a2 + fround(p2));
      a3 = fround(a3 + fround(p3));
      b0 += p0;
      b1 += p1;
      b2 += p2;
      b3 += p3;
    }
    if (out32) out32[r] = a0, out32[r + 1] = a1, out32[r + 2] = a2, out32[r + 3] = a3;
    if (out64) out64[r] = b0, out64[r + 1] = b1, out64[r + 2] = b2, out64[r + 3] = b3;
  }
  for (; r < r1; r++) {
    let a = 0, b = 0;
    for (let i = 0, o = r * cols; i < cols; i++) {
      const p = H[halves[o + i]] * x[i];
      a = fround(a + fround(p));
      b += p;
    }
    if (out32) out32[r] = a;
    if (out64) out64[r] = b;
  }
}

/**
 * ds4 matvec_f16 / dot_f16_row: F16 weights (rows × cols, row-major), f32 activations,
 * one f32 accumulator per row in column order (the scalar path).
 */
export function matvecF16(
  w: Uint8Array, rows: number, cols: number, x: Float32Array, out: Float32Array, rowStart = 0, rowEnd = rows,
): void {
  if (w.length < rows * cols * 2) throw new Error(`F16 matvec: ${w.length} bytes is less than ${rows}×${cols}`);
  f16Rows(w, cols, Float64Array.from(x), rowStart, rowEnd, out);
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
