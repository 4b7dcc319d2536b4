// RMSNorm: ds4_rms_norm_plain / _weight / _inplace (catalog §3 RMSNorm, §10).
// The device sums squares in f32, serially per row (ds4.c sums in double), multiplies by
// inv_n = 1/(float)n and scales by rsqrt(ss·inv_n + eps) — the rsqrt approximation in ascend mode.
// Rows are owned by parts (row ≡ p mod parts).
#include "ascend_math.h"

namespace ds4 {

static float rms_scale(const Math &m, const float *x, int64_t n, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
  const float inv_n = 1.0f / (float)n;
  return m.rsqrt(ss * inv_n + eps);
}

// out = x·scale (·w when w is given), row by row; out may be x (in place).
static void rms_norm_rows(const KernelCall &c, float *out, const float *x, const float *w) {
  const Math m(c);
  const int64_t n = c.i("n");
  const float eps = c.f("eps");
  c.for_each_index(c.i("rows"), [&](int64_t r) {
    const float *xr = x + r * n;
    float *yr = out + r * n;
    const float s = rms_scale(m, xr, n, eps);
    if (w) for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * s * w[i];
    else for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * s;
  });
}

// Budgets (all three): the device sums the n squares in f32, the host (ds4.c) in double: the sum is off
// by ~sqrt(n)·2^-24 relative and the scale by half that; rows up to n_hc·n_embd = 16384 (rms_norm_plain
// of the HC state); then four roundings per element, and in ascend mode the rsqrt approximation.
constexpr double kRmsRel = 128 * kU / 2 + 4 * kU;

static void rms_norm_plain(const KernelCall &c) { rms_norm_rows(c, c.out<float>("out"), c.in<float>("x"), nullptr); }
DS4_KERNEL("rms_norm_plain", rms_norm_plain)
    .describe("out = x·rsqrt(mean(x²) + eps) per row")
    .takes("n, rows, eps")
    .buffers("out out f32[rows*n]; in x f32[rows*n]")
    .produces("hc_attn_mix,hc_ffn_mix,out_hc_pre")
    .uses("rsqrt")
    .max_nmse(rel_nmse(kRmsRel + kRsqrt), rel_nmse(kRmsRel));

static void rms_norm_weight(const KernelCall &c) {
  rms_norm_rows(c, c.out<float>("out"), c.in<float>("x"), c.in<float>("w"));
}
DS4_KERNEL("rms_norm_weight", rms_norm_weight)
    .describe("out = x·rsqrt(mean(x²) + eps)·w per row")
    .takes("n, rows, eps")
    .buffers("out out f32[rows*n]; in x f32[rows*n]; weight w f32[n]")
    .produces("attn_norm,q_lora_norm,kv_norm,ffn_norm,out_norm,attn_comp_row,index_comp_row")
    .uses("rsqrt")
    .max_nmse(rel_nmse(kRmsRel + kRsqrt), rel_nmse(kRmsRel));

static void rms_norm_inplace(const KernelCall &c) {
  float *x = c.out<float>("x");
  rms_norm_rows(c, x, x, nullptr);
}
DS4_KERNEL("rms_norm_inplace", rms_norm_inplace)
    .describe("x = x·rsqrt(mean(x²) + eps) per row, in place (the per-head Q norm)")
    .takes("n, rows, eps")
    .buffers("inout x f32[rows*n]")
    .produces("q_norm")
    .uses("rsqrt")
    .max_nmse(rel_nmse(kRmsRel + kRsqrt), rel_nmse(kRmsRel));

}  // namespace ds4
