// RoPE on the head tail (catalog §4 S5/S10): ds4_rope_tail_table and the cos/sin table it reads.
// Rotates adjacent pairs (x[nope+2j], x[nope+2j+1]) of the last n_rot dims of every head.
// ds4-ascend builds the table with θ_j = pos·base^(−2j/n_rot) computed directly (powf), where ds4.c
// multiplies by base^(−2/n_rot) repeatedly — a small, deliberate difference at large pos·j (catalog §9).
// cos/sin themselves are exact libm calls in both math modes (the table is host-built on ds4-ascend).
#include <vector>

#include "ascend_math.h"

namespace ds4 {

struct RopeParams {
  int64_t n_rot, pos0;
  float base, freq_scale, ext_factor, attn_factor;
  double n_ctx_orig;
  float beta_fast, beta_slow;
  bool inverse;
};

// The table's scalars, read by name (rope_table and rope_tail take the same ones).
static RopeParams rope_params(const KernelCall &c) {
  return RopeParams{c.i("n_rot"), c.i("pos0"), c.f("freq_base"), c.f("freq_scale"), c.f("ext_factor"), c.f("attn_factor"),
                    c.d("n_ctx_orig"), c.f("beta_fast"), c.f("beta_slow"), c.flag("inverse")};
}

// YaRN correction dim: n_rot·ln(n_ctx_orig/(β·2π)) / (2·ln base).
static float yarn_corr_dim(const RopeParams &p, float beta) {
  return (float)p.n_rot * std::log((float)p.n_ctx_orig / (beta * 2.0f * (float)M_PI)) / (2.0f * std::log(p.base));
}

// table[(t·n_rot/2 + j)·2 + {0,1}] = {cos θ, ±sin θ}·mscale for token t at position pos0 + t.
// Dense layers: ext_factor 0 → θ = freq_scale·θ_extrap. Compressed layers: YaRN blend between θ_extrap
// (pairs j ≤ lo) and θ_extrap·freq_scale (j ≥ hi); mscale = attn_factor·(1 + 0.1·ln(1/freq_scale)),
// which ds4 makes ≈ 1 by passing attn_factor = 1/(1 + 0.1·ln 16).
static void build_rope_table(const KernelCall &c, float *table, const RopeParams &p) {
  const int64_t half = p.n_rot / 2;
  float lo = 0.0f, hi = 0.0f;
  if (p.ext_factor != 0.0f) {
    lo = std::fmax(0.0f, std::floor(yarn_corr_dim(p, p.beta_fast)));
    hi = std::fmin((float)(p.n_rot - 1), std::ceil(yarn_corr_dim(p, p.beta_slow)));
  }
  c.for_each_index(c.i("n_tok") * half, [&](int64_t gid) {
    const int64_t t = gid / half, j = gid % half;
    const float theta_extrap = (float)(p.pos0 + t) * std::pow(p.base, -2.0f * (float)j / (float)p.n_rot);
    float theta = p.freq_scale * theta_extrap, mscale = p.attn_factor;
    if (p.ext_factor != 0.0f) {
      const float y = ((float)j - lo) / std::fmax(0.001f, hi - lo);
      const float ramp = (1.0f - std::fmin(1.0f, std::fmax(0.0f, y))) * p.ext_factor;
      theta = theta * (1.0f - ramp) + theta_extrap * ramp;
      mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
    }
    table[2 * gid] = std::cos(theta) * mscale;
    table[2 * gid + 1] = (p.inverse ? -1.0f : 1.0f) * std::sin(theta) * mscale;
  });
}

// x0' = x0·c − x1·s, x1' = x0·s + x1·c on every (token, head, pair); one pair per index. Pair j is
// (x[nope+2j], x[nope+2j+1]); the planted pairs-halves fault rotates (x[nope+j], x[nope+j+half]) instead
// (the NeoX layout: the classic RoPE port bug).
static void rotate_tails(const KernelCall &c, float *x, const float *table) {
  const int64_t n_head = c.i("n_head"), head_dim = c.i("head_dim"), n_rot = c.i("n_rot");
  const int64_t half = n_rot / 2, nope = head_dim - n_rot;
  const bool halves = c.fault(kFaultPairsHalves);
  c.for_each_index(c.i("n_tok") * n_head * half, [&](int64_t gid) {
    const int64_t j = gid % half, h = (gid / half) % n_head, t = gid / (half * n_head);
    const float cs = table[(t * half + j) * 2], sn = table[(t * half + j) * 2 + 1];
    float *tail = x + (t * n_head + h) * head_dim + nope;
    float *x0p = halves ? tail + j : tail + 2 * j, *x1p = halves ? tail + j + half : tail + 2 * j + 1;
    const float x0 = *x0p, x1 = *x1p;
    *x0p = x0 * cs - x1 * sn;
    *x1p = x0 * sn + x1 * cs;
  });
}

static void check_rot(const KernelCall &c, int64_t head_dim) {
  const int64_t n_rot = c.i("n_rot");
  if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim)
    c.fail("n_rot " + std::to_string(n_rot) + " must be even and ≤ head_dim " + std::to_string(head_dim));
}

#define DS4_ROPE_TABLE_SCALARS "pos0, freq_base, freq_scale, ext_factor, attn_factor, n_ctx_orig, beta_fast, beta_slow, inverse"

// Budgets: the angles differ from the host's (ds4.c) by kRopeThetaPerPos × pos, which moves each rotated
// value by as much relative to its pair (so the budget grows with the position); cos/sin/mscale and the
// rotation add a few roundings.
static void rope_table(const KernelCall &c) {
  check_rot(c, c.i("n_rot"));
  build_rope_table(c, c.out<float>("table"), rope_params(c));
}
DS4_KERNEL("rope_table", rope_table)
    .describe("the RoPE cos/sin table of n_tok positions from pos0 (ds4-ascend builds it on the host for rope_tail_table; "
              "the prefill pass)")
    .takes("n_tok, n_rot, " DS4_ROPE_TABLE_SCALARS)
    .buffers("out table f32[n_tok*n_rot]")
    .produces("q_rope,kv_rope,attn_heads_back")
    .max_nmse(rel_nmse(4 * kU), rel_nmse(4 * kU))
    .grows_per_pos(kRopeThetaPerPos);

static void rope_tail_table(const KernelCall &c) {
  check_rot(c, c.i("head_dim"));
  rotate_tails(c, c.out<float>("x"), c.in<float>("table"));
}
// budget: the rotation itself, four roundings a pair, as the host's
DS4_KERNEL("rope_tail_table", rope_tail_table)
    .describe("rotate the last n_rot dims of every head by adjacent pairs with a rope_table table, in place "
              "(ds4-ascend's RoPE; the prefill pass)")
    .takes("n_tok, n_head, head_dim, n_rot")
    .buffers("inout x f32[n_tok*n_head*head_dim]; in table f32[n_tok*n_rot]")
    .produces("q_rope,kv_rope,attn_heads_back")
    .uses("rope")
    .max_nmse(sum_nmse(4), sum_nmse(4));

// Both steps in one launch: the table lives in the kernel's own scratch, so it cannot be freed early.
static void rope_tail(const KernelCall &c) {
  check_rot(c, c.i("head_dim"));
  std::vector<float> table(c.i("n_tok") * c.i("n_rot"));
  build_rope_table(c, table.data(), rope_params(c));
  rotate_tails(c, c.out<float>("x"), table.data());
}
DS4_KERNEL("rope_tail", rope_tail)
    .describe("RoPE on the last n_rot dims of every head by adjacent pairs, positions pos0.., in place (table built inside)")
    .takes("n_tok, n_head, head_dim, n_rot, " DS4_ROPE_TABLE_SCALARS)
    .buffers("inout x f32[n_tok*n_head*head_dim]")
    .produces("q_rope,kv_rope,attn_heads_back,index_q,attn_comp_row,index_comp_row")
    .uses("rope")
    .max_nmse(rel_nmse(4 * kU), rel_nmse(4 * kU))
    .grows_per_pos(kRopeThetaPerPos);

}  // namespace ds4
