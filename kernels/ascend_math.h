// The AscendC kernels' arithmetic, as named choices (catalog §10, ds4_ascend_kernels.cpp).
//
// The ds4-ascend vector kernels are scalar GetValue/SetValue loops that avoid libm, so they carry
// their own approximations. Each one is a function here, documented with its error, and each has the
// exact alternative selected by MathMode::Exact (`--kernel-math exact`), so a user can measure how
// much of a device-vs-reference diff each approximation explains. Kernels use the Math object below,
// never libm directly, for anything that has a device approximation.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernel_api.h"

namespace ds4 {

inline uint32_t f32_bits(float x) { uint32_t u; std::memcpy(&u, &x, 4); return u; }
inline float bits_f32(uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }

// ---------------------------------------------------------------- exp
// Ascend: exp(x) ≈ (1 + x/2048)^2048, i.e. 11 squarings of 1 + x·2^-11, with x clamped to [-20, 20]
// and exactly 0 below -20. Relative error ≈ x²/4096 (≈ 2.4e-4 at |x| = 1, ≈ 9 % at |x| = 20), always
// an underestimate. Used by sigmoid, softmax, Sinkhorn, SiLU, attention, compressor pooling.
inline float ascend_exp(float x) {
  if (x < -20.0f) return 0.0f;
  if (x > 20.0f) x = 20.0f;
  float y = 1.0f + x * (1.0f / 2048.0f);
  for (int k = 0; k < 11; k++) y *= y;
  return y;
}

// ---------------------------------------------------------------- rsqrt / sqrt
// Ascend: the 0x5f3759df bit-trick seed refined by 3 Newton steps y ← y·(1.5 − x/2·y²).
// After 3 steps the relative error is at float rounding level (~1e-7..4e-7); it differs from
// 1/sqrtf(x) in the last bits. Used by every RMSNorm.
inline float ascend_rsqrt(float x) {
  float y = bits_f32(0x5f3759dfu - (f32_bits(x) >> 1));
  const float half = 0.5f * x;
  for (int k = 0; k < 3; k++) y = y * (1.5f - half * y * y);
  return y;
}
// Ascend: sqrt(x) = x·rsqrt(x) (0 for x ≤ 0). Used by the router's sqrt-softplus.
inline float ascend_sqrt(float x) { return x > 0.0f ? x * ascend_rsqrt(x) : 0.0f; }

// ---------------------------------------------------------------- log
// Ascend: x = m·2^e with m ∈ [1, 2) from the bits; ln x = e·ln2 + 2·atanh(z), z = (m−1)/(m+1) ∈ [0, 1/3),
// atanh by its series z + z³/3 + z⁵/5 + z⁷/7 + z⁹/9 + z¹¹/11 (the first term plus 5 corrections), each
// term built from the previous one. Truncation error ≤ 2·z¹³/13/(1−z²) ≈ 2.5e-7 absolute near m = 2.
// log(x ≤ 0) = −FLT_MAX. Used by softplus (router).
inline float ascend_log(float x) {
  if (x <= 0.0f) return -3.402823466e+38f;
  const uint32_t u = f32_bits(x);
  const int e = (int)((u >> 23) & 0xffu) - 127;
  const float m = bits_f32((u & 0x007fffffu) | 0x3f800000u);
  const float z = (m - 1.0f) / (m + 1.0f), z2 = z * z;
  static const float kInvOdd[5] = {1.0f / 3.0f, 1.0f / 5.0f, 1.0f / 7.0f, 1.0f / 9.0f, 1.0f / 11.0f};
  float term = z, sum = z;
  for (float k : kInvOdd) {
    term *= z2;
    sum += term * k;
  }
  return 0.6931471805599453f * (float)e + 2.0f * sum;
}

// ---------------------------------------------------------------- rounding to int
// Ascend (7f1d55b): ties-to-even, built from truncation and the fractional part; for every float
// that fits an int32 it equals lrintf in the default FP mode (the older 293eab0 kernels rounded half
// away from zero). Both modes therefore agree; kept as one named function so
// the choice is visible at every quantizer.
inline int32_t round_ties_even_i32(float x) { return (int32_t)std::nearbyint(x); }

// ---------------------------------------------------------------- f16
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant·2^-24
    const float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

// IEEE round-to-nearest-even f32 → f16 (ds4.c f32_to_f16, catalog §3). NaN → 0x7e00.
inline uint16_t f32_to_f16_rne(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const uint32_t au = u & 0x7fffffffu;
  if (au > 0x7f800000u) return 0x7e00;
  if (au >= 0x477ff000u) return sign | 0x7c00u;  // ≥ 65520 rounds to inf
  if (au < 0x38800000u) {                          // below 2^-14: subnormal f16 (or 0)
    const float v = bits_f32(au) * 16777216.0f;    // in units of 2^-24, exact scaling
    return sign | (uint16_t)std::nearbyint(v);
  }
  const uint32_t mant = au & 0x1fffu;  // 13 dropped bits
  uint32_t h = ((au >> 13) - (112u << 10));
  if (mant > 0x1000u || (mant == 0x1000u && (h & 1u))) h++;
  return sign | (uint16_t)h;
}

// Ascend f16 store (ds4_store_raw_kv_batch's ds4_f32_to_f16): truncate to 10 mantissa bits and add 1
// if the highest dropped bit is set, i.e. round-half-up in magnitude (ties away from zero, not to
// even); overflow → inf, values below the smallest subnormal → signed 0; subnormals rounded the same
// way. Differs from RNE only on exact ties (1 ulp of f16).
inline uint16_t f32_to_f16_round_half_up(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const int32_t exp = (int32_t)((u >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = u & 0x7fffffu;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000u;
    const uint32_t shift = (uint32_t)(14 - exp);
    uint32_t hm = mant >> shift;
    if ((mant >> (shift - 1)) & 1u) hm++;
    return sign | (uint16_t)hm;
  }
  if (exp >= 31) return sign | 0x7c00u;
  uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
  if (mant & 0x1000u) h++;
  return sign | (uint16_t)h;
}

// ---------------------------------------------------------------- FP8 E4M3FN (catalog §3)
inline float e4m3fn_value(int code) {
  const int exp = (code >> 3) & 15, mant = code & 7;
  if (exp == 0) return (float)mant * (1.0f / 512.0f);
  return (1.0f + (float)mant * 0.125f) * std::ldexp(1.0f, exp - 7);
}
// Nearest E4M3FN value of x (|x| clamped to 448), ties to the even code.
inline float e4m3fn_round_trip(float x) {
  const float ax = std::fmin(std::fabs(x), 448.0f);
  int lo = 0, hi = 126;  // largest code with value ≤ ax
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (e4m3fn_value(mid) <= ax) lo = mid; else hi = mid - 1;
  }
  int best = lo;
  if (best < 126) {
    const float dlo = ax - e4m3fn_value(best), dhi = e4m3fn_value(best + 1) - ax;
    if (dhi < dlo || (dhi == dlo && (best & 1))) best++;
  }
  const float v = e4m3fn_value(best);
  return x < 0.0f ? -v : v;
}
// Power-of-two block scale 2^ceil(log2(amax/qmax)) with amax floored at `floor`, computed from the
// float bits (exponent, +1 when the mantissa is non-zero) — the scale of ds4's FP8 KV rows
// (qmax 448, floor 1e-4) and FP4 indexer activations (qmax 6, floor 7.052966e-38).
inline float pow2_block_scale(float amax, float floor, float qmax) {
  if (amax < floor) amax = floor;
  const uint32_t u = f32_bits(amax / qmax);
  int e = (int)((u >> 23) & 0xffu) - 127;
  if (u & 0x7fffffu) e++;
  int be = e + 127;
  if (be < 1) be = 1;
  if (be > 254) be = 254;
  return bits_f32((uint32_t)be << 23);
}
inline float fp8_pow2_scale(float amax) { return pow2_block_scale(amax, 1.0e-4f, 448.0f); }

// ---------------------------------------------------------------- planted faults (kernel_api.h KernelFaultFlag)
// The coarse-exp fault: (1 + x/16)^16 (4 squarings), 0 at or below x = −16 — the low-order shortcut a
// hand-written vector exp takes; off by 3 % at x = 1 and 28 % at x = −3.
inline float coarse_exp(float x) {
  if (x <= -16.0f) return 0.0f;
  float y = 1.0f + x * (1.0f / 16.0f);
  for (int k = 0; k < 4; k++) y *= y;
  return y;
}
// The round-half-away fault: ties away from zero (the older 293eab0 kernels), not to even.
inline int32_t round_half_away_i32(float x) { return (int32_t)std::round(x); }

// ---------------------------------------------------------------- the mode-selected set
// What kernels call. Ascend mode = the approximations above; Exact mode = libm / IEEE; a launch's
// planted fault replaces one of them.
struct Math {
  MathMode mode;
  uint32_t faults = 0;
  explicit Math(MathMode m) : mode(m) {}
  explicit Math(const KernelCall &c) : mode(c.mode), faults(c.faults) {}
  bool exact() const { return mode == MathMode::Exact; }

  float exp(float x) const {
    if (faults & kFaultCoarseExp) return coarse_exp(x);
    return exact() ? std::exp(x) : ascend_exp(x);
  }
  float rsqrt(float x) const { return exact() ? 1.0f / std::sqrt(x) : ascend_rsqrt(x); }
  float sqrt(float x) const { return exact() ? std::sqrt(x) : ascend_sqrt(x); }
  float log(float x) const { return exact() ? std::log(x) : ascend_log(x); }
  // log(1 + e) for the softplus branch: exact uses log1p.
  float log1p(float e) const { return exact() ? std::log1p(e) : ascend_log(1.0f + e); }
  int32_t round_i32(float x) const { return faults & kFaultRoundHalfAway ? round_half_away_i32(x) : round_ties_even_i32(x); }

  // Stable sigmoid as the kernels write it: exp of −|x| only.
  float sigmoid(float x) const {
    if (x >= 0.0f) return 1.0f / (1.0f + exp(-x));
    const float e = exp(x);
    return e / (1.0f + e);
  }
  float silu(float x) const { return x * sigmoid(x); }
  // softplus(x) = x above 20, exp(x) below −20, log(1 + exp(x)) between (ds4.c, catalog §3).
  float softplus(float x) const {
    if (x > 20.0f) return x;
    if (x < -20.0f) return exp(x);
    return log1p(exp(x));
  }
  // f16 store rounding: round-half-up on the dropped bits (Ascend) vs IEEE RNE (exact).
  uint16_t f16_store(float x) const { return exact() ? f32_to_f16_rne(x) : f32_to_f16_round_half_up(x); }
  float f16_round(float x) const { return f16_to_f32(f16_store(x)); }
};

// ---------------------------------------------------------------- error budgets (.max_nmse)
// Each kernel's budget is the NMSE (Σ(dev − host)² / Σ host², ggml test-backend-ops) its output may
// have against its exact-f32 host twin on identical inputs, built from these facts. An error that
// is a relative error e on every element has NMSE e².
constexpr double kU = 1.0 / 16777216.0;  // 2^-24, the f32 unit roundoff
constexpr double rel_nmse(double e) { return e * e; }
// An f32 sum or dot of n rounded terms in another order than the host's: relative error ~ sqrt(n)·2^-24
// per output, NMSE n·2^-48.
constexpr double sum_nmse(double n) { return n * kU * kU; }
// ascend_exp: (1 + x/2048)^2048 is low by x²/4096, and the f32 rounding of 1 + x/2048 (≤ 2^-24) is
// raised to the 2048th power (plus the 11 squarings' own roundings): ≤ 4096·2^-24 = 2.4e-4 more.
constexpr double kExpRound = 4096 * kU;
constexpr double exp_rel(double x) { return x * x / 4096 + kExpRound; }
// Natural log for constant expressions (std::log is not constexpr): halve to [1, 2), then the atanh series.
constexpr double ln_const(double n) {
  double k = 0;
  while (n >= 2) { n /= 2; k += 1; }
  const double z = (n - 1) / (n + 1), z2 = z * z;
  double term = z, sum = 0;
  for (int i = 1; i < 40; i += 2) { sum += term / i; term *= z2; }
  return k * 0.6931471805599453 + 2 * sum;
}
// A softmax over n terms e^{x_i} (x_i ≤ 0, one term at 0): every term is low by x_i²/4096, so a normalized
// weight moves by its own x²/4096 minus the weight-averaged one, at most the latter, whose worst over n
// terms is (ln n)²/4096 (n − 1 terms near x = −ln n); the f32 rounding part has either sign and enters
// through the numerator and the denominator.
constexpr double softmax_rel(double n) {
  const double l = n > 7.389 ? ln_const(n) : 2;  // below e² the worst term is at x = −2
  return l * l / 4096 + 2 * kExpRound;
}
// A sigmoid (or silu = x·σ) over arguments x ≥ −4: σ(x) = e^x/(1 + e^x) below 0 carries exp's relative
// error, ≤ exp_rel(4); above 0, e^{−x}·exp_rel(x)/(1 + e^{−x}) is smaller.
constexpr double kSigmoid = 16.0 / 4096 + kExpRound;
constexpr double kRsqrt = 4e-7;     // rsqrt bit trick + 3 Newton steps (and sqrt = x·rsqrt)
constexpr double kLogAbs = 2.5e-7;  // the atanh series' truncation, absolute
constexpr double kF16Ulp = 1.0 / 1024;  // round-half-up vs RNE: one f16 ulp (≤ 2^-10 relative), ties only
// RoPE: the device builds θ_j = pos·base^(−2j/n_rot) with powf (one ulp; the exponent is exact for n_rot a
// power of two), the host (ds4.c) by j rounded products, and YaRN's blend rounds 3 more times: θ_j differs
// by ≤ (j + 4)·2^-24·θ_j, whose largest over j ≥ 1 (θ_0 = pos is exact in both) is ≤ 4·2^-24·pos (j = 1, 2 of
// base 10000); it moves the rotated pair as much: a relative error of kRopeThetaPerPos per position.
constexpr double kRopeThetaPerPos = 4 * kU;

}  // namespace ds4
