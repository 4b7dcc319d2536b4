// Q8_0 activation quantization and int8 dot-product rows, shared by matmul.cpp and the grouped
// attention output projection (attention.cpp).
#pragma once

#include "ascend_math.h"

namespace ds4 {

constexpr int64_t kQK8_0 = 32;            // Q8_0 block length (ggml)
constexpr int64_t kQ8_0BlockBytes = 34;   // f16 scale + 32 int8

// Number of 32-blocks in in_dim (fails the launch unless in_dim is a multiple of 32).
int64_t q8_0_blocks(const KernelCall &c, int64_t in_dim);

// Quantizes n_rows·nb consecutive 32-blocks of x into q (int8) and d (f32 scales), parts-strided.
void q8_0_quantize_rows(const KernelCall &c, const float *x, int8_t *q, float *d, int64_t n_rows, int64_t nb);

// out[t·out_dim + r] = Σ_b f16(d_w)·d_x·dot(q_w, q_x) for activation row t (nb blocks) and weight row
// (t mod n_groups)·out_dim + r: n_groups = 1 is a plain matmul; n_groups > 1 is the grouped projection
// where activation row t is group t mod n_groups and uses its own out_dim-row slice of W.
void q8_0_matmul_rows(const KernelCall &c, const uint8_t *w, const int8_t *q, const float *d, float *out, int64_t nb,
                      int64_t out_dim, int64_t n_rows, int64_t n_groups);

// f16 → f32 of all 65536 codes (same values as f16_to_f32), for one-load inner loops.
const float *f16_table();

}  // namespace ds4
