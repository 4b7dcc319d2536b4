// Elementwise kernels: ds4_fill_f32 and ds4_add_f32 (catalog §10), and a stream-ordered device-to-device
// copy (what ds4-ascend does with aclrtMemcpyAsync DEVICE_TO_DEVICE).
#include <cstring>

#include "ascend_math.h"

namespace ds4 {

// out[i] = value for i < count. ds4-ascend launches fill once (no parts split); the result is the
// same either way, so it runs as one part here too.
static void fill_f32(const KernelCall &c) {
  const float value = c.f(0);
  const int64_t count = c.i(1);
  float *out = c.out<float>(0, 0, count);
  for (int64_t i = 0; i < count; i++) out[i] = value;
}
DS4_KERNEL("fill", fill_f32, "bufs: out f32[count]; scalars: value, count. out = value", "");

// out[i] = a[i] + b[i]; out may alias a or b.
static void add_f32(const KernelCall &c) {
  const int64_t n = c.i(0);
  const float *a = c.in<float>(1, 0, n);
  const float *b = c.in<float>(2, 0, n);
  float *out = c.out<float>(0, 0, n);
  c.for_each_index(n, [&](int64_t i) { out[i] = a[i] + b[i]; });
}
DS4_KERNEL("add", add_f32, "bufs: out f32[n], a f32[n], b f32[n]; scalars: n. out = a + b", "ffn_out");

// dst[dst_off .. dst_off+n) = src[src_off .. src_off+n), bytes; the ranges may be in one buffer but must
// not overlap.
static void copy_bytes(const KernelCall &c) {
  const int64_t dst_off = c.i(0), src_off = c.i(1), n = c.i(2);
  const uint8_t *src = c.in<uint8_t>(1, src_off, n);
  uint8_t *dst = c.out<uint8_t>(0, dst_off, n);
  if (c.bufs[0].id == c.bufs[1].id && dst_off < src_off + n && src_off < dst_off + n) c.fail("overlapping copy");
  std::memcpy(dst, src, n);
}
DS4_KERNEL("copy", copy_bytes, "bufs: dst, src; scalars: dst_offset, src_offset, bytes (device-to-device copy)", "");

// Diagnostic: one ascend_math.h function elementwise, in the launch's math mode, so the approximations
// themselves can be checked and shown (fn: 0 exp, 1 rsqrt, 2 sqrt, 3 log, 4 sigmoid, 5 silu, 6 softplus,
// 7 f16 store rounding).
static void math_probe(const KernelCall &c) {
  const int64_t fn = c.i(0), n = c.i(1);
  if (fn < 0 || fn > 7) c.fail("fn must be 0..7");
  const float *x = c.in<float>(1, 0, n);
  float *out = c.out<float>(0, 0, n);
  const Math m(c);
  c.for_each_index(n, [&](int64_t i) {
    const float v = x[i];
    switch (fn) {
      case 0: out[i] = m.exp(v); break;
      case 1: out[i] = m.rsqrt(v); break;
      case 2: out[i] = m.sqrt(v); break;
      case 3: out[i] = m.log(v); break;
      case 4: out[i] = m.sigmoid(v); break;
      case 5: out[i] = m.silu(v); break;
      case 6: out[i] = m.softplus(v); break;
      default: out[i] = m.f16_round(v); break;
    }
  });
}
DS4_KERNEL("math_probe", math_probe,
           "bufs: out f32[n], x f32[n]; scalars: fn (0 exp, 1 rsqrt, 2 sqrt, 3 log, 4 sigmoid, 5 silu, 6 softplus, "
           "7 f16 store), n. Diagnostic: the device math in the launch's mode",
           "");

}  // namespace ds4
