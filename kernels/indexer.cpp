// The sparse-attention indexer of ratio-4 layers (catalog S8) as device kernels. NOTE: the real fork
// donge/ds4-ascend (7f1d55b) has NO device implementation of these — indexer scoring and top-k are
// `ascend_unimplemented` there, a hard failure (catalog §9). They exist here so the simulated device
// can run the whole graph; a run against real hardware would stop at this stage.
#include <cmath>

#include "ascend_math.h"

namespace ds4 {

// E2M1 (FP4) magnitudes, index order (catalog §3).
static const float kE2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// Nearest E2M1 value of x, |x| clamped to 6, ties to the even index.
static float e2m1_round(float x) {
  const float ax = std::fmin(std::fabs(x), 6.0f);
  int best = 0;
  for (int i = 1; i < 8; i++) {
    const float d = std::fabs(ax - kE2m1[i]), db = std::fabs(ax - kE2m1[best]);
    if (d < db || (d == db && (i & 1) == 0)) best = i;
  }
  return x < 0.0f ? -kE2m1[best] : kE2m1[best];
}

static float fp4_pow2_scale(float amax) { return pow2_block_scale(amax, 7.052966e-38f, 6.0f); }

// Indexer QAT (ds4.c dsv4_indexer_qat_row_inplace_cpu): per 128-row, fast Walsh–Hadamard (strides
// 1..64, (a, b) → (a+b, a−b)) × 1/√128, then per 32-block FP4 round trip with a power-of-two scale.
static void indexer_qat(const KernelCall &c) {
  float *x = c.out<float>("x");
  c.for_each_index(c.i("rows"), [&](int64_t r) {
    float *v = x + r * 128;
    for (int h = 1; h < 128; h <<= 1)
      for (int i = 0; i < 128; i += 2 * h)
        for (int j = i; j < i + h; j++) {
          const float a = v[j], b = v[j + h];
          v[j] = a + b;
          v[j + h] = a - b;
        }
    for (int j = 0; j < 128; j++) v[j] *= 0.08838834764831845f;
    for (int b = 0; b < 128; b += 32) {
      float amax = 0.0f;
      for (int j = 0; j < 32; j++) amax = std::fmax(amax, std::fabs(v[b + j]));
      const float s = fp4_pow2_scale(amax);
      for (int j = 0; j < 32; j++) v[b + j] = e2m1_round(std::fmax(-6.0f, std::fmin(6.0f, v[b + j] / s))) * s;
    }
  });
}
// budget: the host's butterflies in the same order, the same f32 constant and the same FP4 rounding:
// identical (any other order could flip an FP4 code, a step of up to a third of the value)
DS4_KERNEL("indexer_qat", indexer_qat)
    .describe("Hadamard-128 then FP4 round trip per 32-block, in place (not in ds4-ascend)")
    .takes("rows")
    .buffers("inout x f32[rows*128]")
    .produces("index_comp_row,index_q")
    .max_nmse(0, 0);

// w[h] *= 1/sqrt(head_dim·n_heads) (the indexer head weights' scale), in place.
static void indexer_weights_scale(const KernelCall &c) {
  const int64_t n_heads = c.i("n_heads");
  float *w = c.out<float>("w");
  const float scale = 1.0f / std::sqrt((float)(c.i("head_dim") * n_heads));
  for (int64_t h = 0; h < n_heads; h++) w[h] *= scale;
}
// budget: the host's two roundings of the scale and one product: identical
DS4_KERNEL("indexer_weights_scale", indexer_weights_scale)
    .describe("w /= sqrt(head_dim·n_heads), in place (not in ds4-ascend)")
    .takes("n_heads, head_dim")
    .buffers("inout w f32[n_heads]")
    .produces("index_w")
    .max_nmse(0, 0);

// scores[c] = Σ_h max(0, k_c·q_h)·w_h over the compressed indexer rows, heads in order.
static void indexer_scores(const KernelCall &c) {
  const int64_t heads = c.i("heads"), dim = c.i("dim");
  float *scores = c.out<float>("scores");
  const float *q = c.in<float>("q"), *w = c.in<float>("w"), *k = c.in<float>("k");
  c.for_each_index(c.i("n"), [&](int64_t r) {
    float s = 0.0f;
    for (int64_t h = 0; h < heads; h++) {
      float d = 0.0f;
      for (int64_t j = 0; j < dim; j++) d += k[r * dim + j] * q[h * dim + j];
      s += std::fmax(0.0f, d) * w[h];
    }
    scores[r] = s;
  });
}
// budget: dots of 128 terms, then 64 heads weighted and summed
DS4_KERNEL("indexer_scores", indexer_scores)
    .describe("scores[c] = Σ_h relu(k_c·q_h)·w_h (not in ds4-ascend: unimplemented there)")
    .takes("n, heads, dim")
    .buffers("out scores f32[n]; in q f32[heads*dim]; in w f32[heads]; in k f32[n*dim]")
    .produces("index_scores")
    .max_nmse(sum_nmse(2 * 128 + 2 * 64), sum_nmse(2 * 128 + 2 * 64));

// top_k rows by repeated arg-max (strict >, ties → lower row), in selection order; mask = 0 for
// the selected rows and −1e30 (hidden) for the rest, as attention_decode's additive mask.
static void indexer_topk(const KernelCall &c) {
  const int64_t n = c.i("n"), k = c.i("k");
  if (k > n) c.fail("top_k " + std::to_string(k) + " > rows " + std::to_string(n));
  int32_t *top = c.out<int32_t>("topk");
  float *mask = c.out<float>("mask");
  const float *s = c.in<float>("scores");
  for (int64_t r = 0; r < n; r++) mask[r] = -1.0e30f;
  for (int64_t j = 0; j < k; j++) {
    int64_t best = 0;
    float bs = -1.0e30f;
    for (int64_t r = 0; r < n; r++)
      if (mask[r] != 0.0f && s[r] > bs) { best = r; bs = s[r]; }
    mask[best] = 0.0f;
    top[j] = (int32_t)best;
  }
}
// budget: a selection by comparisons only: identical
DS4_KERNEL("indexer_topk", indexer_topk)
    .describe("top-k rows by repeated arg-max (ties → lower row) and the additive mask hiding the rest (not in ds4-ascend)")
    .takes("n, k")
    .buffers("out topk i32[k]; out mask f32[n]; in scores f32[n]")
    .produces("index_topk")
    .max_nmse(0, 0);

}  // namespace ds4
