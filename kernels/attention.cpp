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
static void attend_all(const KernelCall &c, int64_t n_tok, Visible &&visible) {
  const int64_t n_head = c.i("n_head"), head_dim = c.i("head_dim");
  const float scale = c.f("scale");
  const float *q = c.in<float>("q"), *sinks = c.in<float>("sinks");
  float *out = c.out<float>("heads");
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

// Budgets (all three attention kernels): every score q·k·scale (head_dim ≤ 512 terms, Σ|q_d·k_d|·scale
// ≤ 16 assumed) is off by ≤ sqrt(2·512)·16·2^-24, which moves its weight by as much relative, in the
// numerator and the denominator; the output sums up to 1024 rows; ascend adds a softmax over up to
// 1024 (+ the sink) terms.
constexpr double kAttnRel = 2 * 32 * 16 * kU + 45 * kU;

// Decode: one token; raw rows come from the ring cache (store_raw_kv), oldest at ring row raw_start.
static void attention_decode(const KernelCall &c) {
  const int64_t n_raw = c.i("n_raw"), raw_cap = c.i("raw_cap"), raw_start = c.i("raw_start"), n_comp = c.i("n_comp"),
                head_dim = c.i("head_dim");
  if (n_raw > raw_cap) c.fail("n_raw " + std::to_string(n_raw) + " exceeds raw_cap " + std::to_string(raw_cap));
  check_scores(c, n_raw + n_comp, 1024);
  const float *raw = c.in<float>("raw"), *comp = c.in<float>("comp");
  const float *mask = c.flag("use_mask") ? c.in<float>("mask") : nullptr;
  attend_all(c, 1, [&](int64_t, std::vector<Row> &rows) {
    for (int64_t r = 0; r < n_raw; r++) rows.push_back({raw + ((raw_start + r) % raw_cap) * head_dim, 0.0f});
    for (int64_t k = 0; k < n_comp; k++) {
      const float add = mask ? mask[k] : 0.0f;
      if (add > kMaskedBelow) rows.push_back({comp + k * head_dim, add});
    }
  });
}
DS4_KERNEL("attention_decode", attention_decode)
    .describe("one token's attention with sinks over the raw ring (n_raw rows from raw_start) and the compressed "
              "rows (additive mask ≤ -1e20 hides a row; n_raw + n_comp ≤ 1024)")
    .takes("use_mask, n_raw, raw_cap, raw_start, n_comp, n_head, head_dim, scale")
    .buffers("out heads f32[n_head*head_dim]; weight sinks f32[n_head]; in q f32[n_head*head_dim]; "
             "in raw f32[raw_cap*head_dim]; in comp f32[n_comp*head_dim]; in mask f32[use_mask*n_comp]")
    .produces("attn_heads")
    .uses("exp")
    .max_nmse(rel_nmse(kAttnRel + softmax_rel(1025)), rel_nmse(kAttnRel));

// Prefill over a fresh batch: token t attends to batch rows (t − window, t] (window 0 = all ≤ t).
static int64_t window_start(int64_t t, int64_t window) { return window != 0 && t + 1 > window ? t + 1 - window : 0; }

static void attention_prefill_raw(const KernelCall &c) {
  const int64_t n_tok = c.i("n_tok"), window = c.i("window"), head_dim = c.i("head_dim");
  check_scores(c, window != 0 && window < n_tok ? window : n_tok, 512);
  const float *kv = c.in<float>("kv");
  attend_all(c, n_tok, [&](int64_t t, std::vector<Row> &rows) {
    for (int64_t r = window_start(t, window); r <= t; r++) rows.push_back({kv + r * head_dim, 0.0f});
  });
}
DS4_KERNEL("attention_prefill_raw", attention_prefill_raw)
    .describe("batched prefill attention over the batch's own rows, causal window (0 = unlimited, ≤ 512 rows)")
    .takes("n_tok, window, n_head, head_dim, scale")
    .buffers("out heads f32[n_tok*n_head*head_dim]; weight sinks f32[n_head]; in q f32[n_tok*n_head*head_dim]; "
             "in kv f32[n_tok*head_dim]")
    .produces("attn_heads")
    .uses("exp")
    .max_nmse(rel_nmse(kAttnRel + softmax_rel(513)), rel_nmse(kAttnRel));

// Mixed prefill: the raw window, then compressed rows c < (t+1)/ratio (emitted by token t), each with
// its per-(token, row) additive mask.
static void attention_prefill_mixed(const KernelCall &c) {
  const int64_t n_tok = c.i("n_tok"), n_comp = c.i("n_comp"), window = c.i("window"), ratio = c.i("ratio"),
                head_dim = c.i("head_dim");
  if (ratio <= 0) c.fail("ratio must be > 0");
  const auto visible_comp = [&](int64_t t) { return n_comp != 0 ? std::min(n_comp, (t + 1) / ratio) : 0; };
  for (int64_t t = 0; t < n_tok; t++) check_scores(c, t + 1 - window_start(t, window) + visible_comp(t), 1024);
  const float *kv = c.in<float>("kv"), *comp = c.in<float>("comp");
  const float *mask = c.flag("use_mask") ? c.in<float>("mask") : nullptr;
  attend_all(c, n_tok, [&](int64_t t, std::vector<Row> &rows) {
    for (int64_t r = window_start(t, window); r <= t; r++) rows.push_back({kv + r * head_dim, 0.0f});
    for (int64_t k = 0; k < visible_comp(t); k++) {
      const float add = mask ? mask[t * n_comp + k] : 0.0f;
      if (add > kMaskedBelow) rows.push_back({comp + k * head_dim, add});
    }
  });
}
DS4_KERNEL("attention_prefill_mixed", attention_prefill_mixed)
    .describe("batched prefill attention: the raw window, then the compressed rows token t has seen emitted, "
              "per-(token, row) additive mask")
    .takes("use_mask, n_tok, n_comp, window, ratio, n_head, head_dim, scale")
    .buffers("out heads f32[n_tok*n_head*head_dim]; weight sinks f32[n_head]; in q f32[n_tok*n_head*head_dim]; "
             "in kv f32[n_tok*head_dim]; in comp f32[n_comp*head_dim]; in mask f32[use_mask*n_tok*n_comp]")
    .produces("attn_heads")
    .uses("exp")
    .max_nmse(rel_nmse(kAttnRel + softmax_rel(1025)), rel_nmse(kAttnRel));

// S11 low projection: heads viewed as n_groups groups of group_dim values per token; each group is
// quantized to Q8_0 on its own (block-wise, so the same as quantizing the whole row) and multiplied by
// its rank-row slice g of attn_output_a: low[t][g·rank + r] = A[g·rank + r] · q8(heads[t][g]).
static void attention_output_low(const KernelCall &c, const int8_t *q, const float *d) {
  q8_0_matmul_rows(c, c.in<uint8_t>("w_a"), q, d, c.out<float>("low"), q8_0_blocks(c, c.i("group_dim")), c.i("rank"),
                   c.i("n_tok") * c.i("n_groups"), c.i("n_groups"));
}

static void attention_output_low_q8(const KernelCall &c) {
  const int64_t n = c.i("n_tok") * c.i("n_groups") * c.i("group_dim");
  std::vector<int8_t> q(n);
  std::vector<float> d(n / kQK8_0);
  q8_0_quantize_rows(c, c.in<float>("heads"), q.data(), d.data(), c.i("n_tok") * c.i("n_groups"), q8_0_blocks(c, c.i("group_dim")));
  attention_output_low(c, q.data(), d.data());
}
// budgets (both): integer block dots, then two products and an add per 32-block over group_dim =
// 8 heads·512 = 4096 (128 blocks); the quantization is quantize_q8_0's, identical to the host's
DS4_KERNEL("attention_output_low_q8", attention_output_low_q8)
    .describe("grouped low projection: each group of heads quantized to Q8_0 and multiplied by its rank rows of attn_output_a")
    .takes("group_dim, rank, n_groups, n_tok")
    .buffers("out low f32[n_tok*n_groups*rank]; weight w_a q8_0[n_groups*rank*group_dim]; "
             "in heads f32[n_tok*n_groups*group_dim] q8_0")
    .produces("attn_low")
    .uses("round")
    .max_nmse(sum_nmse(3 * 128), sum_nmse(3 * 128));

static void attention_output_low_q8_prequant(const KernelCall &c) {
  attention_output_low(c, c.in<int8_t>("xq"), c.in<float>("xscale"));
}
DS4_KERNEL("attention_output_low_q8_prequant", attention_output_low_q8_prequant)
    .describe("grouped low projection from heads quantized by quantize_q8_0 (ds4-ascend's path; the prefill pass)")
    .takes("group_dim, rank, n_groups, n_tok")
    .buffers("out low f32[n_tok*n_groups*rank]; weight w_a q8_0[n_groups*rank*group_dim]; "
             "in xq i8[n_tok*n_groups*group_dim]; in xscale f32[n_tok*n_groups*group_dim/32]")
    .produces("attn_low")
    .max_nmse(sum_nmse(3 * 128), sum_nmse(3 * 128));

}  // namespace ds4
