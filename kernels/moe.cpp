// Router and routed/shared experts (catalog §3, S14–S16, §10): ds4_router_select, ds4_moe_gate_up_mid_iq2_q8,
// ds4_moe_down_q2_q8, ds4_moe_sum_experts, ds4_swiglu. Activations come in as Q8_K (quant_k.cpp) and
// every weight·activation product is an integer dot of int8 codes, as ds4.c's vec_dot_*_q8_K do.
//
// Expert weights: a weight buffer holds whole experts back to back (n_rows rows per expert, ggml
// block rows); an i32 `slot` buffer says which expert of that buffer selected slot k uses. The
// orchestrator passes either the selected expert ids (the whole tensor on the device) or indices into
// its expert cache buffer (ds4-ascend's expert cache) — the kernel only sees slots.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "q8_k.h"

namespace ds4 {

// ---------------------------------------------------------------- IQ2_XXS tables
// iq2xxs_grid: 256 points of 8 magnitudes (bytes 0x08/0x19/0x2b), little-endian byte j = element j.
// Fact table from ggml (ggml-common.h `iq2xxs_grid`, MIT licence, also in antirez/ds4 ds4.c).
static const uint64_t kIq2xxsGrid[256] = {
    0x0808080808080808ull, 0x080808080808082bull, 0x0808080808081919ull, 0x0808080808082b08ull,
    0x0808080808082b2bull, 0x0808080808190819ull, 0x0808080808191908ull, 0x08080808082b0808ull,
    0x08080808082b082bull, 0x08080808082b2b08ull, 0x08080808082b2b2bull, 0x0808080819080819ull,
    0x0808080819081908ull, 0x0808080819190808ull, 0x0808080819192b08ull, 0x08080808192b0819ull,
    0x08080808192b1908ull, 0x080808082b080808ull, 0x080808082b08082bull, 0x080808082b082b2bull,
    0x080808082b2b082bull, 0x0808081908080819ull, 0x0808081908081908ull, 0x0808081908190808ull,
    0x0808081908191919ull, 0x0808081919080808ull, 0x080808192b081908ull, 0x080808192b192b08ull,
    0x0808082b08080808ull, 0x0808082b0808082bull, 0x0808082b082b082bull, 0x0808082b2b08082bull,
    0x0808190808080819ull, 0x0808190808081908ull, 0x0808190808190808ull, 0x08081908082b0819ull,
    0x08081908082b1908ull, 0x0808190819080808ull, 0x080819081908082bull, 0x0808190819082b08ull,
    0x08081908192b0808ull, 0x080819082b080819ull, 0x080819082b081908ull, 0x080819082b190808ull,
    0x080819082b2b1908ull, 0x0808191908080808ull, 0x080819190808082bull, 0x0808191908082b08ull,
    0x08081919082b0808ull, 0x080819191908192bull, 0x08081919192b2b19ull, 0x080819192b080808ull,
    0x080819192b190819ull, 0x0808192b08082b19ull, 0x0808192b08190808ull, 0x0808192b19080808ull,
    0x0808192b2b081908ull, 0x0808192b2b2b1908ull, 0x08082b0808080808ull, 0x08082b0808081919ull,
    0x08082b0808082b08ull, 0x08082b0808191908ull, 0x08082b08082b2b08ull, 0x08082b0819080819ull,
    0x08082b0819081908ull, 0x08082b0819190808ull, 0x08082b081919082bull, 0x08082b082b082b08ull,
    0x08082b1908081908ull, 0x08082b1919080808ull, 0x08082b2b0808082bull, 0x08082b2b08191908ull,
    0x0819080808080819ull, 0x0819080808081908ull, 0x0819080808190808ull, 0x08190808082b0819ull,
    0x0819080819080808ull, 0x08190808192b0808ull, 0x081908082b081908ull, 0x081908082b190808ull,
    0x081908082b191919ull, 0x0819081908080808ull, 0x0819081908082b08ull, 0x08190819082b0808ull,
    0x0819081919190808ull, 0x0819081919192b2bull, 0x081908192b080808ull, 0x0819082b082b1908ull,
    0x0819082b19081919ull, 0x0819190808080808ull, 0x0819190808082b08ull, 0x08191908082b0808ull,
    0x08191908082b1919ull, 0x0819190819082b19ull, 0x081919082b080808ull, 0x0819191908192b08ull,
    0x08191919192b082bull, 0x0819192b08080808ull, 0x0819192b0819192bull, 0x08192b0808080819ull,
    0x08192b0808081908ull, 0x08192b0808190808ull, 0x08192b0819080808ull, 0x08192b082b080819ull,
    0x08192b1908080808ull, 0x08192b1908081919ull, 0x08192b192b2b0808ull, 0x08192b2b19190819ull,
    0x082b080808080808ull, 0x082b08080808082bull, 0x082b080808082b2bull, 0x082b080819081908ull,
    0x082b0808192b0819ull, 0x082b08082b080808ull, 0x082b08082b08082bull, 0x082b0819082b2b19ull,
    0x082b081919082b08ull, 0x082b082b08080808ull, 0x082b082b0808082bull, 0x082b190808080819ull,
    0x082b190808081908ull, 0x082b190808190808ull, 0x082b190819080808ull, 0x082b19081919192bull,
    0x082b191908080808ull, 0x082b191919080819ull, 0x082b1919192b1908ull, 0x082b192b2b190808ull,
    0x082b2b0808082b08ull, 0x082b2b08082b0808ull, 0x082b2b082b191908ull, 0x082b2b2b19081908ull,
    0x1908080808080819ull, 0x1908080808081908ull, 0x1908080808190808ull, 0x1908080808192b08ull,
    0x19080808082b0819ull, 0x19080808082b1908ull, 0x1908080819080808ull, 0x1908080819082b08ull,
    0x190808081919192bull, 0x19080808192b0808ull, 0x190808082b080819ull, 0x190808082b081908ull,
    0x190808082b190808ull, 0x1908081908080808ull, 0x19080819082b0808ull, 0x19080819192b0819ull,
    0x190808192b080808ull, 0x190808192b081919ull, 0x1908082b08080819ull, 0x1908082b08190808ull,
    0x1908082b19082b08ull, 0x1908082b1919192bull, 0x1908082b192b2b08ull, 0x1908190808080808ull,
    0x1908190808082b08ull, 0x19081908082b0808ull, 0x190819082b080808ull, 0x190819082b192b19ull,
    0x190819190819082bull, 0x19081919082b1908ull, 0x1908192b08080808ull, 0x19082b0808080819ull,
    0x19082b0808081908ull, 0x19082b0808190808ull, 0x19082b0819080808ull, 0x19082b0819081919ull,
    0x19082b1908080808ull, 0x19082b1919192b08ull, 0x19082b19192b0819ull, 0x19082b192b08082bull,
    0x19082b2b19081919ull, 0x19082b2b2b190808ull, 0x1919080808080808ull, 0x1919080808082b08ull,
    0x1919080808190819ull, 0x1919080808192b19ull, 0x19190808082b0808ull, 0x191908082b080808ull,
    0x191908082b082b08ull, 0x1919081908081908ull, 0x191908191908082bull, 0x191908192b2b1908ull,
    0x1919082b2b190819ull, 0x191919082b190808ull, 0x191919082b19082bull, 0x1919191908082b2bull,
    0x1919192b08080819ull, 0x1919192b19191908ull, 0x19192b0808080808ull, 0x19192b0808190819ull,
    0x19192b0808192b19ull, 0x19192b08192b1908ull, 0x19192b1919080808ull, 0x19192b2b08082b08ull,
    0x192b080808081908ull, 0x192b080808190808ull, 0x192b080819080808ull, 0x192b0808192b2b08ull,
    0x192b081908080808ull, 0x192b081919191919ull, 0x192b082b08192b08ull, 0x192b082b192b0808ull,
    0x192b190808080808ull, 0x192b190808081919ull, 0x192b191908190808ull, 0x192b19190819082bull,
    0x192b19192b081908ull, 0x192b2b081908082bull, 0x2b08080808080808ull, 0x2b0808080808082bull,
    0x2b08080808082b2bull, 0x2b08080819080819ull, 0x2b0808082b08082bull, 0x2b08081908081908ull,
    0x2b08081908192b08ull, 0x2b08081919080808ull, 0x2b08082b08190819ull, 0x2b08190808080819ull,
    0x2b08190808081908ull, 0x2b08190808190808ull, 0x2b08190808191919ull, 0x2b08190819080808ull,
    0x2b081908192b0808ull, 0x2b08191908080808ull, 0x2b0819191908192bull, 0x2b0819192b191908ull,
    0x2b08192b08082b19ull, 0x2b08192b19080808ull, 0x2b08192b192b0808ull, 0x2b082b080808082bull,
    0x2b082b1908081908ull, 0x2b082b2b08190819ull, 0x2b19080808081908ull, 0x2b19080808190808ull,
    0x2b190808082b1908ull, 0x2b19080819080808ull, 0x2b1908082b2b0819ull, 0x2b1908190819192bull,
    0x2b1908192b080808ull, 0x2b19082b19081919ull, 0x2b19190808080808ull, 0x2b191908082b082bull,
    0x2b19190819081908ull, 0x2b19191919190819ull, 0x2b192b082b080819ull, 0x2b192b19082b0808ull,
    0x2b2b08080808082bull, 0x2b2b080819190808ull, 0x2b2b08082b081919ull, 0x2b2b081908082b19ull,
    0x2b2b082b08080808ull, 0x2b2b190808192b08ull, 0x2b2b2b0819190808ull, 0x2b2b2b1908081908ull,
};

// ggml's ksigns_iq2xs: a 7-bit sign index s gives 8 sign bits s | parity(s)<<7 (the 8th sign makes
// the count of negatives even), so the table is computed, not stored.
static int8_t iq2_sign_of(uint32_t s7, int j) {
  const uint32_t bits = s7 | ((uint32_t)(__builtin_popcount(s7) & 1) << 7);
  return (bits >> j) & 1u ? -1 : 1;
}

constexpr int64_t kIq2xxsBlockBytes = 66;  // f16 d + 32 × u16 (ggml block_iq2_xxs)

// The eight signed values of grid point g under sign index s, for every (g, s): 256 KB, built once, so a
// row's 8-value groups are one table read each instead of eight sign lookups.
static const int8_t *iq2_signed_grid() {
  static const std::vector<int8_t> table = [] {
    std::vector<int8_t> t(256 * 128 * 8);
    for (uint32_t g = 0; g < 256; g++)
      for (uint32_t s7 = 0; s7 < 128; s7++)
        for (int j = 0; j < 8; j++) t[(g * 128 + s7) * 8 + j] = (int8_t)((int)((kIq2xxsGrid[g] >> (8 * j)) & 0xffu) * iq2_sign_of(s7, j));
    return t;
  }();
  return table.data();
}
constexpr int64_t kQ2KBlockBytes = 84;     // 16 scale bytes + 64 q bytes + f16 d + f16 dmin (block_q2_K)

static uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t load_u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

// int32 dot of n int8 pairs: a plain loop g++ -O3 turns into pmaddwd/vpdpbusd-style vector code.
static int32_t dot_i8(const int8_t *a, const int8_t *b, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; i++) s += (int32_t)a[i] * (int32_t)b[i];
  return s;
}

// One IQ2_XXS row (nb 256-blocks) · Q8_K activation. Per 32-element sub-block: two u32 words, the
// first holds 4 grid indices, the second 4 × 7-bit sign indices and a 4-bit scale ls = 2·(aux>>28)+1;
// the block value is f16(d_w)·d_x·Σ ls·dot, and the row total ×1/8 (ggml's 0.125 factor).
DS4_VECTOR_CLONES
static float dot_iq2xxs_q8k(const uint8_t *w, const int8_t *q, const float *d, int64_t nb, const float *h2f) {
  const int8_t *table = iq2_signed_grid();
  float sum = 0.0f;
  int8_t signed_grid[32];
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *blk = w + b * kIq2xxsBlockBytes;
    const uint8_t *qs = blk + 2;
    int32_t bsum = 0;
    for (int ib = 0; ib < 8; ib++) {
      const uint32_t idx = load_u32(qs + 8 * ib), aux = load_u32(qs + 8 * ib + 4);
      for (int l = 0; l < 4; l++)
        std::memcpy(signed_grid + 8 * l, table + (((idx >> (8 * l)) & 0xffu) * 128 + ((aux >> (7 * l)) & 127u)) * 8, 8);
      const int32_t ls = 2 * (int32_t)(aux >> 28) + 1;
      bsum += ls * dot_i8(signed_grid, q + b * kQK_K + 32 * ib, 32);
    }
    sum += h2f[load_u16(blk)] * d[b] * (float)bsum;
  }
  return 0.125f * sum;
}

// One Q2_K row · Q8_K activation (ggml semantics): 16 sub-blocks of 16, scale nibble sc&15 and min
// nibble sc>>4; value = f16(d)·d_x·Σ (sc&15)·dot(q2, q8) − f16(dmin)·d_x·Σ (sc>>4)·bsum.
// q2 layout: byte qs[32·h + l] holds elements 128·h + 32·j + l in bits 2j..2j+1 (j = 0..3).
DS4_VECTOR_CLONES
static float dot_q2k_q8k(const uint8_t *w, const int8_t *q, const float *d, const int32_t *bsums, int64_t nb,
                         const float *h2f) {
  float sum = 0.0f;
  int8_t codes[kQK_K];
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *blk = w + b * kQ2KBlockBytes;
    const uint8_t *sc = blk, *qs = blk + 16;
    for (int h = 0; h < 2; h++)
      for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) codes[128 * h + 32 * j + l] = (int8_t)((qs[32 * h + l] >> (2 * j)) & 3);
    int32_t isum = 0, summs = 0;
    for (int s = 0; s < 16; s++) {
      isum += (int32_t)(sc[s] & 15) * dot_i8(codes + 16 * s, q + b * kQK_K + 16 * s, 16);
      summs += (int32_t)(sc[s] >> 4) * bsums[b * 16 + s];
    }
    const float dall = d[b] * h2f[load_u16(blk + 80)], dmin = d[b] * h2f[load_u16(blk + 82)];
    sum += dall * (float)isum - dmin * (float)summs;
  }
  return sum;
}

const float *f16_table();  // matmul.cpp

// Declares slot s's expert slice of weight buffer `name` (rows × row_bytes) and returns its address.
static const uint8_t *expert_rows(const KernelCall &c, const char *name, int32_t expert, int64_t rows, int64_t row_bytes) {
  if (expert < 0 || expert >= c.i("n_expert"))
    c.fail("slot names expert " + std::to_string(expert) + " of " + std::to_string(c.i("n_expert")) + " in " + name);
  return c.in<uint8_t>(name, (size_t)expert * rows * row_bytes, rows * row_bytes);
}

// ---------------------------------------------------------------- router
// S14: p_e = sqrt(softplus(logit_e)) (Ascend: sqrt = x·rsqrt, softplus through the approximate
// exp/log); selection: hash layers take tid2eid[token] (no bias), others the top-k of p_e + bias_e by
// insertion with strict > (ties → lower index), ordered by descending score; weights
// w_k = p_sel / max(Σ p_sel, 2⁻¹⁴) · scale with the unbiased p.
static void router_select(const KernelCall &c) {
  const int64_t n_exp = c.i("n_exp"), k = c.i("k");
  if (k < 1 || k > n_exp || k > 64) c.fail("k " + std::to_string(k) + " out of range for " + std::to_string(n_exp) + " experts");
  float *probs = c.out<float>("probs"), *wts = c.out<float>("weights");
  int32_t *sel = c.out<int32_t>("selected");
  const float *logits = c.in<float>("logits");
  const Math m(c);
  for (int64_t e = 0; e < n_exp; e++) probs[e] = m.sqrt(m.softplus(logits[e]));
  if (c.flag("use_hash")) {
    const int32_t *row = c.in<int32_t>("tid2eid");
    for (int64_t s = 0; s < k; s++) {
      if (row[s] < 0 || row[s] >= n_exp) c.fail("tid2eid[" + std::to_string(c.i("token")) + "] names expert " + std::to_string(row[s]));
      sel[s] = row[s];
    }
  } else {
    const float *bias = c.flag("has_bias") ? c.in<float>("bias") : nullptr;
    float best[64];
    int64_t n = 0;
    for (int64_t e = 0; e < n_exp; e++) {
      const float score = probs[e] + (bias ? bias[e] : 0.0f);
      int64_t at = n;  // insertion point: after every kept score ≥ this one
      while (at > 0 && score > best[at - 1]) at--;
      if (at >= k) continue;
      for (int64_t t = std::min(n, k - 1); t > at; t--) { best[t] = best[t - 1]; sel[t] = sel[t - 1]; }
      best[at] = score;
      sel[at] = (int32_t)e;
      if (n < k) n++;
    }
  }
  float sum = 0.0f;
  for (int64_t s = 0; s < k; s++) sum += probs[sel[s]];
  const float denom = std::max(sum, 6.103515625e-5f);  // 2^-14
  const float scale = c.f("scale");
  for (int64_t s = 0; s < k; s++) wts[s] = probs[sel[s]] / denom * scale;
}
// budget, for logits in [−4, 20]: softplus through the approximate exp is off by ≤ x/4096 + kExpRound
// relative for x ≥ 1 and by exp_rel(4) below (the log's truncation adds 2.5e-7/softplus(−4) = 1.4e-5),
// sqrt halves it and adds rsqrt's error; the weights divide two such probabilities; exact: a few
// roundings per probability, a sum of k for the weights. Selections must be identical (scores separated
// by more than that).
DS4_KERNEL("router_select", router_select)
    .describe("router: sqrt(softplus) probabilities, hash (tid2eid row of token) or biased top-k selection, normalized weights")
    .takes("n_exp, k, token, has_bias, use_hash, scale")
    .buffers("out probs f32[n_exp]; out selected i32[k]; out weights f32[k]; in logits f32[n_exp]; "
             "weight bias f32[has_bias*n_exp]; weight tid2eid i32[use_hash*k] @ token*k")
    .produces("router_probs,router_topk,router_w")
    .uses("exp log sqrt")
    .max_nmse(rel_nmse(20.0 / 4096 + kExpRound + kLogAbs / 0.018 + 2 * kRsqrt), rel_nmse(10 * kU));

// ---------------------------------------------------------------- routed gate/up/mid
// S15: for slot k, row r: g = min(IQ2·xq, clamp), u = clamp(IQ2·xq, ±clamp), mid = silu(g)·u·w_k
// (router weight applied before down). Part p owns gid = k·n_ff + r ≡ p (mod parts).
static void moe_gate_up_mid_iq2_q8(const KernelCall &c) {
  const int64_t in_dim = c.i("in_dim"), n_ff = c.i("n_ff"), k = c.i("k");
  const float lim = c.f("clamp");
  if (in_dim % kQK_K != 0) c.fail("in_dim " + std::to_string(in_dim) + " is not a multiple of 256");
  const int64_t nb = in_dim / kQK_K, row_bytes = nb * kIq2xxsBlockBytes;
  float *gate = c.out<float>("gate"), *up = c.out<float>("up"), *mid = c.out<float>("mid");
  const int8_t *xq = c.in<int8_t>("xq");
  const float *xd = c.in<float>("xd"), *rw = c.in<float>("router_w");
  const int32_t *slot = c.in<int32_t>("slot");
  std::vector<const uint8_t *> gw(k), uw(k);
  for (int64_t s = 0; s < k; s++) {
    gw[s] = expert_rows(c, "gate_w", slot[s], n_ff, row_bytes);
    uw[s] = expert_rows(c, "up_w", slot[s], n_ff, row_bytes);
  }
  const Math m(c);
  const float *h2f = f16_table();
  c.for_each_index(k * n_ff, [&](int64_t gid) {
    const int64_t s = gid / n_ff, r = gid % n_ff;
    const float g = std::min(dot_iq2xxs_q8k(gw[s] + r * row_bytes, xq, xd, nb, h2f), lim);
    const float u = std::clamp(dot_iq2xxs_q8k(uw[s] + r * row_bytes, xq, xd, nb, h2f), -lim, lim);
    gate[gid] = g;
    up[gid] = u;
    mid[gid] = m.silu(g) * u * rw[s];
  });
}
// budget: IQ2_XXS·Q8_K block dots are exact integers, then two products and an add per 256-block
// (in_dim = 4096: 16 blocks); mid adds silu (ascend: kSigmoid for gates ≥ −4) and two products
DS4_KERNEL("moe_gate_up_mid_iq2_q8", moe_gate_up_mid_iq2_q8)
    .describe("routed experts' gate and up (IQ2_XXS·Q8_K dots), clamps, mid = silu(gate)·up·router weight")
    .takes("in_dim, n_ff, k, clamp, n_expert")
    .buffers("out gate f32[k*n_ff]; out up f32[k*n_ff]; out mid f32[k*n_ff]; "
             "weight gate_w iq2_xxs[n_expert*n_ff*in_dim] experts; weight up_w iq2_xxs[n_expert*n_ff*in_dim] experts; "
             "in xq i8[in_dim]; in xd f32[in_dim/256]; in router_w f32[k]; in slot i32[k]")
    .produces("moe_gate,moe_up,moe_mid")
    .uses("exp")
    .max_nmse(rel_nmse(kSigmoid + 7 * kU + 4 * kU), rel_nmse(7 * kU + 6 * kU));

// ---------------------------------------------------------------- routed down
// down[k·n_embd + d] = Q2_K row d of expert slot k · Q8_K(mid_k).
static void moe_down_q2_q8(const KernelCall &c) {
  const int64_t n_ff = c.i("n_ff"), n_embd = c.i("n_embd"), k = c.i("k");
  if (n_ff % kQK_K != 0) c.fail("n_ff " + std::to_string(n_ff) + " is not a multiple of 256");
  const int64_t nb = n_ff / kQK_K, row_bytes = nb * kQ2KBlockBytes;
  float *down = c.out<float>("down");
  const int8_t *mq = c.in<int8_t>("midq");
  const float *md = c.in<float>("midd");
  const int32_t *mbs = c.in<int32_t>("midbs"), *slot = c.in<int32_t>("slot");
  std::vector<const uint8_t *> dw(k);
  for (int64_t s = 0; s < k; s++) dw[s] = expert_rows(c, "down_w", slot[s], n_embd, row_bytes);
  const float *h2f = f16_table();
  c.for_each_index(k * n_embd, [&](int64_t gid) {
    const int64_t s = gid / n_embd, r = gid % n_embd;
    down[gid] = dot_q2k_q8k(dw[s] + r * row_bytes, mq + s * n_ff, md + s * nb, mbs + s * nb * 16, nb, h2f);
  });
}
// budget: Q2_K·Q8_K block dots are exact integers, then ~4 roundings per 256-block (n_ff = 2048: 8 blocks)
DS4_KERNEL("moe_down_q2_q8", moe_down_q2_q8)
    .describe("routed experts' down projection: Q2_K·Q8_K dots per slot")
    .takes("n_ff, n_embd, k, n_expert")
    .buffers("out down f32[k*n_embd]; weight down_w q2_k[n_expert*n_embd*n_ff] experts; in midq i8[k*n_ff]; "
             "in midd f32[k*n_ff/256]; in midbs i32[k*n_ff/16]; in slot i32[k]")
    .produces("moe_down")
    .max_nmse(sum_nmse(4 * 8), sum_nmse(4 * 8));

// out[d] = Σ_k down[k·n_embd + d], summed in slot order (ds4.c layer_routed_moe_one_prealloc).
static void moe_sum_experts(const KernelCall &c) {
  const int64_t n_embd = c.i("n_embd"), k = c.i("k");
  float *out = c.out<float>("out");
  const float *down = c.in<float>("down");
  c.for_each_index(n_embd, [&](int64_t d) {
    float s = 0.0f;
    for (int64_t j = 0; j < k; j++) s += down[j * n_embd + d];
    out[d] = s;
  });
}
// budget: a sum of k = 6 in slot order
DS4_KERNEL("moe_sum_experts", moe_sum_experts)
    .describe("out = Σ_k down[k], slots in order")
    .takes("n_embd, k")
    .buffers("out out f32[n_embd]; in down f32[k*n_embd]")
    .produces("moe_out")
    .max_nmse(sum_nmse(6), sum_nmse(6));

// S16 shared expert: mid = silu(min(gate, clamp))·clamp(up, ±clamp).
static void swiglu(const KernelCall &c) {
  const float lim = c.f("clamp");
  float *out = c.out<float>("out");
  const float *g = c.in<float>("gate"), *u = c.in<float>("up");
  const Math m(c);
  c.for_each_index(c.i("n"), [&](int64_t i) { out[i] = m.silu(std::min(g[i], lim)) * std::clamp(u[i], -lim, lim); });
}
// budget: ascend: silu of gates ≥ −4 (kSigmoid); exact: expf and four roundings
DS4_KERNEL("swiglu", swiglu)
    .describe("shared expert: silu(min(gate, clamp))·clamp(up, ±clamp)")
    .takes("n, clamp")
    .buffers("out out f32[n]; in gate f32[n]; in up f32[n]")
    .produces("shared_mid")
    .uses("exp")
    .max_nmse(rel_nmse(kSigmoid + 5 * kU), rel_nmse(5 * kU));

}  // namespace ds4
