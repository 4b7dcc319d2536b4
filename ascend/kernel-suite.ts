// The kernel suite, in the manner of ggml's test-backend-ops: every device kernel × a few shapes (tiny,
// slices of the real DS4 Flash dimensions, edge sizes) × both kernel maths, run on the simulated device
// and by its host twin (ascend/host.ts) on identical inputs, judged by the kernel's own declared budget
// (kernels/*.cpp .max_nmse): the NMSE Σ(dev − host)² / Σ host² over every buffer it writes. One line
// per case; `ds4-diff kernels --test` and test/kernel-suite.test.ts run it.
import { encodeF16, f16Round, f16ToF32, quantizeQ8_0Weights, synthIQ2_XXS, synthQ2_K } from '../model/quant/index.ts';
import { HostInputs, runTwin } from './host.ts';
import { reads, writes, type BufferSignature, type BufferSpan, type Handles, type KernelCatalog, type Scalars } from './kernels.ts';
import { budgetAt, type MathModeName, type NativeDevice } from './native.ts';

type Rng = () => number;
/** Data of a read buffer's whole allocation (`elems` elements of its dtype). */
type Gen = (elems: number, r: Rng, s: Scalars) => ArrayBufferView;

export interface SuiteCase {
  kernel: string;
  /** what the shape is, for the line */
  label: string;
  scalars: Scalars;
  /** default f32 inputs are uniform in [−range, range] */
  range?: number;
  /** buffers whose data the shape dictates (ids, slots, empty state rows, ties, score spreads) */
  data?: Record<string, Gen>;
}

export interface CaseResult {
  kernel: string;
  label: string;
  shape: string;
  math: MathModeName;
  /** the largest NMSE over the buffers the kernel writes */
  nmse: number;
  budget: number;
  ok: boolean;
  line: string;
}

function lcg(seed: number): Rng {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}
const uniform = (r: Rng, n: number, lo: number, hi: number): Float32Array => Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
const ints = (n: number, f: (i: number) => number): Int32Array => Int32Array.from({ length: n }, (_, i) => f(i));
/** n distinct ids in [0, m), shuffled */
function distinct(r: Rng, n: number, m: number): Int32Array {
  const all = Array.from({ length: m }, (_, i) => i);
  for (let i = m - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return Int32Array.from(all.slice(0, n));
}
/** random f16 values, half of them moved to an exact f16 rounding tie (x + ½ ulp) */
function f16Ties(r: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => {
    const a = f16Round(2 * r() - 1);
    return i % 2 === 0 || a === 0 ? a : Math.fround(a + (f16Round(a * (1 + 2 ** -10)) - a) / 2);
  });
}
/** the RoPE table scalars of a dense layer (base 10000, no YaRN) and of a compressed one (YaRN, base 160000, 1/16) */
const dense = (pos: number, inverse = 0): Scalars => ({ pos0: pos, freq_base: 10000, freq_scale: 1, ext_factor: 0, attn_factor: 1, n_ctx_orig: 0, beta_fast: 32, beta_slow: 1, inverse });
const yarn = (pos: number, inverse = 0): Scalars => ({
  pos0: pos, freq_base: 160000, freq_scale: Math.fround(1 / 16), ext_factor: 1, attn_factor: 1 / (1 + 0.1 * Math.log(16)), n_ctx_orig: 65536, beta_fast: 32, beta_slow: 1, inverse,
});
/** compressor state scores: window rows in [−6, 0], the rows named empty at DS4_NEG_INF */
const stateScores = (rows: number, width: number, empty: (row: number) => boolean): Gen => (n, r) =>
  Float32Array.from({ length: n }, (_, i) => (empty(Math.floor(i / width) % rows) ? -1e30 : -6 * r()));
/** the attention scale 1/√D as the graph passes it (and the reference computes it) */
const kq = (d: number): number => Math.fround(1 / Math.fround(Math.sqrt(d)));
/** softmax worst case for attention (head_dim 8): row 0 scores 0, every other 1 − ln(rows) (q = e0, so the score is k[0]/√8) */
const attnQ: Gen = (n) => Float32Array.from({ length: n }, (_, i) => (i % 8 === 0 ? 1 : 0));
const attnRows = (rows: number): Gen => (n, r) => Float32Array.from({ length: n }, (_, i) => (i % 8 !== 0 ? 2 * r() - 1 : i === 0 ? 0 : (1 - Math.log(rows)) / kq(8)));
/** Q8_K activation codes with their per-16 sums */
const q8kCodes = (n: number, r: Rng): Int8Array => Int8Array.from({ length: n }, () => Math.round(254 * r() - 127));
const q8kSums = (codes: (n: number) => Int8Array): Gen => (n) => {
  const q = codes(n * 16);
  return ints(n, (j) => q.subarray(j * 16, j * 16 + 16).reduce((a, v) => a + v, 0));
};

/** Every case of the suite (≥ 3 shapes per kernel; real DS4 Flash dims: n_embd 4096, head_dim 512, n_rot 64, 64 heads, …). */
export const SUITE: SuiteCase[] = [
  { kernel: 'fill', label: 'one value', scalars: { value: 2.5, count: 1 } },
  { kernel: 'fill', label: 'ratio-4 compressor state, empty scores', scalars: { value: -1e30, count: 8 * 1024 } },
  { kernel: 'fill', label: 'ragged', scalars: { value: 0, count: 4097 } },
  { kernel: 'add', label: 'one', scalars: { n: 1 } },
  { kernel: 'add', label: 'ffn_out, n_embd', scalars: { n: 4096 } },
  { kernel: 'add', label: 'ragged, over the serial-parts limit', scalars: { n: 4099 } },
  { kernel: 'copy', label: 'one f32', scalars: { dst_offset: 0, src_offset: 0, bytes: 4 } },
  { kernel: 'copy', label: 'one raw KV row out of a ring', scalars: { dst_offset: 2048, src_offset: 3 * 2048, bytes: 2048 } },
  { kernel: 'copy', label: 'unaligned bytes', scalars: { dst_offset: 1, src_offset: 3, bytes: 7 } },
  ...[0, 1, 2, 3, 4, 5, 6, 7].map((fn): SuiteCase => ({
    kernel: 'math_probe', label: ['exp', 'rsqrt', 'sqrt', 'log', 'sigmoid', 'silu', 'softplus', 'f16 store (half ties)'][fn] + ' over |x| ≤ 4', scalars: { fn, n: 1000 },
    data: { x: (n, r) => (fn === 7 ? f16Ties(r, n) : fn >= 1 && fn <= 3 ? uniform(r, n, 1e-3, 4) : uniform(r, n, -4, 4)) },
  })),
  { kernel: 'embed_token_hc', label: 'tiny', scalars: { token: 3, n_embd: 8, n_hc: 4 } },
  { kernel: 'embed_token_hc', label: 'n_embd 4096, row 63', scalars: { token: 63, n_embd: 4096, n_hc: 4 } },
  { kernel: 'embed_token_hc', label: 'one value, token 0', scalars: { token: 0, n_embd: 1, n_hc: 1 } },
  { kernel: 'embed_tokens_hc', label: 'tiny', scalars: { n_vocab: 5, n_tok: 2, n_embd: 8, n_hc: 4 }, data: { tokens: (n) => ints(n, (i) => (3 * i + 1) % 5) } },
  { kernel: 'embed_tokens_hc', label: 'n_embd 4096, 5 tokens', scalars: { n_vocab: 64, n_tok: 5, n_embd: 4096, n_hc: 4 }, data: { tokens: (n, r) => ints(n, () => Math.floor(64 * r())) } },
  { kernel: 'embed_tokens_hc', label: 'one token, one stream', scalars: { n_vocab: 3, n_tok: 1, n_embd: 1, n_hc: 1 }, data: { tokens: (n) => ints(n, () => 2) } },
  { kernel: 'matmul_f16', label: 'tiny, ragged rows', scalars: { in_dim: 40, out_dim: 7, n_tok: 2 } },
  { kernel: 'matmul_f16', label: 'hc_attn_fn: 16384 columns, 24 rows', scalars: { in_dim: 16384, out_dim: 24, n_tok: 1 } },
  { kernel: 'matmul_f16', label: 'router logits: 4096 → 256', scalars: { in_dim: 4096, out_dim: 256, n_tok: 1 } },
  { kernel: 'matmul_f16', label: 'odd, 3 tokens', scalars: { in_dim: 33, out_dim: 5, n_tok: 3 } },
  { kernel: 'quantize_q8_0', label: 'one block', scalars: { in_dim: 32, n_tok: 1 } },
  { kernel: 'quantize_q8_0', label: 'ffn_norm, n_embd', scalars: { in_dim: 4096, n_tok: 1 } },
  { kernel: 'quantize_q8_0', label: '3 blocks × 5 tokens', scalars: { in_dim: 96, n_tok: 5 } },
  {
    kernel: 'quantize_q8_0', label: 'rounding ties: amax 127 (d = 1), values k + ½', scalars: { in_dim: 64, n_tok: 1 },
    data: { x: (n, r) => Float32Array.from({ length: n }, (_, i) => (i % 32 === 0 ? 127 : Math.floor(200 * r() - 100) + 0.5)) },
  },
  { kernel: 'matmul_q8_0_prequant', label: 'one block', scalars: { in_dim: 32, out_dim: 3, n_tok: 1 } },
  { kernel: 'matmul_q8_0_prequant', label: 'shared gate slice: 4096 → 64', scalars: { in_dim: 4096, out_dim: 64, n_tok: 1 } },
  { kernel: 'matmul_q8_0_prequant', label: 'attn_output_b slice: 8192 → 16, 2 tokens', scalars: { in_dim: 8192, out_dim: 16, n_tok: 2 } },
  { kernel: 'matmul_q8_0', label: 'one block', scalars: { in_dim: 32, out_dim: 3, n_tok: 1 } },
  { kernel: 'matmul_q8_0', label: 'logits slice: 4096 → 512', scalars: { in_dim: 4096, out_dim: 512, n_tok: 1 } },
  { kernel: 'matmul_q8_0', label: 'attn_output_b slice: 8192 → 16, 2 tokens', scalars: { in_dim: 8192, out_dim: 16, n_tok: 2 } },
  { kernel: 'rms_norm_plain', label: 'HC state: 16384', scalars: { n: 16384, rows: 1, eps: 1e-6 }, range: 3 },
  { kernel: 'rms_norm_plain', label: 'ragged rows', scalars: { n: 7, rows: 3, eps: 1e-6 } },
  { kernel: 'rms_norm_plain', label: '64 heads of 512', scalars: { n: 512, rows: 64, eps: 1e-6 } },
  { kernel: 'rms_norm_weight', label: 'attn_norm: 4096', scalars: { n: 4096, rows: 1, eps: 1e-6 } },
  { kernel: 'rms_norm_weight', label: 'q_lora_norm: 1024', scalars: { n: 1024, rows: 1, eps: 1e-6 } },
  { kernel: 'rms_norm_weight', label: 'ragged rows', scalars: { n: 13, rows: 5, eps: 1e-6 } },
  { kernel: 'rms_norm_inplace', label: 'q_norm: 64 heads of 512', scalars: { n: 512, rows: 64, eps: 1e-6 } },
  { kernel: 'rms_norm_inplace', label: 'tiny', scalars: { n: 8, rows: 2, eps: 1e-6 } },
  { kernel: 'rms_norm_inplace', label: 'one value a row', scalars: { n: 1, rows: 3, eps: 1e-6 } },
  ...[1, 3, 64].map((rows): SuiteCase => ({
    kernel: 'hc_split_sinkhorn4', label: `${rows} row(s), mix·scale + base in [−4, 4]`, scalars: { rows, sinkhorn_iters: 20, eps: 1e-6 },
    data: { scale: (n, r) => uniform(r, n, 0.5, 1), base: (n, r) => uniform(r, n, -2, 2) },
  })),
  { kernel: 'hc_weighted_sum4', label: 'attn_cur: n_embd 4096, pre from the split row', scalars: { n_embd: 4096, rows: 1, weight_stride: 24 } },
  { kernel: 'hc_weighted_sum4', label: 'out_embd: 3 rows, stride 4', scalars: { n_embd: 5, rows: 3, weight_stride: 4 } },
  { kernel: 'hc_weighted_sum4', label: '2 rows of 4096', scalars: { n_embd: 4096, rows: 2, weight_stride: 24 } },
  { kernel: 'hc_expand_split', label: 'after_attn_hc: n_embd 4096', scalars: { n_embd: 4096, n_hc: 4, rows: 1, has_add: 0 } },
  { kernel: 'hc_expand_split', label: 'with block_add: n_embd 4096', scalars: { n_embd: 4096, n_hc: 4, rows: 1, has_add: 1 } },
  { kernel: 'hc_expand_split', label: 'tiny, 3 rows, block_add', scalars: { n_embd: 5, n_hc: 4, rows: 3, has_add: 1 } },
  { kernel: 'hc_expand_split', label: 'one stream', scalars: { n_embd: 3, n_hc: 1, rows: 1, has_add: 0 } },
  { kernel: 'output_hc_weights', label: 'one token', scalars: { n_hc: 4, n_tok: 1, eps: 1e-6 }, range: 2, data: { scale: (n, r) => uniform(r, n, 0.5, 1), base: (n, r) => uniform(r, n, -2, 2) } },
  { kernel: 'output_hc_weights', label: '5 tokens', scalars: { n_hc: 4, n_tok: 5, eps: 1e-6 }, range: 2, data: { scale: (n, r) => uniform(r, n, 0.5, 1), base: (n, r) => uniform(r, n, -2, 2) } },
  { kernel: 'output_hc_weights', label: 'one stream', scalars: { n_hc: 1, n_tok: 1, eps: 1e-6 }, range: 2, data: { scale: (n, r) => uniform(r, n, 0.5, 1), base: (n, r) => uniform(r, n, -2, 2) } },
  {
    kernel: 'output_hc_weights', label: 'arguments at −4, the budget\'s edge', scalars: { n_hc: 4, n_tok: 8, eps: 1e-6 },
    data: { pre: (n, r) => uniform(r, n, -2.001, -2), scale: () => Float32Array.from([1]), base: (n) => new Float32Array(n).fill(-2) },
  },
  { kernel: 'rope_tail', label: 'tiny dense', scalars: { n_tok: 1, n_head: 2, head_dim: 8, n_rot: 4, ...dense(3) } },
  { kernel: 'rope_tail', label: 'q_rope: 64 heads of 512, dense, pos 100', scalars: { n_tok: 1, n_head: 64, head_dim: 512, n_rot: 64, ...dense(100) } },
  { kernel: 'rope_tail', label: 'compressed row, YaRN, positions 4093..4095', scalars: { n_tok: 3, n_head: 1, head_dim: 512, n_rot: 64, ...yarn(4093) } },
  { kernel: 'rope_tail', label: 'attn_heads_back: inverse, 64 heads, pos 37', scalars: { n_tok: 1, n_head: 64, head_dim: 512, n_rot: 64, ...yarn(37, 1) } },
  { kernel: 'rope_table', label: 'tiny dense', scalars: { n_tok: 1, n_rot: 4, ...dense(5) } },
  { kernel: 'rope_table', label: 'YaRN, positions 4090..4093', scalars: { n_tok: 4, n_rot: 64, ...yarn(4090) } },
  { kernel: 'rope_table', label: 'inverse, from pos 0', scalars: { n_tok: 2, n_rot: 64, ...dense(0, 1) } },
  { kernel: 'rope_tail_table', label: 'tiny', scalars: { n_tok: 1, n_head: 2, head_dim: 8, n_rot: 4 }, range: 1 },
  { kernel: 'rope_tail_table', label: '64 heads of 512', scalars: { n_tok: 1, n_head: 64, head_dim: 512, n_rot: 64 }, range: 1 },
  { kernel: 'rope_tail_table', label: '3 tokens, whole head rotated', scalars: { n_tok: 3, n_head: 1, head_dim: 64, n_rot: 64 }, range: 1 },
  { kernel: 'fp8_kv_quantize', label: 'kv row: 448 dims + 64 RoPE', scalars: { n_tok: 1, head_dim: 512, n_rot: 64 }, range: 600 },
  { kernel: 'fp8_kv_quantize', label: 'one 64-block', scalars: { n_tok: 1, head_dim: 66, n_rot: 2 }, range: 1e-3 },
  { kernel: 'fp8_kv_quantize', label: '3 rows of two blocks', scalars: { n_tok: 3, head_dim: 192, n_rot: 64 } },
  { kernel: 'store_raw_kv', label: 'raw ring: 128 rows of 512, pos 5, half f16 ties', scalars: { raw_cap: 128, pos0: 5, n_tok: 1, head_dim: 512 }, data: { kv: (n, r) => f16Ties(r, n) } },
  { kernel: 'store_raw_kv', label: 'ring wrap: positions 5, 6 in 3 rows', scalars: { raw_cap: 3, pos0: 5, n_tok: 2, head_dim: 2 }, data: { kv: (n, r) => f16Ties(r, n) } },
  { kernel: 'store_raw_kv', label: 'whole ring from 0', scalars: { raw_cap: 8, pos0: 0, n_tok: 8, head_dim: 4 }, data: { kv: (n, r) => f16Ties(r, n) } },
  { kernel: 'attention_decode', label: 'tiny, 2 raw rows', scalars: { use_mask: 0, n_raw: 2, raw_cap: 4, raw_start: 0, n_comp: 0, n_head: 2, head_dim: 8, scale: kq(8) }, range: 1 },
  {
    kernel: 'attention_decode', label: '64 heads of 512: 128-row ring from 37 + 16 compressed rows, indexer mask',
    scalars: { use_mask: 1, n_raw: 128, raw_cap: 128, raw_start: 37, n_comp: 16, n_head: 64, head_dim: 512, scale: kq(512) }, range: 1,
    data: { mask: (n, r) => Float32Array.from({ length: n }, () => (r() < 0.25 ? -1e30 : 0)), sinks: (n, r) => uniform(r, n, -2, 2) },
  },
  {
    kernel: 'attention_decode', label: 'softmax worst case: 1023 rows, one at score 0, the rest at 1 − ln 1023',
    scalars: { use_mask: 0, n_raw: 128, raw_cap: 128, raw_start: 0, n_comp: 895, n_head: 1, head_dim: 8, scale: kq(8) },
    data: { q: attnQ, raw: attnRows(1023), comp: (n, r, s) => (attnRows(1023)(n + 8, r, s) as Float32Array).subarray(8), sinks: (n) => new Float32Array(n).fill(-30) },
  },
  { kernel: 'attention_prefill_raw', label: 'tiny causal', scalars: { n_tok: 3, window: 0, n_head: 2, head_dim: 8, scale: kq(8) }, range: 1 },
  { kernel: 'attention_prefill_raw', label: 'window wrap: 20 tokens, window 8, 4 heads of 64', scalars: { n_tok: 20, window: 8, n_head: 4, head_dim: 64, scale: kq(64) }, range: 1 },
  { kernel: 'attention_prefill_raw', label: 'one token', scalars: { n_tok: 1, window: 1, n_head: 1, head_dim: 4, scale: kq(4) }, range: 1 },
  {
    kernel: 'attention_prefill_mixed', label: 'tiny, ratio 2, masked rows', scalars: { use_mask: 1, n_tok: 6, n_comp: 3, window: 3, ratio: 2, n_head: 2, head_dim: 8, scale: kq(8) }, range: 1,
    data: { mask: (n, r) => Float32Array.from({ length: n }, () => (r() < 0.3 ? -1e30 : 0)) },
  },
  { kernel: 'attention_prefill_mixed', label: 'ratio 4, no mask', scalars: { use_mask: 0, n_tok: 8, n_comp: 2, window: 4, ratio: 4, n_head: 2, head_dim: 16, scale: kq(16) }, range: 1 },
  {
    kernel: 'attention_prefill_mixed', label: 'window wrap: 16 tokens, window 8, ratio 4, 4 heads of 64', scalars: { use_mask: 1, n_tok: 16, n_comp: 4, window: 8, ratio: 4, n_head: 4, head_dim: 64, scale: kq(64) }, range: 1,
    data: { mask: (n, r) => Float32Array.from({ length: n }, () => (r() < 0.3 ? -1e30 : 0)) },
  },
  { kernel: 'attention_output_low_q8', label: 'one block', scalars: { group_dim: 32, rank: 2, n_groups: 1, n_tok: 1 } },
  { kernel: 'attention_output_low_q8', label: 'attn_low slice: 8 groups of 4096 → 16', scalars: { group_dim: 4096, rank: 16, n_groups: 8, n_tok: 1 } },
  { kernel: 'attention_output_low_q8', label: '3 groups, 2 tokens', scalars: { group_dim: 64, rank: 4, n_groups: 3, n_tok: 2 } },
  { kernel: 'attention_output_low_q8_prequant', label: 'one block', scalars: { group_dim: 32, rank: 2, n_groups: 1, n_tok: 1 }, range: 0.05 },
  { kernel: 'attention_output_low_q8_prequant', label: 'attn_low slice: 8 groups of 4096 → 16', scalars: { group_dim: 4096, rank: 16, n_groups: 8, n_tok: 1 }, range: 0.05 },
  { kernel: 'attention_output_low_q8_prequant', label: '3 groups, 2 tokens', scalars: { group_dim: 64, rank: 4, n_groups: 3, n_tok: 2 }, range: 0.05 },
  {
    kernel: 'router_select', label: '8 experts, top 2, no bias', scalars: { n_exp: 8, k: 2, token: 0, has_bias: 0, use_hash: 0, scale: 1.5 },
    data: { logits: (n, r) => Float32Array.from(distinct(r, n, n), (v) => v - 3.5) },
  },
  {
    kernel: 'router_select', label: '256 experts, top 6, biased (logits in [−4, 20])', scalars: { n_exp: 256, k: 6, token: 0, has_bias: 1, use_hash: 0, scale: 1.5 },
    data: { logits: (n, r) => uniform(r, n, -4, 20), bias: (n, r) => Float32Array.from(distinct(r, n, n), (v) => 0.1 * v) },
  },
  {
    kernel: 'router_select', label: 'hash layer: tid2eid row of token 7', scalars: { n_exp: 256, k: 6, token: 7, has_bias: 0, use_hash: 1, scale: 1.5 },
    data: { logits: (n, r) => uniform(r, n, -4, 4), tid2eid: (n, r) => Int32Array.from({ length: n }, (_, i) => distinct(r, 6, 256)[i % 6]) },
  },
  ...[
    { label: 'one block of 256, 8 rows, 2 of 3 experts', s: { in_dim: 256, n_ff: 8, k: 2, clamp: 10, n_expert: 3 } },
    { label: 'in 4096, 64 rows, 6 of 6 experts', s: { in_dim: 4096, n_ff: 64, k: 6, clamp: 10, n_expert: 6 } },
    { label: 'clamp 0.6 active, 2 of 4 experts', s: { in_dim: 512, n_ff: 32, k: 2, clamp: 0.6, n_expert: 4 } },
  ].map(({ label, s }): SuiteCase => ({
    kernel: 'moe_gate_up_mid_iq2_q8', label, scalars: s,
    data: {
      gate_w: (n, r) => synthIQ2_XXS(r, n, 0.05), up_w: (n, r) => synthIQ2_XXS(r, n, 0.05), xq: (n, r) => q8kCodes(n, r),
      xd: (n, r) => uniform(r, n, 0.5 / 127, 2 / 127), router_w: (n, r) => uniform(r, n, 0, 1), slot: (n, r) => distinct(r, n, s.n_expert),
    },
  })),
  ...[
    { label: 'one block of 256, 8 rows, 2 of 3 experts', s: { n_ff: 256, n_embd: 8, k: 2, n_expert: 3 } },
    { label: 'n_ff 2048, 64 rows, 6 of 6 experts', s: { n_ff: 2048, n_embd: 64, k: 6, n_expert: 6 } },
    { label: 'one slot of 2', s: { n_ff: 512, n_embd: 16, k: 1, n_expert: 2 } },
  ].map(({ label, s }): SuiteCase => {
    const codes = (n: number) => q8kCodes(n, lcg(s.n_ff * 7 + s.k));
    return {
      kernel: 'moe_down_q2_q8', label, scalars: s,
      data: { down_w: (n, r) => synthQ2_K(r, n, 0.05), midq: codes, midd: (n, r) => uniform(r, n, 0.5 / 127, 2 / 127), midbs: q8kSums(codes), slot: (n, r) => distinct(r, n, s.n_expert) },
    };
  }),
  { kernel: 'moe_sum_experts', label: 'moe_out: 6 slots of 4096', scalars: { n_embd: 4096, k: 6 } },
  { kernel: 'moe_sum_experts', label: 'one slot', scalars: { n_embd: 5, k: 1 } },
  { kernel: 'moe_sum_experts', label: 'ragged', scalars: { n_embd: 7, k: 3 } },
  { kernel: 'swiglu', label: 'shared_mid: 2048, clamp 10', scalars: { n: 2048, clamp: 10 }, data: { gate: (n, r) => uniform(r, n, -4, 12), up: (n, r) => uniform(r, n, -12, 12) } },
  { kernel: 'swiglu', label: 'clamp 0.6', scalars: { n: 7, clamp: 0.6 }, data: { gate: (n, r) => uniform(r, n, -4, 4), up: (n, r) => uniform(r, n, -4, 4) } },
  { kernel: 'swiglu', label: 'one', scalars: { n: 1, clamp: 10 }, range: 3 },
  { kernel: 'swiglu', label: 'gates at −4, the budget\'s edge', scalars: { n: 256, clamp: 10 }, data: { gate: (n, r) => uniform(r, n, -4, -3.99) } },
  ...[
    { label: 'ratio 4, width 1024, pos 6, F16 ape', s: { width: 1024, ratio: 4, pos: 6, ape_is_f16: 1 } },
    { label: 'ratio 128, width 512, pos 130, F32 ape', s: { width: 512, ratio: 128, pos: 130, ape_is_f16: 0 } },
    { label: 'tiny: ratio 4, width 2, pos 5', s: { width: 2, ratio: 4, pos: 5, ape_is_f16: 0 } },
  ].map(({ label, s }): SuiteCase => ({
    kernel: 'compressor_set_rows', label, scalars: s,
    data: { ape: (n, r) => (s.ape_is_f16 ? encodeF16(uniform(r, n / 2, -1, 1)) : new Uint8Array(uniform(r, n / 4, -1, 1).buffer)) },
  })),
  ...[
    { label: 'ratio 4, dim 512: first window (lane A empty)', s: { dim: 512, ratio: 4 }, empty: (row: number) => row < 4 },
    { label: 'ratio 4, dim 128, both lanes', s: { dim: 128, ratio: 4 }, empty: () => false },
    { label: 'ratio 128, dim 64, 20 empty rows', s: { dim: 64, ratio: 128 }, empty: (row: number) => row >= 108 },
  ].map(({ label, s, empty }): SuiteCase => {
    const coff = s.ratio === 4 ? 2 : 1;
    return { kernel: 'compressor_update_pool', label, scalars: s, data: { state_score: stateScores(coff * s.ratio, coff * s.dim, empty) } };
  }),
  {
    kernel: 'compressor_update_pool', label: 'softmax worst case: row 0 at score 0, 127 rows at 1 − ln 128', scalars: { dim: 64, ratio: 128 },
    data: { state_score: (n) => Float32Array.from({ length: n }, (_, i) => (i < 64 ? 0 : 1 - Math.log(128))) },
  },
  { kernel: 'compressor_shift_ratio4', label: 'tiny', scalars: { width: 2 } },
  { kernel: 'compressor_shift_ratio4', label: 'attention lane: width 1024', scalars: { width: 1024 } },
  { kernel: 'compressor_shift_ratio4', label: 'odd width', scalars: { width: 7 } },
  { kernel: 'indexer_qat', label: 'one row', scalars: { rows: 1 } },
  { kernel: 'indexer_qat', label: 'index_q: 64 heads', scalars: { rows: 64 } },
  { kernel: 'indexer_qat', label: 'small values', scalars: { rows: 3 }, range: 1e-3 },
  { kernel: 'indexer_weights_scale', label: 'index_w: 64 heads of 128', scalars: { n_heads: 64, head_dim: 128 } },
  { kernel: 'indexer_weights_scale', label: 'one', scalars: { n_heads: 1, head_dim: 1 } },
  { kernel: 'indexer_weights_scale', label: 'odd', scalars: { n_heads: 3, head_dim: 5 } },
  { kernel: 'indexer_scores', label: 'tiny', scalars: { n: 3, heads: 2, dim: 4 } },
  { kernel: 'indexer_scores', label: '64 rows × 64 heads of 128', scalars: { n: 64, heads: 64, dim: 128 } },
  { kernel: 'indexer_scores', label: 'one', scalars: { n: 1, heads: 1, dim: 1 } },
  { kernel: 'indexer_topk', label: 'ties to the lower row', scalars: { n: 4, k: 2 }, data: { scores: () => Float32Array.from([1, 3, 3, 2]) } },
  { kernel: 'indexer_topk', label: '512 of 1000, quarter-step scores', scalars: { n: 1000, k: 512 }, data: { scores: (n, r) => Float32Array.from({ length: n }, () => Math.floor(40 * r()) / 4) } },
  { kernel: 'indexer_topk', label: 'all rows', scalars: { n: 5, k: 5 } },
  { kernel: 'quantize_q8_k', label: 'one block', scalars: { n: 256 } },
  { kernel: 'quantize_q8_k', label: 'ffn_norm: 4096', scalars: { n: 4096 } },
  { kernel: 'quantize_q8_k', label: 'a zero block', scalars: { n: 512 }, data: { x: (n, r) => Float32Array.from({ length: n }, (_, i) => (i < 256 ? 0 : 4 * r() - 2)) } },
];

/** Default data of a read buffer by its dtype (ids and other shape-bound data come from the case). */
function generate(c: SuiteCase, b: BufferSignature, elems: number, r: Rng): ArrayBufferView {
  const own = c.data?.[b.name];
  if (own) return own(elems, r, c.scalars);
  const range = c.range ?? 2;
  switch (b.dtype) {
    case 'f32': return uniform(r, elems, -range, range);
    case 'f16': return encodeF16(uniform(r, elems, -1, 1));
    case 'q8_0': return quantizeQ8_0Weights(uniform(r, elems, -0.1, 0.1));
    case 'iq2_xxs': return synthIQ2_XXS(r, elems, 0.05);
    case 'q2_k': return synthQ2_K(r, elems, 0.05);
    case 'i8': return Int8Array.from({ length: elems }, () => Math.round(254 * r() - 127));
    case 'u8': return Uint8Array.from({ length: elems }, () => Math.floor(256 * r()));
    case 'i32': throw new Error(`suite case ${c.kernel} (${c.label}) must give its i32 buffer ${b.name}`);
  }
}

const BLOCK: Record<BufferSignature['dtype'], [bytes: number, elems: number]> = {
  f32: [4, 1], f16: [2, 1], i8: [1, 1], i32: [4, 1], u8: [1, 1], q8_0: [34, 32], q2_k: [84, 256], iq2_xxs: [66, 256],
};

const asBytes = (v: ArrayBufferView): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

/** A span's bytes (ring-aware) out of a buffer's whole content. */
function spanBytes(all: Uint8Array, s: BufferSpan): Uint8Array {
  const first = s.ring ? Math.min(s.bytes, s.ring - s.offset) : s.bytes;
  const out = new Uint8Array(s.bytes);
  out.set(all.subarray(s.offset, s.offset + first));
  if (first < s.bytes) out.set(all.subarray(0, s.bytes - first), first);
  return out;
}

/** The values of a written span as numbers. */
function values(b: Uint8Array, dtype: BufferSignature['dtype']): ArrayLike<number> {
  const c = new Uint8Array(b);
  if (dtype === 'f32') return new Float32Array(c.buffer);
  if (dtype === 'i32') return new Int32Array(c.buffer);
  if (dtype === 'i8') return new Int8Array(c.buffer);
  if (dtype === 'f16') return Array.from(new Uint16Array(c.buffer), f16ToF32);
  return c;
}

/** NMSE (ggml test-backend-ops): Σ(dev − host)² / Σ host²; a non-finite value where the host has a finite one is ∞. */
export function nmse(dev: ArrayLike<number>, host: ArrayLike<number>): number {
  let err = 0, ref = 0;
  for (let i = 0; i < host.length; i++) {
    if (!Number.isFinite(dev[i]) || !Number.isFinite(host[i])) {
      if (!Object.is(dev[i], host[i])) return Infinity;
      continue;
    }
    err += (dev[i] - host[i]) ** 2;
    ref += host[i] ** 2;
  }
  return ref === 0 ? (err === 0 ? 0 : Infinity) : err / ref;
}

const num = (v: number): string => (Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(3) : String(Number(v.toPrecision(5))));

/** The last position a launch writes rows for, where a budget grows with the position (RoPE's). */
export const lastPos = (s: Scalars): number => (s.pos0 ?? 0) + (s.n_tok ?? 1) - 1;

/** One case in one kernel math: device vs host twin on the same inputs (`faults`: bugs planted in the kernel, to show a budget catches them). */
export function runCase(dev: NativeDevice, catalog: KernelCatalog, c: SuiteCase, math: MathModeName, faults: string[] = []): CaseResult {
  const sig = catalog.get(c.kernel);
  const spans = catalog.spans(c.kernel, c.scalars);
  const r = lcg([...`${c.kernel}/${c.label}`].reduce((h, ch) => Math.imul(h, 31) + ch.charCodeAt(0), 7));
  const handles: Handles = {};
  const inputs: Record<string, Uint8Array> = {};
  try {
    for (const s of spans) {
      const bytes = Math.max(4, s.ring || s.offset + s.bytes);
      handles[s.buf.name] = dev.alloc(bytes, `${c.kernel}.${s.buf.name}`);
      if (!reads(s.buf) || s.bytes === 0) continue; // an unused buffer (has_bias 0, use_mask 0, …) stays uninitialised
      const [bb, be] = BLOCK[s.buf.dtype];
      const all = new Uint8Array(bytes);
      all.set(asBytes(generate(c, s.buf, Math.floor(bytes / bb) * be, r)).subarray(0, bytes));
      dev.upload(handles[s.buf.name], all);
      inputs[s.buf.name] = spanBytes(all, s);
    }
    catalog.launch(dev, c.kernel, handles, c.scalars, { math, faults });
    const expected = runTwin(c.kernel, new HostInputs(inputs), c.scalars, spans);
    let worst = 0;
    for (const s of spans) {
      if (!writes(s.buf) || s.bytes === 0) continue;
      const got = spanBytes(dev.download(handles[s.buf.name]), s);
      worst = Math.max(worst, nmse(values(got, s.buf.dtype), values(expected.get(s.buf.name) as Uint8Array, s.buf.dtype)));
    }
    const budget = budgetAt(sig.budget, math, lastPos(c.scalars));
    const ok = worst <= budget;
    const shape = Object.entries(c.scalars).map(([k, v]) => `${k}=${num(v)}`).join(' ');
    const line = `[${c.kernel}] ${shape} (${c.label}) ${math.padEnd(6)} NMSE = ${worst.toExponential(2)} ${worst < budget ? '<' : worst === budget ? '=' : '>'} ${budget.toExponential(2)} ${ok ? 'OK' : 'FAIL'}`;
    return { kernel: c.kernel, label: c.label, shape, math, nmse: worst, budget, ok, line };
  } finally {
    for (const h of Object.values(handles)) dev.free(h);
  }
}

/** Run the suite (optionally one kernel, one math); `onLine` gets each case's line as it finishes. */
export function runKernelSuite(dev: NativeDevice, catalog: KernelCatalog, o: { kernel?: string; math?: MathModeName; onLine?: (line: string) => void } = {}): CaseResult[] {
  const cases = SUITE.filter((c) => !o.kernel || c.kernel === o.kernel);
  const out: CaseResult[] = [];
  for (const c of cases) {
    for (const math of o.math ? [o.math] : (['ascend', 'exact'] as const)) {
      const res = runCase(dev, catalog, c, math);
      o.onLine?.(res.line);
      out.push(res);
    }
  }
  return out;
}
