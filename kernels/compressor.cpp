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
// [ratio][width], F32 or F16 as stored). score_cur is updated in place so the captured
// attn_comp_score includes ape, as ds4.c's does.
static void compressor_set_rows(const KernelCall &c) {
  const int64_t width = c.i(0), ratio = c.i(1), pos = c.i(2);
  const bool ape_f16 = c.i(3) != 0;
  const int64_t pm = pos % ratio, row = ratio == 4 ? ratio + pm : pm;
  float *skv = c.inout<float>(0, row * width, width);
  float *ssc = c.inout<float>(1, row * width, width);
  const float *kv = c.in<float>(2, 0, width);
  float *sc = c.inout<float>(3, 0, width);
  if (ape_f16) {
    const uint16_t *ape = c.in<uint16_t>(4, pm * width, width);
    for (int64_t j = 0; j < width; j++) sc[j] += f16_to_f32(ape[j]);
  } else {
    const float *ape = c.in<float>(4, pm * width, width);
    for (int64_t j = 0; j < width; j++) sc[j] += ape[j];
  }
  for (int64_t j = 0; j < width; j++) {
    skv[j] = kv[j];
    ssc[j] = sc[j];
  }
}
DS4_KERNEL("compressor_set_rows", compressor_set_rows,
           "bufs: state_kv f32[coff*ratio*width], state_score f32[coff*ratio*width], kv f32[width], score f32[width] (+= ape row, in place), "
           "ape f32|f16[ratio*width]; scalars: width, ratio, pos, ape_is_f16",
           "attn_comp_score,index_comp_score");

// Pools the closed window: per output dim j, m = max score over the candidates; an all-empty dim is 0;
// otherwise Σ e^{s−m}·kv / Σ e^{s−m}, where (ratio 4) the two lanes' weights of one window slot are
// added together before joining the denominator. Part p owns dims j ≡ p (mod parts).
static void compressor_update_pool(const KernelCall &c) {
  const int64_t dim = c.i(0), ratio = c.i(1);
  const int64_t coff = ratio == 4 ? 2 : 1, width = coff * dim, rows = coff * ratio;
  float *out = c.out<float>(0, 0, dim);
  const float *kv = c.in<float>(1, 0, rows * width);
  const float *sc = c.in<float>(2, 0, rows * width);
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
DS4_KERNEL("compressor_update_pool", compressor_update_pool,
           "bufs: row f32[dim], state_kv f32[coff*ratio*width], state_score f32[coff*ratio*width]; scalars: dim, ratio. "
           "Softmax pool of the closed window (coff = 2 lanes on ratio 4)",
           "attn_comp_row,index_comp_row");

// Ratio 4: the closed window's rows 4..7 become rows 0..3 (the next window's lane-A source).
static void compressor_shift_ratio4(const KernelCall &c) {
  const int64_t width = c.i(0);
  float *kv = c.inout<float>(0, 0, 8 * width);
  float *sc = c.inout<float>(1, 0, 8 * width);
  for (int64_t i = 0; i < 4 * width; i++) {
    kv[i] = kv[4 * width + i];
    sc[i] = sc[4 * width + i];
  }
}
DS4_KERNEL("compressor_shift_ratio4", compressor_shift_ratio4,
           "bufs: state_kv f32[8*width], state_score f32[8*width] (in place); scalars: width. rows 4..7 → 0..3", "");

}  // namespace ds4
