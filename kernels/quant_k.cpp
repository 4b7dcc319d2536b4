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
  const int64_t n = c.i("n");
  if (n % kQK_K != 0) c.fail("n " + std::to_string(n) + " is not a multiple of 256 (Q8_K blocks)");
  const float *x = c.in<float>("x");
  int8_t *q = c.out<int8_t>("q");
  float *d = c.out<float>("d");
  int32_t *bs = c.out<int32_t>("bsums");
  const Math m(c);
  c.for_each_index(n / kQK_K, [&](int64_t b) { q8_k_quantize_block(m, x + b * kQK_K, q + b * kQK_K, d + b, bs + b * 16); });
}
// budget: the host's iscale = −127/max, the same product and ties-to-even rounding: identical codes
DS4_KERNEL("quantize_q8_k", quantize_q8_k)
    .describe("Q8_K: per 256-block signed max, iscale = −127/max, q = round-half-even(iscale·x), d = 1/iscale, bsums of 16")
    .takes("n")
    .buffers("out q i8[n]; out d f32[n/256]; out bsums i32[n/16]; in x f32[n] q8_k")
    .produces("moe_gate,moe_up,moe_mid,moe_down")
    .uses("round")
    .max_nmse(0, 0);

}  // namespace ds4
