// Attention with sinks (catalog §4 S9) and the grouped low output projection (S11):
// ds4_attention_decode, ds4_attention_prefill_raw, ds4_attention_prefill_mixed,
// ds4_attention_output_low_q8[_prequant]. Argument order follows the ds4-ascend launch wrappers.
//
// Per (token, head), over the visible rows k_r (raw rows oldest first, then compressed rows):
//   s_r = (q·k_r)·scale (+ mask_r),  m = max(sink, max_r s_r),
//   den = exp(sink − m) + Σ_r exp(s_r − m),  out = (Σ_r k_r·exp(s_r − m))·(1/den)
// One KV head: the value row is the key row; the learned sink only adds to the denominator.
// exp is the device approximation in ascend mode. A compressed row whose additive mask is ≤ −1e20
// is skipped (the device scores it −FLT_MAX, whose exp is 0). Each (token, head) is owned by one
// part. The AscendC kernels keep the scores in fixed on-chip arrays, so they refuse more rows than
// that (decode/mixed 1024, prefill_raw 512); the simulator faults the launch the same way.
#include <vector>

#include "q8_0.h"

namespace ds4 {

struct Row {
  const float *k;
  float add;  // additive mask (0 for raw rows)
};

static void attend_rows(const Math &m, float *out, const float *q, const std::vector<Row> &rows, int64_t head_dim,
                        float sink, float scale, std::vector<float> &s) {
  s.resize(rows.size());
  float mx = sink;
  for (size_t r = 0; r < rows.size(); r++) {
    float dot = 0.0f;
    for (int64_t d = 0; d < head_dim; d++) dot += q[d] * rows[r].k[d];
    s[r] = dot * scale + rows[r].add;
    mx = std::fmax(mx, s[r]);
  }
  float den = m.exp(sink - mx);
  for (size_t r = 0; r < rows.size(); r++) {
    s[r] = m.exp(s[r] - mx);
    den += s[r];
  }
  const float inv_den = den != 0.0f ? 1.0f / den : 0.0f;
  for (int64_t d = 0; d < head_dim; d++) {
    float acc = 0.0f;
    for (size_t r = 0; r < rows.size(); r++) acc += rows[r].k[d] * s[r];
    out[d] = acc * inv_den;
  }
}

// Runs attend_rows for every (token, head); visible(t, rows) lists token t's rows.
template <class Visible>
static void attend_all(const KernelCall &c, float *out, const float *q, const float *sinks, int64_t n_tok,
                       int64_t n_head, int64_t head_dim, float scale, Visible &&visible) {
  const Math m(c);
  c.run_parts([&](int p) {
    std::vector<Row> rows;
    std::vector<float> s;
    for (int64_t gid = p; gid < n_tok * n_head; gid += c.parts) {
      rows.clear();
      visible(gid / n_head, rows);
      attend_rows(m, out + gid * head_dim, q + gid * head_dim, rows, head_dim, sinks[gid % n_head], scale, s);
    }
  });
}

static void check_scores(const KernelCall &c, int64_t rows, int64_t limit) {
  if (rows > limit)
    c.fail(std::to_string(rows) + " visible rows exceed the kernel's " + std::to_string(limit) +
           "-score buffer (the device refuses this launch)");
}

static const float kMaskedBelow = -1.0e20f;

// Decode: one token; raw rows come from the ring cache (store_raw_kv), oldest at ring row raw_start.
static void attention_decode(const KernelCall &c) {
  const bool use_mask = c.i(0) != 0;
  const int64_t n_raw = c.i(1), raw_cap = c.i(2), raw_start = c.i(3), n_comp = c.i(4), n_head = c.i(5),
                head_dim = c.i(6);
  const float scale = c.f(7);
  if (n_raw > raw_cap) c.fail("n_raw " + std::to_string(n_raw) + " exceeds raw_cap " + std::to_string(raw_cap));
  check_scores(c, n_raw + n_comp, 1024);
  const float *sinks = c.in<float>(1, 0, n_head);
  const float *q = c.in<float>(2, 0, n_head * head_dim);
  const float *raw = c.in<float>(3, 0, raw_cap * head_dim);
  const float *comp = c.in<float>(4, 0, n_comp * head_dim);
  const float *mask = use_mask ? c.in<float>(5, 0, n_comp) : nullptr;
  float *out = c.out<float>(0, 0, n_head * head_dim);
  attend_all(c, out, q, sinks, 1, n_head, head_dim, scale, [&](int64_t, std::vector<Row> &rows) {
    for (int64_t r = 0; r < n_raw; r++) rows.push_back({raw + ((raw_start + r) % raw_cap) * head_dim, 0.0f});
    for (int64_t k = 0; k < n_comp; k++) {
      const float add = mask ? mask[k] : 0.0f;
      if (add > kMaskedBelow) rows.push_back({comp + k * head_dim, add});
    }
  });
}
DS4_KERNEL("attention_decode", attention_decode,
           "bufs: heads f32[n_head*D], sinks f32[n_head], q f32[n_head*D], raw f32[raw_cap*D] (ring), comp f32[n_comp*D], "
           "mask f32[n_comp] (additive, ≤ -1e20 hides; only if use_mask); scalars: use_mask, n_raw, raw_cap, raw_start, "
           "n_comp, n_head, D, scale. n_raw + n_comp ≤ 1024",
           "attn_heads");

// Prefill over a fresh batch: token t attends to batch rows (t − window, t] (window 0 = all ≤ t).
static int64_t window_start(int64_t t, int64_t window) { return window != 0 && t + 1 > window ? t + 1 - window : 0; }

static void attention_prefill_raw(const KernelCall &c) {
  const int64_t n_tok = c.i(0), window = c.i(1), n_head = c.i(2), head_dim = c.i(3);
  const float scale = c.f(4);
  check_scores(c, window != 0 && window < n_tok ? window : n_tok, 512);
  const float *sinks = c.in<float>(1, 0, n_head);
  const float *q = c.in<float>(2, 0, n_tok * n_head * head_dim);
  const float *kv = c.in<float>(3, 0, n_tok * head_dim);
  float *out = c.out<float>(0, 0, n_tok * n_head * head_dim);
  attend_all(c, out, q, sinks, n_tok, n_head, head_dim, scale, [&](int64_t t, std::vector<Row> &rows) {
    for (int64_t r = window_start(t, window); r <= t; r++) rows.push_back({kv + r * head_dim, 0.0f});
  });
}
DS4_KERNEL("attention_prefill_raw", attention_prefill_raw,
           "bufs: heads f32[n_tok*n_head*D], sinks f32[n_head], q f32[n_tok*n_head*D], kv f32[n_tok*D]; "
           "scalars: n_tok, window (0 = causal, unlimited), n_head, D, scale. window rows ≤ 512",
           "attn_heads");

// Mixed prefill: the raw window, then compressed rows c < (t+1)/ratio (emitted by token t), each with
// its per-(token, row) additive mask.
static void attention_prefill_mixed(const KernelCall &c) {
  const bool use_mask = c.i(0) != 0;
  const int64_t n_tok = c.i(1), n_comp = c.i(2), window = c.i(3), ratio = c.i(4), n_head = c.i(5), head_dim = c.i(6);
  const float scale = c.f(7);
  if (ratio <= 0) c.fail("ratio must be > 0");
  const auto visible_comp = [&](int64_t t) { return n_comp != 0 ? std::min(n_comp, (t + 1) / ratio) : 0; };
  for (int64_t t = 0; t < n_tok; t++) check_scores(c, t + 1 - window_start(t, window) + visible_comp(t), 1024);
  const float *sinks = c.in<float>(1, 0, n_head);
  const float *q = c.in<float>(2, 0, n_tok * n_head * head_dim);
  const float *kv = c.in<float>(3, 0, n_tok * head_dim);
  const float *comp = c.in<float>(4, 0, n_comp * head_dim);
  const float *mask = use_mask ? c.in<float>(5, 0, n_tok * n_comp) : nullptr;
  float *out = c.out<float>(0, 0, n_tok * n_head * head_dim);
  attend_all(c, out, q, sinks, n_tok, n_head, head_dim, scale, [&](int64_t t, std::vector<Row> &rows) {
    for (int64_t r = window_start(t, window); r <= t; r++) rows.push_back({kv + r * head_dim, 0.0f});
    for (int64_t k = 0; k < visible_comp(t); k++) {
      const float add = mask ? mask[t * n_comp + k] : 0.0f;
      if (add > kMaskedBelow) rows.push_back({comp + k * head_dim, add});
    }
  });
}
DS4_KERNEL("attention_prefill_mixed", attention_prefill_mixed,
           "bufs: heads, sinks f32[n_head], q f32[n_tok*n_head*D], kv f32[n_tok*D], comp f32[n_comp*D], mask f32[n_tok*n_comp] "
           "(additive, only if use_mask); scalars: use_mask, n_tok, n_comp, window, ratio, n_head, D, scale",
           "attn_heads");

// S11 low projection: heads viewed as n_groups groups of group_dim values per token; each group is
// quantized to Q8_0 on its own (block-wise, so the same as quantizing the whole row) and multiplied by
// its rank-row slice g of attn_output_a: low[t][g·rank + r] = A[g·rank + r] · q8(heads[t][g]).
static void attention_output_low_q8(const KernelCall &c) {
  const int64_t group_dim = c.i(0), rank = c.i(1), n_groups = c.i(2), n_tok = c.i(3);
  const int64_t nb = q8_0_blocks(c, group_dim);
  const uint8_t *w = c.in<uint8_t>(1, 0, n_groups * rank * nb * kQ8_0BlockBytes);
  const float *heads = c.in<float>(2, 0, n_tok * n_groups * group_dim);
  float *low = c.out<float>(0, 0, n_tok * n_groups * rank);
  std::vector<int8_t> q(n_tok * n_groups * group_dim);
  std::vector<float> d(n_tok * n_groups * nb);
  q8_0_quantize_rows(c, heads, q.data(), d.data(), n_tok * n_groups, nb);
  q8_0_matmul_rows(c, w, q.data(), d.data(), low, nb, rank, n_tok * n_groups, n_groups);
}
DS4_KERNEL("attention_output_low_q8", attention_output_low_q8,
           "bufs: low f32[n_tok*n_groups*rank], w_a q8_0[n_groups*rank rows of group_dim], heads f32[n_tok*n_groups*group_dim]; "
           "scalars: group_dim, rank, n_groups, n_tok",
           "attn_low");

static void attention_output_low_q8_prequant(const KernelCall &c) {
  const int64_t group_dim = c.i(0), rank = c.i(1), n_groups = c.i(2), n_tok = c.i(3);
  const int64_t nb = q8_0_blocks(c, group_dim);
  const uint8_t *w = c.in<uint8_t>(1, 0, n_groups * rank * nb * kQ8_0BlockBytes);
  const int8_t *q = c.in<int8_t>(2, 0, n_tok * n_groups * group_dim);
  const float *d = c.in<float>(3, 0, n_tok * n_groups * nb);
  float *low = c.out<float>(0, 0, n_tok * n_groups * rank);
  q8_0_matmul_rows(c, w, q, d, low, nb, rank, n_tok * n_groups, n_groups);
}
DS4_KERNEL("attention_output_low_q8_prequant", attention_output_low_q8_prequant,
           "bufs: low f32[n_tok*n_groups*rank], w_a q8_0, xq i8[n_tok*n_groups*group_dim], xscale f32[n_tok*n_groups*group_dim/32] "
           "(quantize_q8_0 of heads); scalars: group_dim, rank, n_groups, n_tok",
           "attn_low");

}  // namespace ds4
