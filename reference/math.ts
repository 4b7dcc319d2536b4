// Scalar and vector primitives of ds4.c's CPU path (catalog §3), in both precisions.
// 'ds4' mimics the C float arithmetic by rounding every float result with Math.fround (the C code
// is scalar-float; exp/log/sin/cos are computed in double and rounded once, which equals the
// correctly-rounded float function glibc's expf/logf/sinf/cosf return in practice).
// 'f64' runs the same formulas in double with no rounding.
import type { Precision, Vec } from './types.ts';
import { allocVec } from './types.ts';

/** ds4.c `DS4_NEG_INF`: the "empty" score of compressor state rows and masked attention rows. */
export const NEG_INF = -1.0e30;

const identity = (x: number): number => x;

/** The rounding applied after every arithmetic result: float (`ds4`) or none (`f64`). */
export function rounder(p: Precision): (x: number) => number {
  return p === 'ds4' ? Math.fround : identity;
}

/** expf / exp */
export function expP(x: number, p: Precision): number {
  return p === 'ds4' ? Math.fround(Math.exp(x)) : Math.exp(x);
}

/** ds4.c `sigmoid_stable`: branch on the sign so exp never overflows. */
export function sigmoid(x: number, p: Precision = 'ds4'): number {
  const r = rounder(p);
  if (x >= 0) {
    const e = expP(-x, p);
    return r(1 / r(1 + e));
  }
  const e = expP(x, p);
  return r(e / r(1 + e));
}

/** ds4.c `silu`: x * sigmoid_stable(x). */
export function silu(x: number, p: Precision = 'ds4'): number {
  return rounder(p)(x * sigmoid(x, p));
}

/** ds4.c `softplus_stable`: x above 20, exp(x) below -20, else log1p(exp(x)). */
export function softplus(x: number, p: Precision = 'ds4'): number {
  if (x > 20) return x;
  if (x < -20) return expP(x, p);
  return rounder(p)(Math.log1p(expP(x, p)));
}

/** Sequential dot product like ds4.c `dot_f32` (scalar path): float accumulator, one add per element. */
export function dot(a: Vec, aOff: number, b: Vec, bOff: number, n: number, p: Precision): number {
  let acc = 0;
  if (p === 'ds4') {
    const f = Math.fround;
    for (let i = 0; i < n; i++) acc = f(acc + f(a[aOff + i] * b[bOff + i]));
  } else {
    for (let i = 0; i < n; i++) acc += a[aOff + i] * b[bOff + i];
  }
  return acc;
}

/**
 * RMS scale of x[off .. off+n): ds4.c accumulates the sum of squares in double, then computes
 * `1 / sqrtf((float)(ss / n) + eps)` in float (rms_norm_weight / rms_norm_no_weight / head_rms_norm_inplace).
 */
export function rmsScale(x: Vec, off: number, n: number, eps: number, p: Precision): number {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[off + i] * x[off + i];
  if (p === 'f64') return 1 / Math.sqrt(ss / n + eps);
  const f = Math.fround;
  return f(1 / f(Math.sqrt(f(f(ss / n) + f(eps)))));
}

/** y = x * scale * w (w = null: no learned weight), catalog §3 RMSNorm. */
export function rmsNorm(x: Vec, w: Float32Array | null, eps: number, p: Precision, out?: Vec): Vec {
  const n = x.length;
  const y = out ?? allocVec(p, n);
  const s = rmsScale(x, 0, n, eps, p);
  const r = rounder(p);
  for (let i = 0; i < n; i++) y[i] = w ? r(r(x[i] * s) * w[i]) : r(x[i] * s);
  return y;
}

/** ds4.c `head_rms_norm_inplace`: each `headDim` slice normalized on its own, no weight (S3). */
export function headRmsNormInplace(x: Vec, nHead: number, headDim: number, eps: number, p: Precision): void {
  const r = rounder(p);
  for (let h = 0; h < nHead; h++) {
    const off = h * headDim;
    const s = rmsScale(x, off, headDim, eps, p);
    for (let i = 0; i < headDim; i++) x[off + i] = r(x[off + i] * s);
  }
}
