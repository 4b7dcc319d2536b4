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

// Scalars k0.. : pos0, base, freq_scale, ext_factor, attn_factor, n_ctx_orig, beta_fast, beta_slow, inverse.
static RopeParams rope_params(const KernelCall &c, int64_t n_rot, int k0) {
  return RopeParams{n_rot, c.i(k0), c.f(k0 + 1), c.f(k0 + 2), c.f(k0 + 3), c.f(k0 + 4),
                    c.d(k0 + 5), c.f(k0 + 6), c.f(k0 + 7), c.i(k0 + 8) != 0};
}

// YaRN correction dim: n_rot·ln(n_ctx_orig/(β·2π)) / (2·ln base).
static float yarn_corr_dim(const RopeParams &p, float beta) {
  return (float)p.n_rot * std::log((float)p.n_ctx_orig / (beta * 2.0f * (float)M_PI)) / (2.0f * std::log(p.base));
}

// table[(t·n_rot/2 + j)·2 + {0,1}] = {cos θ, ±sin θ}·mscale for token t at position pos0 + t.
// Dense layers: ext_factor 0 → θ = freq_scale·θ_extrap. Compressed layers: YaRN blend between θ_extrap
// (pairs j ≤ lo) and θ_extrap·freq_scale (j ≥ hi); mscale = attn_factor·(1 + 0.1·ln(1/freq_scale)),
// which ds4 makes ≈ 1 by passing attn_factor = 1/(1 + 0.1·ln 16).
static void build_rope_table(const KernelCall &c, float *table, int64_t n_tok, const RopeParams &p) {
  const int64_t half = p.n_rot / 2;
  float lo = 0.0f, hi = 0.0f;
  if (p.ext_factor != 0.0f) {
    lo = std::fmax(0.0f, std::floor(yarn_corr_dim(p, p.beta_fast)));
    hi = std::fmin((float)(p.n_rot - 1), std::ceil(yarn_corr_dim(p, p.beta_slow)));
  }
  c.for_each_index(n_tok * half, [&](int64_t gid) {
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

// x0' = x0·c − x1·s, x1' = x0·s + x1·c on every (token, head, pair); one pair per index.
static void rotate_tails(const KernelCall &c, float *x, const float *table, int64_t n_tok, int64_t n_head,
                         int64_t head_dim, int64_t n_rot) {
  const int64_t half = n_rot / 2, nope = head_dim - n_rot;
  c.for_each_index(n_tok * n_head * half, [&](int64_t gid) {
    const int64_t j = gid % half, h = (gid / half) % n_head, t = gid / (half * n_head);
    const float cs = table[(t * half + j) * 2], sn = table[(t * half + j) * 2 + 1];
    float *pair = x + (t * n_head + h) * head_dim + nope + 2 * j;
    const float x0 = pair[0], x1 = pair[1];
    pair[0] = x0 * cs - x1 * sn;
    pair[1] = x0 * sn + x1 * cs;
  });
}

static void check_rot(const KernelCall &c, int64_t head_dim, int64_t n_rot) {
  if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim)
    c.fail("n_rot " + std::to_string(n_rot) + " must be even and ≤ head_dim " + std::to_string(head_dim));
}

static void rope_table(const KernelCall &c) {
  const int64_t n_tok = c.i(0), n_rot = c.i(1);
  check_rot(c, n_rot, n_rot);
  build_rope_table(c, c.out<float>(0, 0, n_tok * n_rot), n_tok, rope_params(c, n_rot, 2));
}
DS4_KERNEL("rope_table", rope_table,
           "bufs: table f32[n_tok*n_rot] (cos,sin pairs); scalars: n_tok, n_rot, pos0, freq_base, freq_scale, "
           "ext_factor, attn_factor, n_ctx_orig, beta_fast, beta_slow, inverse(0|1)",
           "");

static void rope_tail_table(const KernelCall &c) {
  const int64_t n_tok = c.i(0), n_head = c.i(1), head_dim = c.i(2), n_rot = c.i(3);
  check_rot(c, head_dim, n_rot);
  const float *table = c.in<float>(1, 0, n_tok * n_rot);
  rotate_tails(c, c.inout<float>(0, 0, n_tok * n_head * head_dim), table, n_tok, n_head, head_dim, n_rot);
}
DS4_KERNEL("rope_tail_table", rope_tail_table,
           "bufs: x f32[n_tok*n_head*head_dim] (in place), table f32[n_tok*n_rot] (rope_table); "
           "scalars: n_tok, n_head, head_dim, n_rot",
           "q_rope,kv_rope,attn_heads_back");

// Both steps in one launch: the table lives in the kernel's own scratch, so it cannot be freed early.
static void rope_tail(const KernelCall &c) {
  const int64_t n_tok = c.i(0), n_head = c.i(1), head_dim = c.i(2), n_rot = c.i(3);
  check_rot(c, head_dim, n_rot);
  std::vector<float> table(n_tok * n_rot);
  build_rope_table(c, table.data(), n_tok, rope_params(c, n_rot, 4));
  rotate_tails(c, c.inout<float>(0, 0, n_tok * n_head * head_dim), table.data(), n_tok, n_head, head_dim, n_rot);
}
DS4_KERNEL("rope_tail", rope_tail,
           "bufs: x f32[n_tok*n_head*head_dim] (in place); scalars: n_tok, n_head, head_dim, n_rot, pos0, freq_base, "
           "freq_scale, ext_factor, attn_factor, n_ctx_orig, beta_fast, beta_slow, inverse(0|1)",
           "q_rope,kv_rope,attn_heads_back");

}  // namespace ds4
