// Hyper-connection kernels (catalog §4 S1, S12, S18): ds4_hc_split_sinkhorn4, ds4_hc_weighted_sum4,
// ds4_hc_expand_split, ds4_output_hc_weights (ds4-ascend's ds4_hc_expand, separate post and comb, serves
// only ds4's unfused decode, which the simulated graph does not take). The *4 kernels are fixed to n_hc = 4
// as on the device; the others take n_hc as a scalar. Argument order follows the ds4-ascend launch wrappers.
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
  // step makes Σ_b comb[a + 4b] ≈ 1 for every output stream a (catalog S1 step 5). sums_to_one(o, i):
  // for each of the 4 lines at stride o, scale its 4 elements at stride i to sum to 1 (+eps).
  auto sums_to_one = [&](int outer, int inner) {
    for (int l = 0; l < kHc; l++) {
      float sum = 0.0f;
      for (int e = 0; e < kHc; e++) sum += c[l * outer + e * inner];
      const float inv = 1.0f / (sum + eps);
      for (int e = 0; e < kHc; e++) c[l * outer + e * inner] *= inv;
    }
  };
  sums_to_one(1, kHc);  // over b, for each a
  for (int64_t it = 1; it < iters; it++) {
    sums_to_one(kHc, 1);  // over a, for each b
    sums_to_one(1, kHc);
  }
  for (int k = 0; k < 16; k++) out[8 + k] = c[k];
}

static void hc_split_sinkhorn4(const KernelCall &c) {
  const float *mix = c.in<float>("mix"), *scale = c.in<float>("scale"), *base = c.in<float>("base");
  float *out = c.out<float>("out");
  const int64_t iters = c.i("sinkhorn_iters");
  const float eps = c.f("eps");
  const Math m(c);
  c.for_each_index(c.i("rows"), [&](int64_t r) { split_sinkhorn_row(m, out + r * kSplit, mix + r * kSplit, scale, base, iters, eps); });
}
// budget: ascend: pre/post are sigmoids (kSigmoid, mix·scale + base ≥ −4) and comb a softmax over 4
// (softmax_rel(4)), which the Sinkhorn normalisations, scale-invariant, carry over at most twice; exact:
// the same f32 operations as the host (~200 roundings through 20 Sinkhorn rounds)
DS4_KERNEL("hc_split_sinkhorn4", hc_split_sinkhorn4)
    .describe("HC split of each 24-float mix row: pre = σ+eps, post = 2σ, comb = Sinkhorn(softmax), n_hc = 4")
    .takes("rows, sinkhorn_iters, eps")
    .buffers("out out f32[rows*24] mat(4, 8, 24); in mix f32[rows*24]; weight scale f32[3]; weight base f32[24]")
    .produces("hc_attn_pre_w,hc_attn_post_w,hc_attn_comb,hc_ffn_pre_w,hc_ffn_post_w,hc_ffn_comb")
    .uses("exp")
    .max_nmse(rel_nmse(2 * softmax_rel(4)), sum_nmse(200));

// out[r][d] = Σ_h w[r·stride + h]·residual[r][h][d], summed h = 0..3 left to right.
static void hc_weighted_sum4(const KernelCall &c) {
  const int64_t n_embd = c.i("n_embd"), wstride = c.i("weight_stride");
  const float *res = c.in<float>("residual"), *w = c.in<float>("weights");
  float *out = c.out<float>("out");
  c.for_each_index(c.i("rows") * n_embd, [&](int64_t gid) {
    const int64_t r = gid / n_embd, d = gid % n_embd;
    const float *x = res + r * kHc * n_embd + d;
    const float *wr = w + r * wstride;
    out[gid] = x[0] * wr[0] + x[n_embd] * wr[1] + x[2 * n_embd] * wr[2] + x[3 * n_embd] * wr[3];
  });
}
// budget: four products and three adds per output
DS4_KERNEL("hc_weighted_sum4", hc_weighted_sum4)
    .describe("out[r] = Σ_h w[r·weight_stride + h]·residual[r][h], n_hc = 4 (stride 24 reads pre from the split row)")
    .takes("n_embd, rows, weight_stride")
    .buffers("out out f32[rows*n_embd]; in residual f32[rows*4*n_embd]; in weights f32[(rows-1)*weight_stride+4]")
    .produces("attn_cur,ffn_cur,out_embd")
    .max_nmse(sum_nmse(7), sum_nmse(7));

// out[r][a][d] = (y[r][d] (+ y2[r][d]))·post[r][a] + Σ_b comb[r][a + n_hc·b]·x[r][b][d], b in order (ds4.c
// hc_post_one; ds4_hc_expand_split), post and comb read from the split row pre | post | comb. y2 is the
// optional block_add (ds4-ascend's FFN: routed + shared expert outputs summed before the post weight).
static void hc_expand_split(const KernelCall &c) {
  const int64_t n_embd = c.i("n_embd"), n_hc = c.i("n_hc"), mix = 2 * n_hc + n_hc * n_hc;
  const float *y = c.in<float>("block_out"), *y2 = c.flag("has_add") ? c.in<float>("block_add") : nullptr;
  const float *res = c.in<float>("residual"), *split = c.in<float>("split");
  float *out = c.out<float>("out");
  c.for_each_index(c.i("rows") * n_hc * n_embd, [&](int64_t gid) {
    const int64_t d = gid % n_embd, a = (gid / n_embd) % n_hc, r = gid / (n_hc * n_embd);
    const float *x = res + r * n_hc * n_embd + d, *post = split + r * mix + n_hc, *comb = split + r * mix + 2 * n_hc;
    float yv = y[r * n_embd + d];
    if (y2) yv += y2[r * n_embd + d];
    float acc = yv * post[a];
    for (int64_t b = 0; b < n_hc; b++) acc += comb[a + n_hc * b] * x[b * n_embd];
    out[gid] = acc;
  });
}
// budget: y·post plus n_hc = 4 products and adds, and the block_add, per output
DS4_KERNEL("hc_expand_split", hc_expand_split)
    .describe("HC post reading post and comb from the split row (pre | post | comb), block_add added to block_out if has_add")
    .takes("n_embd, n_hc, rows, has_add")
    .buffers("out out f32[rows*n_hc*n_embd]; in block_out f32[rows*n_embd]; in block_add f32[has_add*rows*n_embd]; "
             "in residual f32[rows*n_hc*n_embd]; in split f32[rows*(2*n_hc+n_hc*n_hc)] mat(n_hc, 2*n_hc, 2*n_hc+n_hc*n_hc)")
    .produces("after_attn_hc,after_ffn_hc")
    .max_nmse(sum_nmse(11), sum_nmse(11));

// S18: w_h = σ(pre_h·scale[0] + base[h]) + eps (plain sigmoid, no Sinkhorn, no 2×).
static void output_hc_weights(const KernelCall &c) {
  const int64_t n_hc = c.i("n_hc");
  const float eps = c.f("eps");
  const float *pre = c.in<float>("pre"), *scale = c.in<float>("scale"), *base = c.in<float>("base");
  float *out = c.out<float>("out");
  const Math m(c);
  c.for_each_index(c.i("n_tok") * n_hc, [&](int64_t gid) { out[gid] = m.sigmoid(pre[gid] * scale[0] + base[gid % n_hc]) + eps; });
}
// budget: ascend: one sigmoid of an argument ≥ −4 (kSigmoid); exact: ~6 roundings
DS4_KERNEL("output_hc_weights", output_hc_weights)
    .describe("output head HC weights: σ(pre·scale + base) + eps")
    .takes("n_hc, n_tok, eps")
    .buffers("out out f32[n_tok*n_hc]; in pre f32[n_tok*n_hc]; weight scale f32[1]; weight base f32[n_hc]")
    .produces("out_hc_w")
    .uses("exp")
    .max_nmse(rel_nmse(kSigmoid + 6 * kU), rel_nmse(6 * kU));

}  // namespace ds4
