// Dense projections: ds4_matmul_f16, ds4_quantize_q8_0, ds4_matmul_q8_0_prequant, ds4_matmul_q8_0
// (catalog §3 "F16 matvec" / "Q8_0 matvec", §10). Every output element is one row·vector product
// reduced serially in column order by the part that owns it (part p owns gid ≡ p mod parts,
// gid = t·out_dim + r), as the AscendC scalar loops do.
#include <vector>

#include "q8_0.h"

namespace ds4 {

const float *f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; h++) t[h] = f16_to_f32((uint16_t)h);
    return t;
  }();
  return table.data();
}

// y = W·x, W F16 [out_dim × in_dim] row-major, f32 products accumulated in f32 in column order.
// A part walks its outputs four at a time: four independent serial sums interleaved (same order per
// output, so the same bits) keep the FP adder busy instead of waiting on one dependency chain.
static void matmul_f16(const KernelCall &c) {
  const int64_t in_dim = c.i("in_dim"), out_dim = c.i("out_dim");
  const uint16_t *w = c.in<uint16_t>("w");
  const float *x = c.in<float>("x");
  float *out = c.out<float>("out");
  const float *h2f = f16_table();
  const int64_t total = c.i("n_tok") * out_dim, np = c.parts;
  c.run_parts([&](int p) {
    for (int64_t g0 = p; g0 < total; g0 += 4 * np) {
      const uint16_t *w16[4];
      const float *xt[4];
      int64_t gid[4];
      int n = 0;
      for (; n < 4 && g0 + n * np < total; n++) {
        gid[n] = g0 + n * np;
        w16[n] = w + (gid[n] % out_dim) * in_dim;
        xt[n] = x + (gid[n] / out_dim) * in_dim;
      }
      float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (n == 4) {
        for (int64_t k = 0; k < in_dim; k++) {
          sum[0] += h2f[w16[0][k]] * xt[0][k];
          sum[1] += h2f[w16[1][k]] * xt[1][k];
          sum[2] += h2f[w16[2][k]] * xt[2][k];
          sum[3] += h2f[w16[3][k]] * xt[3][k];
        }
      } else {
        for (int j = 0; j < n; j++)
          for (int64_t k = 0; k < in_dim; k++) sum[j] += h2f[w16[j][k]] * xt[j][k];
      }
      for (int j = 0; j < n; j++) out[gid[j]] = sum[j];
    }
  });
}
// budget: one f32 product and add per column, rows up to n_hc·n_embd = 16384 long (hc_*_fn, output_hc_fn)
DS4_KERNEL("matmul_f16", matmul_f16)
    .describe("y = W·x with an F16 weight, f32 products summed in column order")
    .takes("in_dim, out_dim, n_tok")
    .buffers("out out f32[n_tok*out_dim]; weight w f16[out_dim*in_dim]; in x f32[n_tok*in_dim]")
    .produces("hc_attn_mix,hc_ffn_mix,attn_comp_kv,attn_comp_score,index_comp_kv,index_comp_score,index_q,index_w,"
              "router_logits,out_hc_pre")
    .max_nmse(sum_nmse(2 * 16384), sum_nmse(2 * 16384));

// Activations are quantized into two device buffers, as ds4_quantize_q8_0 does: xq int8 [n_tok][blocks·32]
// and xscale f32 [n_tok][blocks] (a float scale, like ds4.c's quantize_q8_0_activation).
int64_t q8_0_blocks(const KernelCall &c, int64_t in_dim) {
  if (in_dim % kQK8_0 != 0) c.fail("in_dim " + std::to_string(in_dim) + " is not a multiple of 32 (Q8_0 blocks)");
  return in_dim / kQK8_0;
}

// One 32-block: d = amax/127, q = clamp(round(x·(1/d)), −128, 127), ties-to-even (ds4.c
// quantize_q8_0_activation; ds4-ascend 7f1d55b rounds the same way).
static void quantize_block_q8_0(const Math &m, const float *x, int8_t *q, float *d) {
  float amax = 0.0f;
  for (int64_t i = 0; i < kQK8_0; i++) amax = std::fmax(amax, std::fabs(x[i]));
  const float dx = amax / 127.0f;
  const float inv = dx != 0.0f ? 1.0f / dx : 0.0f;
  for (int64_t i = 0; i < kQK8_0; i++) {
    int32_t v = m.round_i32(x[i] * inv);
    q[i] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
  }
  *d = dx;
}

void q8_0_quantize_rows(const KernelCall &c, const float *x, int8_t *q, float *d, int64_t n_tok, int64_t nb) {
  const Math m(c);
  c.for_each_index(n_tok * nb, [&](int64_t b) { quantize_block_q8_0(m, x + b * kQK8_0, q + b * kQK8_0, d + b); });
}

static void quantize_q8_0(const KernelCall &c) {
  q8_0_quantize_rows(c, c.in<float>("x"), c.out<int8_t>("xq"), c.out<float>("xscale"), c.i("n_tok"),
                     q8_0_blocks(c, c.i("in_dim")));
}
// budget: the host makes the same three f32 operations per element (amax/127, 1/d, x·(1/d)) and the same
// ties-to-even rounding, so codes and scales are identical
DS4_KERNEL("quantize_q8_0", quantize_q8_0)
    .describe("Q8_0 activations: per 32-block d = amax/127, q = round-half-even(x/d), clamped")
    .takes("in_dim, n_tok")
    .buffers("out xq i8[n_tok*in_dim]; out xscale f32[n_tok*in_dim/32]; in x f32[n_tok*in_dim] q8_0")
    .produces("shared_mid,attn_low")
    .uses("round")
    .max_nmse(0, 0);

// Up to four weight rows (nb blocks each) · their activation rows: per block the int8·int8 dot (an exact
// integer, so any lane order gives the device's value: the loop vectorises per clone), accumulated in f32
// in block order — four independent sums interleaved, each in its own order, so the same bits as one.
DS4_VECTOR_CLONES
static void q8_0_rows(const uint8_t *const wr[4], const int8_t *const qt[4], const float *const dt[4], int n, int64_t nb,
                      const float *h2f, float acc[4]) {
  for (int j = 0; j < 4; j++) acc[j] = 0.0f;
  for (int64_t b = 0; b < nb; b++) {
    for (int j = 0; j < n; j++) {
      const uint8_t *blk = wr[j] + b * kQ8_0BlockBytes;
      const int8_t *wq = reinterpret_cast<const int8_t *>(blk + 2), *xq = qt[j] + b * kQK8_0;
      int32_t dot = 0;
      for (int i = 0; i < kQK8_0; i++) dot += (int32_t)wq[i] * (int32_t)xq[i];
      const float dw = h2f[(uint16_t)(blk[0] | (blk[1] << 8))];
      acc[j] += dw * dt[j][b] * (float)dot;
    }
  }
}

void q8_0_matmul_rows(const KernelCall &c, const uint8_t *w, const int8_t *q, const float *d, float *out, int64_t nb,
                      int64_t out_dim, int64_t n_tok, int64_t n_groups) {
  const float *h2f = f16_table();
  c.for_each_index_group<4>(n_tok * out_dim, [&](const int64_t *gid, int n) {
    const uint8_t *wr[4];
    const int8_t *qt[4];
    const float *dt[4];
    float acc[4];
    for (int j = 0; j < n; j++) {
      const int64_t t = gid[j] / out_dim, r = gid[j] % out_dim;
      wr[j] = w + ((t % n_groups) * out_dim + r) * nb * kQ8_0BlockBytes;
      qt[j] = q + t * nb * kQK8_0;
      dt[j] = d + t * nb;
    }
    q8_0_rows(wr, qt, dt, n, nb, h2f, acc);
    for (int j = 0; j < n; j++) out[gid[j]] = acc[j];
  });
}

// The two dense Q8_0 projections differ only in where the activation codes come from.
static void q8_0_project(const KernelCall &c, const int8_t *q, const float *d) {
  q8_0_matmul_rows(c, c.in<uint8_t>("w"), q, d, c.out<float>("out"), q8_0_blocks(c, c.i("in_dim")), c.i("out_dim"),
                   c.i("n_tok"), 1);
}

static void matmul_q8_0_prequant(const KernelCall &c) { q8_0_project(c, c.in<int8_t>("xq"), c.in<float>("xscale")); }
// budget: integer block dots are exact; two f32 products and one add per 32-block, rows up to
// n_groups·o_lora_rank = 8192 long (attn_output_b): 256 blocks
DS4_KERNEL("matmul_q8_0_prequant", matmul_q8_0_prequant)
    .describe("y = W·x with a Q8_0 weight and an activation quantized by quantize_q8_0")
    .takes("in_dim, out_dim, n_tok")
    .buffers("out out f32[n_tok*out_dim]; weight w q8_0[out_dim*in_dim]; in xq i8[n_tok*in_dim]; in xscale f32[n_tok*in_dim/32]")
    .produces("shared_mid")
    .max_nmse(sum_nmse(3 * 256), sum_nmse(3 * 256));

// The inline-quantizing variant. The AscendC kernel re-quantizes the activation block inside every
// output row; quantization is a pure function of the block, so quantizing once per launch gives the
// same numbers.
static void matmul_q8_0(const KernelCall &c) {
  const int64_t n = c.i("n_tok") * c.i("in_dim");
  std::vector<int8_t> q(n);
  std::vector<float> d(n / kQK8_0);
  q8_0_quantize_rows(c, c.in<float>("x"), q.data(), d.data(), c.i("n_tok"), q8_0_blocks(c, c.i("in_dim")));
  q8_0_project(c, q.data(), d.data());
}
// budget: as matmul_q8_0_prequant (the quantization is quantize_q8_0's, identical to the host's)
DS4_KERNEL("matmul_q8_0", matmul_q8_0)
    .describe("y = W·x with a Q8_0 weight, the f32 activation quantized to Q8_0 inside the kernel")
    .takes("in_dim, out_dim, n_tok")
    .buffers("out out f32[n_tok*out_dim]; weight w q8_0[out_dim*in_dim]; in x f32[n_tok*in_dim] q8_0")
    .produces("q_lora,q_raw,kv_raw,attn_out,shared_out,logits")
    .uses("round")
    .max_nmse(sum_nmse(3 * 256), sum_nmse(3 * 256));

}  // namespace ds4
