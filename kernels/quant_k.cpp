// ds4_quantize_q8_k (catalog §10): the routed experts' activation quantizer (ds4.c
// ds4_quantize_row_q8_K, catalog §3). Part p owns 256-blocks b ≡ p (mod parts).
#include "q8_k.h"

namespace ds4 {

void q8_k_quantize_block(const Math &m, const float *x, int8_t *q, float *d, int32_t *bsums) {
  float max = 0.0f, amax = 0.0f;
  for (int64_t j = 0; j < kQK_K; j++) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) { amax = ax; max = x[j]; }  // first element of the largest magnitude wins
  }
  if (amax == 0.0f) {
    *d = 0.0f;
    for (int64_t j = 0; j < kQK_K; j++) q[j] = 0;
    for (int64_t j = 0; j < kQK_K / 16; j++) bsums[j] = 0;
    return;
  }
  // The signed max maps to −127 exactly, so the largest element never clips; the other sign can
  // reach +127 at most.
  const float iscale = -127.0f / max;
  for (int64_t j = 0; j < kQK_K; j++) {
    int32_t v = m.round_i32(iscale * x[j]);
    q[j] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
  }
  for (int64_t j = 0; j < kQK_K / 16; j++) {
    int32_t s = 0;
    for (int64_t i = 0; i < 16; i++) s += q[j * 16 + i];
    bsums[j] = s;
  }
  *d = 1.0f / iscale;
}

static void quantize_q8_k(const KernelCall &c) {
  const int64_t n = c.i(0);
  if (n % kQK_K != 0) c.fail("n " + std::to_string(n) + " is not a multiple of 256 (Q8_K blocks)");
  const int64_t nb = n / kQK_K;
  const float *x = c.in<float>(3, 0, n);
  int8_t *q = c.out<int8_t>(0, 0, n);
  float *d = c.out<float>(1, 0, nb);
  int32_t *bs = c.out<int32_t>(2, 0, nb * (kQK_K / 16));
  const Math m(c);
  c.for_each_index(nb, [&](int64_t b) { q8_k_quantize_block(m, x + b * kQK_K, q + b * kQK_K, d + b, bs + b * 16); });
}
DS4_KERNEL("quantize_q8_k", quantize_q8_k,
           "bufs: q i8[n], d f32[n/256], bsums i32[n/16], x f32[n]; scalars: n. Q8_K: per 256-block signed max, "
           "iscale=-127/max, q=clamp(round_even(iscale*x)), d=1/iscale, bsums of 16",
           "");

}  // namespace ds4
