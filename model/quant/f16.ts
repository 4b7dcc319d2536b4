// IEEE binary16 (f16) and bfloat16 conversions (catalog §3 "f16↔f32", ds4.c f16_to_f32 / f32_to_f16).
// Inputs are first taken to f32 (the C functions take a float), then rounded to nearest, ties to even.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bits of the f32 nearest to x (JS numbers are doubles; the C code only ever sees floats). */
function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

function f32FromBits(bits: number): number {
  u32[0] = bits;
  return f32[0];
}

/**
 * F16_TABLE[h] = value of half h; decoding is a table lookup because it sits in every F16/Q8_0 inner loop.
 * Built from bits, one exponent (1024 halves) at a time — a normal half's f32 is its sign, its exponent
 * rebiased by 127 − 15 and its mantissa shifted up 13: every thread builds it as it starts, and decoding
 * each half with its power of two took ~10 ms of that.
 */
export const F16_TABLE: Float32Array = (() => {
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h0 = 0; h0 < 65536; h0 += 1024) {
    const sign = h0 & 0x8000 ? -1 : 1;
    const exp = (h0 >> 10) & 0x1f;
    if (exp === 0) {
      // zero and subnormals: mant · 2^-14 · 2^-10
      for (let m = 0; m < 1024; m++) t[h0 + m] = sign * m * 2 ** -24;
    } else if (exp === 31) {
      t[h0] = sign * Infinity;
      t.fill(NaN, h0 + 1, h0 + 1024);
    } else {
      const top = ((h0 & 0x8000) << 16) | ((exp + 112) << 23);
      for (let m = 0; m < 1024; m++) bits[h0 + m] = top | (m << 13);
    }
  }
  return t;
})();

export function f16ToF32(h: number): number {
  return F16_TABLE[h & 0xffff];
}

export function f32ToF16(x: number): number {
  const bits = f32Bits(x);
  const sign = (bits >>> 16) & 0x8000;
  const fexp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (fexp === 0xff) return sign | (mant !== 0 ? 0x7e00 : 0x7c00); // NaN → canonical quiet NaN; ±inf
  const exp = fexp - 127 + 15; // biased half exponent
  if (exp >= 31) return sign | 0x7c00; // too large for half: overflow to inf
  if (exp <= 0) {
    // Subnormal half (or zero): value = m · 2^-24 with m = full 24-bit significand >> (14 - exp).
    if (exp < -10) return sign; // below half of the smallest subnormal: rounds to zero
    const sig = mant | 0x800000;
    const shift = 14 - exp;
    return sign | roundShiftEven(sig, shift);
  }
  // Normal: keep 10 mantissa bits; a carry out of the mantissa correctly bumps the exponent (even to inf).
  return sign | roundShiftEven((exp << 23) | mant, 13);
}

/** v >> shift rounded to nearest, ties to even (0 <= v < 2^32, 1 <= shift <= 24). */
function roundShiftEven(v: number, shift: number): number {
  const q = v >>> shift;
  const rem = v - q * 2 ** shift;
  const half = 2 ** (shift - 1);
  return rem > half || (rem === half && (q & 1) === 1) ? q + 1 : q;
}

/** f16 round trip: the value DS4 stores when a cache or weight is kept in half precision. */
export function f16Round(x: number): number {
  return F16_TABLE[f32ToF16(x)];
}

/**
 * The f16 rounding decision of x (as f32): [distance to the midpoint between the two nearest halves, the
 * gap between them]; Infinity beyond the largest finite half.
 */
export function f16Margin(x: number): [tie: number, step: number] {
  const a = Math.abs(f32FromBits(f32Bits(x)));
  const c = f32ToF16(a);
  if (c >= 0x7bff) return [Infinity, 0];
  const v = F16_TABLE[c];
  const [lo, hi] = v <= a ? [v, F16_TABLE[c + 1]] : [F16_TABLE[c - 1], v];
  return [Math.abs(a - (lo + hi) / 2), hi - lo];
}

export function bf16ToF32(h: number): number {
  return f32FromBits(((h & 0xffff) << 16) >>> 0);
}

/** bfloat16 = top 16 bits of the f32, rounded to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16(x: number): number {
  const bits = f32Bits(x);
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return roundShiftEven(bits, 16) & 0xffff;
}
