// KV cache kernels (catalog §3 FP8 KV, §4 S6): ds4_fp8_kv_quantize and ds4_store_raw_kv_batch.
#include <vector>

#include "ascend_math.h"

namespace ds4 {

// In place on the first head_dim − n_rot dims of every row, in 64-wide blocks: scale = 2^ceil(log2(
// max(amax,1e-4)/448)), x ← e4m3fn(clamp(x/scale, ±448))·scale. The RoPE tail is untouched.
// One block per index (part p owns blocks ≡ p mod parts).
static void fp8_kv_quantize(const KernelCall &c) {
  const int64_t n_tok = c.i(0), head_dim = c.i(1), n_rot = c.i(2);
  const int64_t nope = head_dim - n_rot, per_row = (nope + 63) / 64;
  float *x = c.inout<float>(0, 0, n_tok * head_dim);
  c.for_each_index(n_tok * per_row, [&](int64_t gid) {
    const int64_t t = gid / per_row, off = (gid % per_row) * 64;
    const int64_t len = nope - off < 64 ? nope - off : 64;
    float *blk = x + t * head_dim + off;
    float amax = 0.0f;
    for (int64_t i = 0; i < len; i++) amax = std::fmax(amax, std::fabs(blk[i]));
    const float scale = fp8_pow2_scale(amax);
    for (int64_t i = 0; i < len; i++) {
      const float v = std::fmin(448.0f, std::fmax(-448.0f, blk[i] / scale));
      blk[i] = e4m3fn_round_trip(v) * scale;
    }
  });
}
DS4_KERNEL("fp8_kv_quantize", fp8_kv_quantize,
           "bufs: x f32[n_tok*head_dim] (in place); scalars: n_tok, head_dim, n_rot. FP8 E4M3 round trip of the non-RoPE dims",
           "kv_cur");

// raw[(pos0 + t) mod raw_cap][d] = f16_round(kv[t][d]). The device cache is a ring indexed by
// position (ds4.c memmoves a sliding window instead; the visible rows are the same). The f16 store
// rounds half-up on the dropped bits in ascend mode (ascend_math.h), RNE in exact mode.
static void store_raw_kv(const KernelCall &c) {
  const int64_t raw_cap = c.i(0), pos0 = c.i(1), n_tok = c.i(2), head_dim = c.i(3);
  const float *kv = c.in<float>(1, 0, n_tok * head_dim);
  if (raw_cap <= 0) c.fail("raw_cap must be > 0");
  std::vector<float *> rows(n_tok);  // only the rows written are declared (sanitizer, byte stats)
  for (int64_t t = 0; t < n_tok; t++) rows[t] = c.out<float>(0, ((pos0 + t) % raw_cap) * head_dim, head_dim);
  const Math m(c);
  c.for_each_index(n_tok * head_dim, [&](int64_t gid) {
    const int64_t t = gid / head_dim, d = gid % head_dim;
    rows[t][d] = m.f16_round(kv[gid]);
  });
}
DS4_KERNEL("store_raw_kv", store_raw_kv,
           "bufs: raw f32[raw_cap*head_dim] (ring), kv f32[n_tok*head_dim]; scalars: raw_cap, pos0, n_tok, head_dim",
           "raw_cache");

}  // namespace ds4
