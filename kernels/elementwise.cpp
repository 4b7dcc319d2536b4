// Elementwise kernels: ds4_fill_f32 and ds4_add_f32 (catalog §10), and a stream-ordered device-to-device
// copy (what ds4-ascend does with aclrtMemcpyAsync DEVICE_TO_DEVICE).
#include <cstring>

#include "ascend_math.h"

namespace ds4 {

// out[i] = value for i < count. ds4-ascend launches fill once (no parts split); the result is the
// same either way, so it runs as one part here too.
static void fill_f32(const KernelCall &c) {
  const float value = c.f("value");
  const int64_t count = c.i("count");
  float *out = c.out<float>("out");
  for (int64_t i = 0; i < count; i++) out[i] = value;
}
DS4_KERNEL("fill", fill_f32)
    .describe("out = value")
    .takes("value, count")
    .buffers("out out f32[count]")
    .max_nmse(0, 0);

// out[i] = a[i] + b[i]; out may alias a or b.
static void add_f32(const KernelCall &c) {
  const float *a = c.in<float>("a"), *b = c.in<float>("b");
  float *out = c.out<float>("out");
  c.for_each_index(c.i("n"), [&](int64_t i) { out[i] = a[i] + b[i]; });
}
// budget: one f32 add, as the host's
DS4_KERNEL("add", add_f32)
    .describe("out = a + b")
    .takes("n")
    .buffers("out out f32[n]; in a f32[n]; in b f32[n]")
    .produces("ffn_out")
    .max_nmse(0, 0);

// dst[dst_off .. dst_off+n) = src[src_off .. src_off+n), bytes; the ranges may be in one buffer but must
// not overlap.
static void copy_bytes(const KernelCall &c) {
  const int64_t dst_off = c.i("dst_offset"), src_off = c.i("src_offset"), n = c.i("bytes");
  const uint8_t *src = c.in<uint8_t>("src");
  uint8_t *dst = c.out<uint8_t>("dst");
  if (c.handle("dst") == c.handle("src") && dst_off < src_off + n && src_off < dst_off + n) c.fail("overlapping copy");
  std::memcpy(dst, src, n);
}
DS4_KERNEL("copy", copy_bytes)
    .describe("device-to-device copy of bytes (aclrtMemcpyAsync DEVICE_TO_DEVICE)")
    .takes("dst_offset, src_offset, bytes")
    .buffers("out dst u8[bytes] @ dst_offset; in src u8[bytes] @ src_offset")
    .max_nmse(0, 0);

// Diagnostic: one ascend_math.h function elementwise, in the launch's math mode, so the approximations
// themselves can be checked and shown (fn: 0 exp, 1 rsqrt, 2 sqrt, 3 log, 4 sigmoid, 5 silu, 6 softplus,
// 7 f16 store rounding).
static void math_probe(const KernelCall &c) {
  const int64_t fn = c.i("fn");
  if (fn < 0 || fn > 7) c.fail("fn must be 0..7");
  const float *x = c.in<float>("x");
  float *out = c.out<float>("out");
  const Math m(c);
  c.for_each_index(c.i("n"), [&](int64_t i) {
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
// budget, for the probe's domain |x| ≤ 4 (x > 0 for rsqrt, sqrt, log): exp's error at |x| = 4 bounds
// every function built on it and dominates rsqrt (4e-7), log (2.5e-7 absolute) and the f16 ties
// (2^-10); exact: libm's float functions and the host's double ones rounded once, a few ulps apart
DS4_KERNEL("math_probe", math_probe)
    .describe("one device math function elementwise (fn: 0 exp, 1 rsqrt, 2 sqrt, 3 log, 4 sigmoid, 5 silu, "
              "6 softplus, 7 f16 store), diagnostic")
    .takes("fn, n")
    .buffers("out out f32[n]; in x f32[n]")
    .uses("exp rsqrt sqrt log f16")
    .max_nmse(rel_nmse(exp_rel(4)), rel_nmse(4 * kU));

}  // namespace ds4
