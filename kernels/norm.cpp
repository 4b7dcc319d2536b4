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
static void rms_norm_rows(const KernelCall &c, float *out, const float *x, const float *w, int64_t n, int64_t rows,
                          float eps) {
  const Math m(c);
  c.for_each_index(rows, [&](int64_t r) {
    const float *xr = x + r * n;
    float *yr = out + r * n;
    const float s = rms_scale(m, xr, n, eps);
    if (w) for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * s * w[i];
    else for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * s;
  });
}

static void rms_norm_plain(const KernelCall &c) {
  const int64_t n = c.i(0), rows = c.i(1);
  const float *x = c.in<float>(1, 0, n * rows);
  rms_norm_rows(c, c.out<float>(0, 0, n * rows), x, nullptr, n, rows, c.f(2));
}
DS4_KERNEL("rms_norm_plain", rms_norm_plain,
           "bufs: out f32[rows*n], x f32[rows*n]; scalars: n, rows, eps. out = x·rsqrt(mean(x²)+eps)",
           "");

static void rms_norm_weight(const KernelCall &c) {
  const int64_t n = c.i(0), rows = c.i(1);
  const float *x = c.in<float>(1, 0, n * rows);
  const float *w = c.in<float>(2, 0, n);
  rms_norm_rows(c, c.out<float>(0, 0, n * rows), x, w, n, rows, c.f(2));
}
DS4_KERNEL("rms_norm_weight", rms_norm_weight,
           "bufs: out f32[rows*n], x f32[rows*n], w f32[n]; scalars: n, rows, eps. out = x·rsqrt(mean(x²)+eps)·w",
           "attn_norm,q_lora_norm,kv_norm,ffn_norm,out_norm");

static void rms_norm_inplace(const KernelCall &c) {
  const int64_t n = c.i(0), rows = c.i(1);
  float *x = c.inout<float>(0, 0, n * rows);
  rms_norm_rows(c, x, x, nullptr, n, rows, c.f(2));
}
DS4_KERNEL("rms_norm_inplace", rms_norm_inplace,
           "bufs: x f32[rows*n] (in place); scalars: n, rows, eps. x = x·rsqrt(mean(x²)+eps) per row (per-head Q norm)",
           "q_norm");

}  // namespace ds4
