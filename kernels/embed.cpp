// S0 embedding → HC state: ds4_embed_token_hc / ds4_embed_tokens_hc (catalog §4 S0, ds4.c
// embed_token_f16 + hc_from_plain_embedding): the token's F16 row, widened to f32, copied into every
// one of the n_hc residual streams.
#include "ascend_math.h"

namespace ds4 {

// out[t][h][d] = f32(table[tokens[t]][d]) for every stream h.
static void embed_rows_hc(const KernelCall &c, const uint16_t *table, const int32_t *tokens, int64_t n_tok,
                          int64_t n_vocab) {
  const int64_t n_embd = c.i("n_embd"), n_hc = c.i("n_hc");
  for (int64_t t = 0; t < n_tok; t++)
    if (tokens[t] < 0 || tokens[t] >= n_vocab)
      c.fail("token id " + std::to_string(tokens[t]) + " outside the vocabulary (" + std::to_string(n_vocab) + ")");
  float *out = c.out<float>("out");
  c.for_each_index(n_tok * n_hc * n_embd, [&](int64_t gid) {
    const int64_t d = gid % n_embd, t = gid / (n_hc * n_embd);
    out[gid] = f16_to_f32(table[tokens[t] * n_embd + d]);
  });
}

// The table span is the token's row only; its bounds come from the allocation.
static void embed_token_hc(const KernelCall &c) {
  const int32_t token = (int32_t)c.i("token");
  const int64_t n_embd = c.i("n_embd"), n_vocab = (int64_t)(c.bytes("token_embd") / (2 * n_embd));
  if (token < 0 || token >= n_vocab) c.fail("token id " + std::to_string(token) + " outside the vocabulary");
  embed_rows_hc(c, c.in<uint16_t>("token_embd") - token * n_embd, &token, 1, n_vocab);
}
// budget: f16 → f32 is exact
DS4_KERNEL("embed_token_hc", embed_token_hc)
    .describe("one token's F16 embedding row, widened to f32, in every HC stream")
    .takes("token, n_embd, n_hc")
    .buffers("out out f32[n_hc*n_embd]; weight token_embd f16[n_embd] @ token*n_embd")
    .produces("embed_hc")
    .max_nmse(0, 0);

// The AscendC kernel maps an out-of-range token id to 0 silently; the simulator fails the launch
// instead, since a bad id is always an orchestration bug worth reporting.
static void embed_tokens_hc(const KernelCall &c) {
  embed_rows_hc(c, c.in<uint16_t>("token_embd"), c.in<int32_t>("tokens"), c.i("n_tok"), c.i("n_vocab"));
}
DS4_KERNEL("embed_tokens_hc", embed_tokens_hc)
    .describe("a batch of tokens' F16 embedding rows, widened to f32, in every HC stream (the prefill pass)")
    .takes("n_vocab, n_tok, n_embd, n_hc")
    .buffers("out out f32[n_tok*n_hc*n_embd]; in tokens i32[n_tok]; weight token_embd f16[n_vocab*n_embd]")
    .produces("embed_hc")
    .max_nmse(0, 0);

}  // namespace ds4
