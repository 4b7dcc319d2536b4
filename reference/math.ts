// Scalar and vector primitives of ds4.c's CPU path (catalog §3), in every precision.
// 'ds4' mimics the C float arithmetic by rounding every float result with Math.fround (the C code
// is scalar-float; exp/log/sin/cos are computed in double and rounded once, which equals the
// correctly-rounded float function glibc's expf/logf/sinf/cosf return in practice).
// 'f64' runs the same formulas in double with no rounding.
// 'ascend' is 'ds4' with the ds4-ascend vector kernels' own exp, rsqrt, sqrt and log (they avoid libm;
// catalog §10, ds4_ascend_kernels.cpp), each written here from its documented formula.
import type { Precision, Vec } from './types.ts';
import { allocVec } from './types.ts';

/** ds4.c `DS4_NEG_INF`: the "empty" score of compressor state rows and masked attention rows. */
export const NEG_INF = -1.0e30;

const identity = (x: number): number => x;

/** The rounding applied after every arithmetic result: float (`ds4`, `ascend`) or none (`f64`). */
export function rounder(p: Precision): (x: number) => number {
  return p === 'f64' ? identity : Math.fround;
}

/** expf / exp / the Ascend kernels' exp */
export function expP(x: number, p: Precision): number {
  if (p === 'ascend') return ascendExp(x);
  return p === 'ds4' ? Math.fround(Math.exp(x)) : Math.exp(x);
}

/**
 * The Ascend kernels' exp: (1 + x/2048)^2048 by 11 squarings in float, x clamped to 20 above and exactly 0
 * below -20 (relative error ≈ x²/4096, always an underestimate).
 */
export function ascendExp(x: number): number {
  if (x < -20) return 0;
  const f = Math.fround;
  let y = f(1 + f(Math.min(x, 20) * f(1 / 2048)));
  for (let k = 0; k < 11; k++) y = f(y * y);
  return y;
}

const bits = new DataView(new ArrayBuffer(4));

/** The Ascend kernels' 1/sqrt(x): the 0x5f3759df seed, then 3 Newton steps y·(1.5 − x/2·y²) in float. */
export function ascendRsqrt(x: number): number {
  const f = Math.fround;
  bits.setFloat32(0, x);
  bits.setUint32(0, (0x5f3759df - (bits.getUint32(0) >>> 1)) >>> 0);
  let y = bits.getFloat32(0);
  const half = f(0.5 * x);
  for (let k = 0; k < 3; k++) y = f(y * f(1.5 - f(f(half * y) * y)));
  return y;
}

/** The Ascend kernels' sqrt: x·rsqrt(x), 0 for x ≤ 0. */
export function ascendSqrt(x: number): number {
  return x > 0 ? Math.fround(x * ascendRsqrt(x)) : 0;
}

/**
 * The Ascend kernels' ln: x = m·2^e (m in [1, 2)), ln x = e·ln 2 + 2·atanh(z) with z = (m−1)/(m+1) and
 * atanh by z + z³/3 + … + z¹¹/11 in float; −FLT_MAX for x ≤ 0.
 */
export function ascendLog(x: number): number {
  const f = Math.fround;
  if (x <= 0) return -3.4028234663852886e38;
  bits.setFloat32(0, x);
  const u = bits.getUint32(0);
  const e = ((u >>> 23) & 0xff) - 127;
  bits.setUint32(0, ((u & 0x007fffff) | 0x3f800000) >>> 0);
  const m = bits.getFloat32(0);
  const z = f(f(m - 1) / f(m + 1)), z2 = f(z * z);
  let term = z, sum = z;
  for (const k of [3, 5, 7, 9, 11]) {
    term = f(term * z2);
    sum = f(sum + f(term * f(1 / k)));
  }
  return f(f(f(0.6931471805599453) * e) + f(2 * sum));
}

/** sqrtf / sqrt / the Ascend kernels' sqrt. */
export function sqrtP(x: number, p: Precision): number {
  if (p === 'ascend') return ascendSqrt(x);
  return rounder(p)(Math.sqrt(x));
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
  if (p === 'ascend') return ascendLog(Math.fround(1 + expP(x, p)));
  return rounder(p)(Math.log1p(expP(x, p)));
}

/** Sequential dot product like ds4.c `dot_f32` (scalar path): float accumulator, one add per element. */
export function dot(a: Vec, aOff: number, b: Vec, bOff: number, n: number, p: Precision): number {
  let acc = 0;
  if (p !== 'f64') {
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
  if (p === 'ascend') return ascendRsqrt(f(f(ss / n) + f(eps)));
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
