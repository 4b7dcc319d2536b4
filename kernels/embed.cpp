// S0 embedding → HC state: ds4_embed_token_hc / ds4_embed_tokens_hc (catalog §4 S0, ds4.c
// embed_token_f16 + hc_from_plain_embedding): the token's F16 row, widened to f32, copied into every
// one of the n_hc residual streams.
#include "ascend_math.h"

namespace ds4 {

static void embed_rows_hc(const KernelCall &c, const uint16_t *table, const int32_t *tokens, int64_t n_tok,
                          int64_t n_vocab, int64_t n_embd, int64_t n_hc) {
  for (int64_t t = 0; t < n_tok; t++)
    if (tokens[t] < 0 || tokens[t] >= n_vocab)
      c.fail("token id " + std::to_string(tokens[t]) + " outside the vocabulary (" + std::to_string(n_vocab) + ")");
  float *out = c.out<float>(0, 0, n_tok * n_hc * n_embd);
  c.for_each_index(n_tok * n_hc * n_embd, [&](int64_t gid) {
    const int64_t d = gid % n_embd, t = gid / (n_hc * n_embd);
    out[gid] = f16_to_f32(table[tokens[t] * n_embd + d]);
  });
}

static void embed_token_hc(const KernelCall &c) {
  const int32_t token = (int32_t)c.i(0);
  const int64_t n_embd = c.i(1), n_hc = c.i(2);
  const int64_t n_vocab = (int64_t)(c.bytes(1) / (2 * n_embd));
  if (token < 0 || token >= n_vocab) c.fail("token id " + std::to_string(token) + " outside the vocabulary");
  const uint16_t *row = c.in<uint16_t>(1, token * n_embd, n_embd);
  embed_rows_hc(c, row - token * n_embd, &token, 1, n_vocab, n_embd, n_hc);
}
DS4_KERNEL("embed_token_hc", embed_token_hc,
           "bufs: out f32[n_hc*n_embd], token_embd f16[n_vocab*n_embd]; scalars: token, n_embd, n_hc", "embed_hc");

// The AscendC kernel maps an out-of-range token id to 0 silently; the simulator fails the launch
// instead, since a bad id is always an orchestration bug worth reporting.
static void embed_tokens_hc(const KernelCall &c) {
  const int64_t n_vocab = c.i(0), n_tok = c.i(1), n_embd = c.i(2), n_hc = c.i(3);
  const int32_t *tokens = c.in<int32_t>(1, 0, n_tok);
  const uint16_t *table = c.in<uint16_t>(2, 0, n_vocab * n_embd);
  embed_rows_hc(c, table, tokens, n_tok, n_vocab, n_embd, n_hc);
}
DS4_KERNEL("embed_tokens_hc", embed_tokens_hc,
           "bufs: out f32[n_tok*n_hc*n_embd], tokens i32[n_tok], token_embd f16[n_vocab*n_embd]; "
           "scalars: n_vocab, n_tok, n_embd, n_hc",
           "embed_hc");

}  // namespace ds4
