// Q8_K activations on the device (catalog §3 "Q8_K activation quantization"), shared by quant_k.cpp
// and moe.cpp. Device layout (three buffers, like quantize_q8_0's two): q int8[n], d f32[n/256]
// (d = 1/iscale), bsums i32[n/16] (sum of each 16 q's; ggml keeps them as int16, the values fit).
#pragma once

#include "ascend_math.h"

namespace ds4 {

constexpr int64_t kQK_K = 256;

// Quantizes one 256-block x into q/d/bsums: the element of largest |x| keeps its sign (max),
// iscale = −127/max, q = clamp(round_ties_even(iscale·x), −128, 127); an all-zero block is all 0.
void q8_k_quantize_block(const Math &m, const float *x, int8_t *q, float *d, int32_t *bsums);

}  // namespace ds4
