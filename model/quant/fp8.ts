// Low-precision simulations DS4 applies to activations (catalog §3): E4M3FN round trip for the
// non-RoPE part of KV rows (ds4.c dsv4_fp8_kv_quantize_row_inplace_cpu l.1635), E2M1 (FP4) round
// trip for indexer activations (dsv4_fp4_act_quantize_row_inplace_cpu l.1691) and the 128-wide
// Hadamard rotation that precedes it (l.1677). Values are f32 as in the C; each op is rounded to f32.

import { noteTie, type RoundingMargins } from './margins.ts';

const fround = Math.fround;

/** Non-negative E4M3FN code values 0..126 (127 is NaN): exp 0 → mant·2^-9, else (1+mant/8)·2^(exp−7). */
const E4M3_VALUES: Float64Array = (() => {
  const t = new Float64Array(127);
  for (let code = 0; code < 127; code++) {
    const exp = code >> 3;
    const mant = code & 7;
    t[code] = exp === 0 ? mant * 2 ** -9 : (1 + mant / 8) * 2 ** (exp - 7);
  }
  return t;
})();

/** E2M1 values by code 0..7. */
const E2M1_VALUES = [0, 0.5, 1, 1.5, 2, 3, 4, 6];

/** The largest index of an ascending table whose value is ≤ a (0 when none is). */
function floorIndex(values: ArrayLike<number>, a: number): number {
  let lo = 0;
  let hi = values.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (values[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Nearest entry of an ascending table to a ≥ 0 (a within the table's range); on a tie the even
 * index wins (ds4's rule: between codes i and i+1, move up only if i+1 is even).
 */
function nearestEvenTie(values: ArrayLike<number>, a: number): number {
  const lo = floorIndex(values, a);
  if (lo + 1 < values.length) {
    const below = a - values[lo];
    const above = values[lo + 1] - a;
    if (above < below || (above === below && (lo & 1) === 1)) return values[lo + 1];
  }
  return values[lo];
}

/**
 * The rounding decision of a ≥ 0 on an ascending table: its distance to the nearest decision boundary (the
 * midpoint between the two table values around a) and the gap between those two values. Saturated values
 * (a at or past the top) only have the boundary below.
 */
function gridMargin(values: ArrayLike<number>, a: number): [tie: number, step: number] {
  const lo = floorIndex(values, a);
  if (lo + 1 >= values.length) {
    const step = values[lo] - values[lo - 1];
    return [a - (values[lo] - step / 2), step];
  }
  const step = values[lo + 1] - values[lo];
  return [Math.abs(a - (values[lo] + step / 2)), step];
}

/** E4M3FN round trip of one f32 value: |x| saturates at 448, nearest code, ties to the even code. */
export function e4m3fnRound(x: number): number {
  const v = fround(x);
  const r = nearestEvenTie(E4M3_VALUES, Math.min(Math.abs(v), 448));
  return v < 0 ? -r : r;
}

/** E2M1 (FP4) round trip: values {0, .5, 1, 1.5, 2, 3, 4, 6}, |x| saturates at 6, ties to the even code. */
export function e2m1Round(x: number): number {
  const v = fround(x);
  const r = nearestEvenTie(E2M1_VALUES, Math.min(Math.abs(v), 6));
  return v < 0 ? -r : r;
}

/**
 * One block of the power-of-two-scaled round trip shared by FP8 KV and FP4 activations:
 * amax floored at `floor`, scale = 2^ceil(log2(amax/top)) (log2 taken in f32 as log2f does),
 * x ← round(clamp(x/scale, ±top))·scale. With `margins` (indexed from x[0]), each element's rounding
 * decision is noted in output units, and so is the block's: amax that far from a power-of-two boundary of
 * amax/top changes the scale, and with it every code of the block by up to a code step at the larger scale.
 */
function scaledBlockRoundTrip(
  x: Float32Array | Float64Array, off: number, n: number, floor: number, top: number, values: ArrayLike<number>,
  round: (v: number) => number, margins?: RoundingMargins,
): void {
  let amax = 0;
  for (let i = off; i < off + n; i++) amax = Math.max(amax, Math.abs(fround(x[i])));
  const floored = amax < floor;
  if (floored) amax = floor;
  const scale = 2 ** Math.ceil(fround(Math.log2(fround(amax / top))));
  const blockTie = floored ? Infinity : Math.min(amax - (top * scale) / 2, top * scale - amax);
  for (let i = off; i < off + n; i++) {
    const v = Math.min(top, Math.max(-top, fround(fround(x[i]) / scale)));
    if (margins) {
      const [tie, step] = gridMargin(values, Math.abs(v));
      noteTie(margins, i, tie * scale, step * scale);
      noteTie(margins, i, blockTie, 2 * step * scale);
    }
    x[i] = fround(round(v) * scale);
  }
}

/** FP8 KV simulation on the row at x[off..]: blocks of 64 over the first nNope dims; the RoPE tail is untouched. */
export function fp8KvQuantizeInplace(x: Float32Array | Float64Array, off: number, nNope: number, margins?: RoundingMargins): void {
  if (nNope % 64 !== 0) throw new Error(`FP8 KV quantization: ${nNope} non-RoPE dims is not a multiple of 64`);
  for (let b = off; b < off + nNope; b += 64) scaledBlockRoundTrip(x, b, 64, fround(1e-4), 448, E4M3_VALUES, e4m3fnRound, margins);
}

/** FP4 activation simulation on x[off..off+n): blocks of 32, amax floored at 7.052966e-38 (6·FLT_MIN). */
export function fp4ActQuantizeInplace(x: Float32Array | Float64Array, off: number, n: number, margins?: RoundingMargins): void {
  if (n % 32 !== 0) throw new Error(`FP4 activation quantization: ${n} is not a multiple of 32`);
  for (let b = off; b < off + n; b += 32) scaledBlockRoundTrip(x, b, 32, fround(7.052966104933725e-38), 6, E2M1_VALUES, e2m1Round, margins);
}

const HADAMARD_128_SCALE = fround(0.08838834764831845); // 1/sqrt(128) as the f32 constant ds4 uses

/** Orthonormal 128-point Walsh–Hadamard transform of x[off..off+128) in place (butterflies at strides 1..64). */
export function hadamard128Inplace(x: Float32Array | Float64Array, off: number): void {
  for (let stride = 1; stride < 128; stride *= 2) {
    for (let base = off; base < off + 128; base += 2 * stride) {
      for (let i = base; i < base + stride; i++) {
        const a = x[i];
        const b = x[i + stride];
        x[i] = fround(a + b);
        x[i + stride] = fround(a - b);
      }
    }
  }
  for (let i = off; i < off + 128; i++) x[i] = fround(x[i] * HADAMARD_128_SCALE);
}
