// KV cache kernels (catalog §3 FP8 KV, §4 S6): ds4_fp8_kv_quantize and ds4_store_raw_kv_batch.
#include <vector>

#include "ascend_math.h"

namespace ds4 {

// In place on the first head_dim − n_rot dims of every row, in 64-wide blocks: scale = 2^ceil(log2(
// max(amax,1e-4)/448)), x ← e4m3fn(clamp(x/scale, ±448))·scale. The RoPE tail is untouched.
// One block per index (part p owns blocks ≡ p mod parts).
static void fp8_kv_quantize(const KernelCall &c) {
  const int64_t head_dim = c.i("head_dim"), nope = head_dim - c.i("n_rot"), per_row = (nope + 63) / 64;
  float *x = c.out<float>("x");
  c.for_each_index(c.i("n_tok") * per_row, [&](int64_t gid) {
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
// budget: the same power-of-two scale and E4M3 nearest-even rounding as the host: identical
DS4_KERNEL("fp8_kv_quantize", fp8_kv_quantize)
    .describe("FP8 E4M3 round trip of the non-RoPE dims in 64-blocks with a power-of-two scale, in place")
    .takes("n_tok, head_dim, n_rot")
    .buffers("inout x f32[n_tok*head_dim]")
    .produces("kv_cur,raw_cache,attn_comp_row")
    .max_nmse(0, 0);

// raw[(pos0 + t) mod raw_cap][d] = f16_round(kv[t][d]). The device cache is a ring indexed by
// position (ds4.c memmoves a sliding window instead; the visible rows are the same). The f16 store
// rounds half-up on the dropped bits in ascend mode (ascend_math.h), RNE in exact mode.
static void store_raw_kv(const KernelCall &c) {
  const int64_t raw_cap = c.i("raw_cap"), pos0 = c.i("pos0"), n_tok = c.i("n_tok"), head_dim = c.i("head_dim");
  const float *kv = c.in<float>("kv");
  if (raw_cap <= 0) c.fail("raw_cap must be > 0");
  std::vector<float *> rows(n_tok);  // only the rows written are declared (sanitizer, byte stats)
  for (int64_t t = 0; t < n_tok; t++) rows[t] = c.out<float>("raw", ((pos0 + t) % raw_cap) * head_dim, head_dim);
  const Math m(c);
  c.for_each_index(n_tok * head_dim, [&](int64_t gid) {
    const int64_t t = gid / head_dim, d = gid % head_dim;
    rows[t][d] = m.f16_round(kv[gid]);
  });
}
// budget: exact: RNE like the host; ascend: half-up differs from RNE by one f16 ulp on exact ties only
DS4_KERNEL("store_raw_kv", store_raw_kv)
    .describe("store n_tok rows f16-rounded into a ring of raw_cap rows at positions pos0.. (store_raw_kv_batch)")
    .takes("raw_cap, pos0, n_tok, head_dim")
    .buffers("out raw f32[n_tok*head_dim] @ pos0*head_dim ring(raw_cap*head_dim); in kv f32[n_tok*head_dim]")
    .produces("kv_cur,raw_cache,attn_comp_row,index_comp_row")
    .uses("f16")
    .max_nmse(rel_nmse(kF16Ulp), 0);

}  // namespace ds4
