// The KV compressor on the device (catalog S7/S8, §10 ds4_compressor_set_rows / _update_pool /
// _shift_ratio4): a rolling state of projected kv rows and score rows per layer and lane; when a
// window of `ratio` tokens closes, each output dim is a softmax-weighted pool over the window.
// Ratio-4 layers keep two lanes (coff = 2): state rows 0..3 hold the previous window, rows 4..7 the
// current one; dims [0, dim) pool from rows 0..3, dims [dim, 2·dim) of rows 4..7 (ds4.c
// compressor_pool_decode_state). The emitted row then goes through rms_norm_weight, rope_tail and
// fp8_kv_quantize (attention lane) or indexer_qat (indexer lane) — separate kernels.
#include "ascend_math.h"

namespace ds4 {

constexpr float kNegInf = -1.0e30f;  // ds4.c DS4_NEG_INF: the score of an empty state row

// Writes token pos's projections into its state row: kv as is, score + ape[pos mod ratio] (ape is
// [ratio][width], F32 or F16 as stored). score is updated in place so the captured attn_comp_score
// includes ape, as ds4.c's does. The state row of pos is ratio + pos mod 4 (ratio 4) or pos mod ratio.
static void compressor_set_rows(const KernelCall &c) {
  const int64_t width = c.i("width");
  float *skv = c.out<float>("state_kv"), *ssc = c.out<float>("state_score"), *sc = c.out<float>("score");
  const float *kv = c.in<float>("kv");
  if (c.flag("ape_is_f16")) {
    const uint16_t *ape = c.in<uint16_t>("ape");
    for (int64_t j = 0; j < width; j++) sc[j] += f16_to_f32(ape[j]);
  } else {
    const float *ape = c.in<float>("ape");
    for (int64_t j = 0; j < width; j++) sc[j] += ape[j];
  }
  for (int64_t j = 0; j < width; j++) {
    skv[j] = kv[j];
    ssc[j] = sc[j];
  }
}
// budget: one f32 add, as the host's
DS4_KERNEL("compressor_set_rows", compressor_set_rows)
    .describe("store token pos's kv and score (+ the ape row of pos mod ratio, in place) into its state row")
    .takes("width, ratio, pos, ape_is_f16")
    .buffers("out state_kv f32[width] @ ((ratio==4)*ratio+pos%ratio)*width; "
             "out state_score f32[width] @ ((ratio==4)*ratio+pos%ratio)*width; in kv f32[width]; inout score f32[width]; "
             "weight ape u8[width*(4-2*ape_is_f16)] @ (pos%ratio)*width*(4-2*ape_is_f16)")
    .produces("attn_comp_score,index_comp_score")
    .max_nmse(0, 0);

// Pools the closed window: per output dim j, m = max score over the candidates; an all-empty dim is 0;
// otherwise Σ e^{s−m}·kv / Σ e^{s−m}, where (ratio 4) the two lanes' weights of one window slot are
// added together before joining the denominator. Part p owns dims j ≡ p (mod parts).
static void compressor_update_pool(const KernelCall &c) {
  const int64_t dim = c.i("dim"), ratio = c.i("ratio");
  const int64_t coff = ratio == 4 ? 2 : 1, width = coff * dim;
  float *out = c.out<float>("row");
  const float *kv = c.in<float>("state_kv"), *sc = c.in<float>("state_score");
  const Math m(c);
  c.for_each_index(dim, [&](int64_t j) {
    // candidate k: (ratio 4) slot i lane 0 = row i col j, lane 1 = row ratio+i col dim+j
    auto at = [&](int64_t i, int64_t lane) { return lane == 0 ? i * width + j : (ratio + i) * width + dim + j; };
    float mx = kNegInf;
    for (int64_t i = 0; i < ratio; i++)
      for (int64_t l = 0; l < coff; l++) mx = std::fmax(mx, sc[at(i, l)]);
    if (mx <= kNegInf * 0.5f) { out[j] = 0.0f; return; }
    float den = 0.0f, sum = 0.0f;
    for (int64_t i = 0; i < ratio; i++) {
      float slot = 0.0f;
      for (int64_t l = 0; l < coff; l++) {
        const float w = m.exp(sc[at(i, l)] - mx);
        slot = l == 0 ? w : slot + w;
        sum += w * kv[at(i, l)];
      }
      den += slot;
    }
    out[j] = den > 0.0f ? sum / den : 0.0f;
  });
}
// budget: ascend: a softmax over up to 128 candidates (ratio 128; ratio 4 has 8); exact: two sums of up
// to 128 terms in the host's order
DS4_KERNEL("compressor_update_pool", compressor_update_pool)
    .describe("softmax pool of the closed window into one row (coff = 2 lanes on ratio 4)")
    .takes("dim, ratio")
    .buffers("out row f32[dim]; in state_kv f32[(1+(ratio==4))*(1+(ratio==4))*ratio*dim]; "
             "in state_score f32[(1+(ratio==4))*(1+(ratio==4))*ratio*dim]")
    .produces("attn_comp_row,index_comp_row")
    .uses("exp")
    .max_nmse(rel_nmse(softmax_rel(128) + 16 * kU), rel_nmse(16 * kU + 4 * kU));

// Ratio 4: the closed window's rows 4..7 become rows 0..3 (the next window's lane-A source).
static void compressor_shift_ratio4(const KernelCall &c) {
  const int64_t width = c.i("width");
  float *kv = c.out<float>("state_kv"), *sc = c.out<float>("state_score");
  for (int64_t i = 0; i < 4 * width; i++) {
    kv[i] = kv[4 * width + i];
    sc[i] = sc[4 * width + i];
  }
}
DS4_KERNEL("compressor_shift_ratio4", compressor_shift_ratio4)
    .describe("ratio-4 compressor state: rows 4..7 move to rows 0..3, in place")
    .takes("width")
    .buffers("inout state_kv f32[8*width]; inout state_score f32[8*width]")
    .produces("attn_comp_row,index_comp_row")
    .max_nmse(0, 0);

}  // namespace ds4
