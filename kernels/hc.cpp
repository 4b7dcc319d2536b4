// Hyper-connection kernels (catalog §4 S1, S12, S18): ds4_hc_split_sinkhorn4, ds4_hc_weighted_sum4,
// ds4_hc_expand, ds4_hc_expand_split, ds4_output_hc_weights. The *4 kernels are fixed to n_hc = 4 as on
// the device; the others take n_hc as a scalar. Argument order follows the ds4-ascend launch wrappers.
// The split row is 24 floats: pre[4] | post[4] | comb[16] with comb[a + 4·b], a = output stream (ds4.c hc_post_one).
#include "ascend_math.h"

namespace ds4 {

static const int64_t kHc = 4, kSplit = 24;

// One row of the split: pre = σ(z)+eps, post = 2σ(z), comb = Sinkhorn(softmax over a per b).
// sigmoid/exp are the device approximations in ascend mode.
static void split_sinkhorn_row(const Math &m, float *out, const float *mix, const float *scale, const float *base,
                               int64_t iters, float eps) {
  for (int i = 0; i < kHc; i++) out[i] = m.sigmoid(mix[i] * scale[0] + base[i]) + eps;
  for (int i = kHc; i < 2 * kHc; i++) out[i] = 2.0f * m.sigmoid(mix[i] * scale[1] + base[i]);
  float c[16];
  // comb[a + 4·b] (a = output stream, fast index): softmax over a for each b, then +eps.
  for (int b = 0; b < kHc; b++) {
    float mx = -INFINITY;
    for (int a = 0; a < kHc; a++) {
      const int k = a + kHc * b;
      c[k] = mix[8 + k] * scale[2] + base[8 + k];
      mx = std::fmax(mx, c[k]);
    }
    float sum = 0.0f;
    for (int a = 0; a < kHc; a++) {
      const int k = a + kHc * b;
      c[k] = m.exp(c[k] - mx);
      sum += c[k];
    }
    const float inv = 1.0f / sum;
    for (int a = 0; a < kHc; a++) c[a + kHc * b] = c[a + kHc * b] * inv + eps;
  }
  // Normalise the sums over b (one per a), then iters−1 rounds of (sums over a, sums over b): the last
  // step makes Σ_b comb[a + 4b] ≈ 1 for every output stream a (catalog S1 step 5).
  auto sums_over_b_to_one = [&] {
    for (int a = 0; a < kHc; a++) {
      float sum = 0.0f;
      for (int b = 0; b < kHc; b++) sum += c[a + kHc * b];
      const float inv = 1.0f / (sum + eps);
      for (int b = 0; b < kHc; b++) c[a + kHc * b] *= inv;
    }
  };
  auto sums_over_a_to_one = [&] {
    for (int b = 0; b < kHc; b++) {
      float sum = 0.0f;
      for (int a = 0; a < kHc; a++) sum += c[a + kHc * b];
      const float inv = 1.0f / (sum + eps);
      for (int a = 0; a < kHc; a++) c[a + kHc * b] *= inv;
    }
  };
  sums_over_b_to_one();
  for (int64_t it = 1; it < iters; it++) {
    sums_over_a_to_one();
    sums_over_b_to_one();
  }
  for (int k = 0; k < 16; k++) out[8 + k] = c[k];
}

static void hc_split_sinkhorn4(const KernelCall &c) {
  const int64_t rows = c.i(0), iters = c.i(1);
  const float eps = c.f(2);
  const float *mix = c.in<float>(1, 0, rows * kSplit);
  const float *scale = c.in<float>(2, 0, 3);
  const float *base = c.in<float>(3, 0, kSplit);
  float *out = c.out<float>(0, 0, rows * kSplit);
  const Math m(c);
  c.for_each_index(rows, [&](int64_t r) { split_sinkhorn_row(m, out + r * kSplit, mix + r * kSplit, scale, base, iters, eps); });
}
DS4_KERNEL("hc_split_sinkhorn4", hc_split_sinkhorn4,
           "bufs: out f32[rows*24] (pre|post|comb), mix f32[rows*24], scale f32[3], base f32[24]; "
           "scalars: rows, sinkhorn_iters (20), eps (1e-6)",
           "hc_attn_pre_w,hc_attn_post_w,hc_attn_comb,hc_ffn_pre_w,hc_ffn_post_w,hc_ffn_comb");

// out[r][d] = Σ_h w[r·stride + h]·residual[r][h][d], summed h = 0..3 left to right.
static void hc_weighted_sum4(const KernelCall &c) {
  const int64_t n_embd = c.i(0), rows = c.i(1), wstride = c.i(2);
  const float *res = c.in<float>(1, 0, rows * kHc * n_embd);
  const float *w = c.in<float>(2, 0, (rows - 1) * wstride + kHc);
  float *out = c.out<float>(0, 0, rows * n_embd);
  c.for_each_index(rows * n_embd, [&](int64_t gid) {
    const int64_t r = gid / n_embd, d = gid % n_embd;
    const float *x = res + r * kHc * n_embd + d;
    const float *wr = w + r * wstride;
    out[gid] = x[0] * wr[0] + x[n_embd] * wr[1] + x[2 * n_embd] * wr[2] + x[3 * n_embd] * wr[3];
  });
}
DS4_KERNEL("hc_weighted_sum4", hc_weighted_sum4,
           "bufs: out f32[rows*n_embd], residual f32[rows*4*n_embd], weights f32[rows*weight_stride]; "
           "scalars: n_embd, rows, weight_stride (24 reads pre from the split row)",
           "attn_cur,ffn_cur,out_embd");

// out[r][a][d] = (y[r][d] (+ y2[r][d]))·post[a] + Σ_b comb[a + n_hc·b]·x[r][b][d], b in order (ds4.c
// hc_post_one; ds4_hc_expand[_split]). y2 is the split variant's optional block_add (FFN: routed +
// shared expert outputs summed before the post weight).
static void hc_expand_rows(const KernelCall &c, float *out, const float *y, const float *y2, const float *res,
                           const float *post, const float *comb, int64_t n_embd, int64_t n_hc, int64_t rows,
                           int64_t post_stride, int64_t comb_stride) {
  c.for_each_index(rows * n_hc * n_embd, [&](int64_t gid) {
    const int64_t d = gid % n_embd, a = (gid / n_embd) % n_hc, r = gid / (n_hc * n_embd);
    const float *x = res + r * n_hc * n_embd + d;
    const float *cm = comb + r * comb_stride;
    float yv = y[r * n_embd + d];
    if (y2) yv += y2[r * n_embd + d];
    float acc = yv * post[r * post_stride + a];
    for (int64_t b = 0; b < n_hc; b++) acc += cm[a + n_hc * b] * x[b * n_embd];
    out[gid] = acc;
  });
}

static void hc_expand(const KernelCall &c) {
  const int64_t n_embd = c.i(0), n_hc = c.i(1), rows = c.i(2);
  const float *y = c.in<float>(1, 0, rows * n_embd);
  const float *res = c.in<float>(2, 0, rows * n_hc * n_embd);
  const float *post = c.in<float>(3, 0, rows * n_hc);
  const float *comb = c.in<float>(4, 0, rows * n_hc * n_hc);
  hc_expand_rows(c, c.out<float>(0, 0, rows * n_hc * n_embd), y, nullptr, res, post, comb, n_embd, n_hc, rows, n_hc,
                 n_hc * n_hc);
}
DS4_KERNEL("hc_expand", hc_expand,
           "bufs: out f32[rows*n_hc*n_embd], block_out f32[rows*n_embd], residual f32[rows*n_hc*n_embd], post f32[rows*n_hc], "
           "comb f32[rows*n_hc*n_hc]; scalars: n_embd, n_hc, rows",
           "after_attn_hc,after_ffn_hc");

static void hc_expand_split(const KernelCall &c) {
  const int64_t n_embd = c.i(0), n_hc = c.i(1), rows = c.i(2);
  const bool has_add = c.i(3) != 0;
  const int64_t mix = 2 * n_hc + n_hc * n_hc;  // split row: pre | post | comb
  const float *y = c.in<float>(1, 0, rows * n_embd);
  const float *y2 = has_add ? c.in<float>(2, 0, rows * n_embd) : nullptr;
  const float *res = c.in<float>(3, 0, rows * n_hc * n_embd);
  const float *split = c.in<float>(4, 0, rows * mix);
  hc_expand_rows(c, c.out<float>(0, 0, rows * n_hc * n_embd), y, y2, res, split + n_hc, split + 2 * n_hc, n_embd, n_hc,
                 rows, mix, mix);
}
DS4_KERNEL("hc_expand_split", hc_expand_split,
           "bufs: out f32[rows*n_hc*n_embd], block_out f32[rows*n_embd], block_add f32[rows*n_embd] (read only if has_add), "
           "residual f32[rows*n_hc*n_embd], split f32[rows*(2n_hc+n_hc²)]; scalars: n_embd, n_hc, rows, has_add",
           "after_attn_hc,after_ffn_hc");

// S18: w_h = σ(pre_h·scale[0] + base[h]) + eps (plain sigmoid, no Sinkhorn, no 2×).
static void output_hc_weights(const KernelCall &c) {
  const int64_t n_hc = c.i(0), rows = c.i(1);
  const float eps = c.f(2);
  const float *pre = c.in<float>(1, 0, rows * n_hc);
  const float *scale = c.in<float>(2, 0, 1);
  const float *base = c.in<float>(3, 0, n_hc);
  float *out = c.out<float>(0, 0, rows * n_hc);
  const Math m(c);
  c.for_each_index(rows * n_hc, [&](int64_t gid) { out[gid] = m.sigmoid(pre[gid] * scale[0] + base[gid % n_hc]) + eps; });
}
DS4_KERNEL("output_hc_weights", output_hc_weights,
           "bufs: out f32[n_tok*n_hc], pre f32[n_tok*n_hc], scale f32[1], base f32[n_hc]; scalars: n_hc, n_tok, eps (1e-6)",
           "out_hc_w");

}  // namespace ds4
