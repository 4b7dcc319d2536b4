// The stage registry: the spine of ds4-diff. Every intermediate of the DS4 forward pass (catalog §4, ds4.c
// CPU path) has one canonical name here, its shape, dtype, where it exists, and the inputs it is computed
// from. The reference evaluates the graph from these inputs (reference/interpreter.ts), replay reads them
// from a dump, the device captures under these names, the dumps store StageRecords keyed by stageKey, and
// the diff pairs rows by that key. Nothing here computes: this module sits on the ground floor.
//
// Aliases are the names other tools use for a stage:
//   graph  — ds4 Metal/CUDA graph-dump names (`DS4_METAL_GRAPH_DUMP_PREFIX` files, catalog §8)
//   test   — fields of upstream ds4's `--metal-graph-test` diff line
//   ascend — extra/different fields of the ds4-ascend fork's diff line
//   cpu    — ds4 CPU trace labels (`--head-test`)
import type { Ds4Config, LayerKind } from './config.ts';
import { layerKind } from './config.ts';

/** The canonical stage names, in graph order (S0..S18 of the catalog). */
export const STAGE_IDS = [
  'embed_hc',
  'hc_attn_mix', 'hc_attn_pre_w', 'hc_attn_post_w', 'hc_attn_comb', 'attn_cur', 'attn_norm',
  'q_lora', 'q_lora_norm', 'q_raw', 'q_norm', 'kv_raw', 'kv_norm', 'q_rope', 'kv_rope', 'kv_cur', 'raw_cache',
  'attn_comp_kv', 'attn_comp_score', 'attn_comp_row',
  'index_comp_kv', 'index_comp_score', 'index_comp_row', 'index_q', 'index_w', 'index_scores', 'index_topk',
  'attn_heads', 'attn_heads_back', 'attn_low', 'attn_out', 'after_attn_hc',
  'hc_ffn_mix', 'hc_ffn_pre_w', 'hc_ffn_post_w', 'hc_ffn_comb', 'ffn_cur', 'ffn_norm',
  'router_logits', 'router_probs', 'router_topk', 'router_w',
  'moe_gate', 'moe_up', 'moe_mid', 'moe_down', 'moe_out', 'shared_mid', 'shared_out', 'ffn_out', 'after_ffn_hc',
  'out_hc_pre', 'out_hc_w', 'out_embd', 'out_norm', 'logits',
] as const;
export type StageId = (typeof STAGE_IDS)[number];

export type StageDtype = 'f32' | 'i32';
export type StageScope = 'embed' | 'layer' | 'head';
/** Which layers (and positions) produce the stage. */
export type StageWhen = 'all' | 'compressed' | 'ratio4' | 'emit' | 'index-emit' | 'index-select';

/**
 * An input of a stage, as declared in the registry (`inputs`), parsed:
 * - `hc_in`: the HC state the layer reads — `embed_hc` for layer 0, the previous layer's `after_ffn_hc`
 *   after it, the last evaluated layer's `after_ffn_hc` for the head;
 * - `X`: stage X at the same layer and position;
 * - `X@window`: stage X at every position of the window the stage reads at `pos` (the sliding window of
 *   raw KV rows, or a compressor's window, see windowPositions);
 * - `X@emitted`: every row of X emitted at or before `pos` (compressed rows, oldest first);
 * - `token`: the token id at `pos`.
 * An input is read only where its stage exists (stageAt): `attn_heads` reads `index_topk` only where the
 * indexer selects, and no compressed rows on a raw layer.
 */
export type InputRef =
  | { kind: 'hc_in' }
  | { kind: 'token' }
  | { kind: 'stage' | 'window' | 'emitted'; stage: StageId };

export interface StageDef {
  name: StageId;
  aliases: { graph?: string[]; test?: string[]; ascend?: string[]; cpu?: string[] };
  scope: StageScope;
  /** graph order (S0..S18 of the catalog) */
  order: number;
  dtype: StageDtype;
  /** shape as a function of the config, the layer (compressor width depends on its ratio) and a
   *  per-position count `n` (e.g. raw cache rows, indexer candidates) */
  shape: (cfg: Ds4Config, at?: { layer?: number; n?: number }) => number[];
  when: StageWhen;
  /** what the stage is computed from (see InputRef); load-bearing: the reference reads exactly these */
  inputs: string[];
  /** the last thing the stage's step does is a decision on a grid or a choice: `rounding` (FP8/FP4 codes,
   *  the f16 cache store) or `selection` (a top-k); a kernel may land on the other side only at a near tie */
  decision?: 'rounding' | 'selection';
  /** device primitive (kernel family name, see `ds4-diff kernels`) that produces it */
  kernel: string;
  /** catalog section / ds4.c function the stage follows */
  source: string;
}

/** One captured intermediate: the unit the reference and device taps emit, the dumps store and the diff
 *  compares. `layer` follows ds4's dump convention: 0..n_layer-1 for layer stages, 0 for the embedding,
 *  n_layer for the output head (ds4 dumps result_* with layer id 43). */
export interface StageRecord {
  stage: string;
  layer: number;
  pos: number;
  token: number;
  dtype: StageDtype;
  shape: number[];
  /** the values; empty for a `stats` record (its shape still says how many there were) */
  values: Float32Array | Int32Array;
  /** `full` (the default): the values are here; `stats`: only their statistics were captured (diff/stats.ts) */
  kind?: 'full' | 'stats';
  /** the statistics of the values (always set on a `stats` record; computed on demand for a full one) */
  stats?: RowStats;
}

/** Statistics of one record's values, what a `stats` capture keeps instead of them (diff/stats.ts rowStats). */
export interface RowStats {
  /** element count */
  n: number;
  /** over the finite elements (NaN when there are none) */
  min: number;
  max: number;
  mean: number;
  rms: number;
  nan: number;
  inf: number;
  /** 64-bit hash of the value bits, 16 hex digits: equal hashes are (all but certainly) identical values */
  hash: string;
}

/** A capture tap: every stage of every layer and position passes through one. */
export type Tap = (rec: StageRecord) => void;

/** The one key of a (stage, layer, pos) row, shared by every map of records. */
export function stageKey(stage: string, layer: number, pos: number): string {
  return `${stage}/${layer}/${pos}`;
}

export const recordKey = (r: { stage: string; layer: number; pos: number }): string => stageKey(r.stage, r.layer, r.pos);

const hcE = (c: Ds4Config) => [c.nHc, c.nEmbd];
const E = (c: Ds4Config) => [c.nEmbd];
const mixN = (c: Ds4Config) => [2 * c.nHc + c.nHc * c.nHc];
// ratio-4 layers keep two lanes (coff = 2), ratio-128 layers one (catalog S7)
const compWidth = (c: Ds4Config, at?: { layer?: number }) => [(at?.layer !== undefined && c.compressRatios[at.layer] === 128 ? 1 : 2) * c.headDim];

let orderCounter = 0;
function st(def: Omit<StageDef, 'order'>): StageDef {
  return { ...def, order: orderCounter++ };
}

export const STAGES: StageDef[] = [
  // S0
  st({ name: 'embed_hc', aliases: { test: ['embed_hc'] }, scope: 'embed', dtype: 'f32', shape: hcE, when: 'all', inputs: ['token'], kernel: 'embed_token_hc', source: 'S0 embed_token_f16 + hc_from_plain_embedding' }),
  // S1 HC pre, attention side
  st({ name: 'hc_attn_mix', aliases: { graph: ['hc_attn_pre_mixes'] }, scope: 'layer', dtype: 'f32', shape: mixN, when: 'all', inputs: ['hc_in'], kernel: 'matmul_f16', source: 'S1 hc_pre_from_state_one (rmsnorm_noweight + hc_attn_fn matvec)' }),
  st({ name: 'hc_attn_pre_w', aliases: { graph: ['hc_attn_pre_weights'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHc], when: 'all', inputs: ['hc_attn_mix'], kernel: 'hc_split_sinkhorn4', source: 'S1 hc_split_sinkhorn_one (pre = sigmoid + eps)' }),
  st({ name: 'hc_attn_post_w', aliases: { graph: ['hc_attn_pre_post_weights'], ascend: ['hc_post_w'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHc], when: 'all', inputs: ['hc_attn_mix'], kernel: 'hc_split_sinkhorn4', source: 'S1 hc_split_sinkhorn_one (post = 2 sigmoid)' }),
  // comb is stored [source b][output a]: element a + nHc*b (catalog S1, hc_post_one)
  st({ name: 'hc_attn_comb', aliases: { graph: ['hc_attn_pre_comb'], ascend: ['hc_comb'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHc, c.nHc], when: 'all', inputs: ['hc_attn_mix'], kernel: 'hc_split_sinkhorn4', source: 'S1 hc_split_sinkhorn_one (Sinkhorn comb)' }),
  st({ name: 'attn_cur', aliases: { graph: ['hc_attn_pre'], test: ['hc_pre'], cpu: ['attn_pre'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['hc_in', 'hc_attn_pre_w'], kernel: 'hc_weighted_sum4', source: 'S1 hc_weighted_sum_one' }),
  // S2
  st({ name: 'attn_norm', aliases: { graph: ['attn_norm'], test: ['attn_norm'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['attn_cur'], kernel: 'rms_norm', source: 'S2 layer_attn_norm_one' }),
  // S3
  st({ name: 'q_lora', aliases: { graph: ['q_lora'], ascend: ['q_lora'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.qLoraRank], when: 'all', inputs: ['attn_norm'], kernel: 'matmul_q8_0', source: 'S3 attn_q_a (Q8_0)' }),
  st({ name: 'q_lora_norm', aliases: { graph: ['q_lora_norm'], ascend: ['q_lora_norm'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.qLoraRank], when: 'all', inputs: ['q_lora'], kernel: 'rms_norm', source: 'S3 rmsnorm * attn_q_a_norm' }),
  st({ name: 'q_raw', aliases: { graph: ['Qraw'], ascend: ['Qraw'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHead, c.headDim], when: 'all', inputs: ['q_lora_norm'], kernel: 'matmul_q8_0', source: 'S3 attn_q_b (Q8_0)' }),
  st({ name: 'q_norm', aliases: { graph: ['Qnorm'], ascend: ['Qnorm'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHead, c.headDim], when: 'all', inputs: ['q_raw'], kernel: 'rms_norm', source: 'S3 head_rms_norm_inplace (no weight)' }),
  // S4
  st({ name: 'kv_raw', aliases: { graph: ['KVraw'], ascend: ['KVraw'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.headDim], when: 'all', inputs: ['attn_norm'], kernel: 'matmul_q8_0', source: 'S4 attn_kv (Q8_0)' }),
  st({ name: 'kv_norm', aliases: { graph: ['KVnorm'], ascend: ['KVnorm'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.headDim], when: 'all', inputs: ['kv_raw'], kernel: 'rms_norm', source: 'S4 rmsnorm * attn_kv_a_norm' }),
  // S5
  st({ name: 'q_rope', aliases: { graph: ['Qcur'], test: ['q_rope'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHead, c.headDim], when: 'all', inputs: ['q_norm'], kernel: 'rope_tail', source: 'S5 rope_tail_layer_inplace' }),
  st({ name: 'kv_rope', aliases: { graph: ['KVrope'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.headDim], when: 'all', inputs: ['kv_norm'], kernel: 'rope_tail', source: 'S5 rope_tail_layer_inplace' }),
  // S6
  // ds4's graph-test line calls this row `kv_rope` (it compares the cached row after RoPE + FP8 + f16),
  // which is our canonical kv_rope's name; canonical names win, so that test field maps to kv_rope.
  st({ name: 'kv_cur', decision: 'rounding', aliases: { graph: ['KVcur'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.headDim], when: 'all', inputs: ['kv_rope'], kernel: 'fp8_kv_quantize', source: 'S6 dsv4_fp8_kv_quantize_row_inplace_cpu + f16 round' }),
  st({ name: 'raw_cache', aliases: { graph: ['raw_cache'], test: ['raw_cache'] }, scope: 'layer', dtype: 'f32', shape: (c, at) => [at?.n ?? c.slidingWindow, c.headDim], when: 'all', inputs: ['kv_cur@window'], kernel: 'store_raw_kv', source: 'S6 kv_cache_push_raw (sliding window rows, chronological)' }),
  // S7 compressor, attention lane
  st({ name: 'attn_comp_kv', aliases: { graph: ['attn_comp_kv_raw'] }, scope: 'layer', dtype: 'f32', shape: compWidth, when: 'compressed', inputs: ['attn_norm'], kernel: 'matmul_f16', source: 'S7 compressor_decode_one kv_cur (width = coff*headDim)' }),
  st({ name: 'attn_comp_score', aliases: { graph: ['attn_comp_score_raw'] }, scope: 'layer', dtype: 'f32', shape: compWidth, when: 'compressed', inputs: ['attn_norm'], kernel: 'matmul_f16', source: 'S7 compressor_decode_one sc_cur + ape' }),
  st({ name: 'attn_comp_row', decision: 'rounding', aliases: { graph: ['KVcompress'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.headDim], when: 'emit', inputs: ['attn_comp_kv@window', 'attn_comp_score@window'], kernel: 'compressor_pool', source: 'S7 compressor_pool_decode_state + norm + rope + fp8 + f16' }),
  // S8 indexer (ratio-4 layers)
  st({ name: 'index_comp_kv', aliases: { graph: ['indexer_comp_kv_raw'] }, scope: 'layer', dtype: 'f32', shape: (c) => [2 * c.indexerHeadDim], when: 'ratio4', inputs: ['attn_norm'], kernel: 'matmul_f16', source: 'S8 indexer compressor kv' }),
  st({ name: 'index_comp_score', aliases: { graph: ['indexer_comp_score_raw'] }, scope: 'layer', dtype: 'f32', shape: (c) => [2 * c.indexerHeadDim], when: 'ratio4', inputs: ['attn_norm'], kernel: 'matmul_f16', source: 'S8 indexer compressor score + ape' }),
  st({ name: 'index_comp_row', decision: 'rounding', aliases: { graph: ['indexer_KVcompress'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.indexerHeadDim], when: 'index-emit', inputs: ['index_comp_kv@window', 'index_comp_score@window'], kernel: 'compressor_pool', source: 'S8 pool + norm + rope + hadamard128 + fp4 + f16' }),
  st({ name: 'index_q', decision: 'rounding', aliases: {}, scope: 'layer', dtype: 'f32', shape: (c) => [c.indexerHeads, c.indexerHeadDim], when: 'index-select', inputs: ['q_lora_norm'], kernel: 'indexer_qat', source: 'S8 indexer.attn_q_b + rope + hadamard + fp4' }),
  st({ name: 'index_w', aliases: {}, scope: 'layer', dtype: 'f32', shape: (c) => [c.indexerHeads], when: 'index-select', inputs: ['attn_norm'], kernel: 'indexer_weights_scale', source: 'S8 indexer.proj * 1/sqrt(ID*IH)' }),
  st({ name: 'index_scores', aliases: { graph: ['indexer_scores'] }, scope: 'layer', dtype: 'f32', shape: (_c, at) => [at?.n ?? 0], when: 'index-select', inputs: ['index_q', 'index_w', 'index_comp_row@emitted'], kernel: 'indexer_scores', source: 'S8 sum_h relu(q_h.k) w_h' }),
  st({ name: 'index_topk', decision: 'selection', aliases: { graph: ['indexer_topk'] }, scope: 'layer', dtype: 'i32', shape: (c) => [c.indexerTopK], when: 'index-select', inputs: ['index_scores'], kernel: 'indexer_topk', source: 'S8 repeated arg-max, ties to lowest index' }),
  // S9..S12
  st({ name: 'attn_heads', aliases: { graph: ['kqv_out'], cpu: ['attn_heads'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHead, c.headDim], when: 'all', inputs: ['q_rope', 'raw_cache', 'attn_comp_row@emitted', 'index_topk'], kernel: 'attention', source: 'S9 layer_attention_rows_one / mixed (sinks in the denominator)' }),
  st({ name: 'attn_heads_back', aliases: { graph: ['kqv_back'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHead, c.headDim], when: 'all', inputs: ['attn_heads'], kernel: 'rope_tail', source: 'S10 inverse rope_tail_layer_inplace' }),
  st({ name: 'attn_low', aliases: { graph: ['attn_low'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.oGroups * c.oLoraRank], when: 'all', inputs: ['attn_heads_back'], kernel: 'attention_output_low_q8', source: 'S11 layer_grouped_out_one (per-group Q8_0)' }),
  st({ name: 'attn_out', aliases: { graph: ['attn_out'], test: ['attn_out'], cpu: ['attn_out'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['attn_low'], kernel: 'matmul_q8_0', source: 'S11 attn_output_b (Q8_0)' }),
  st({ name: 'after_attn_hc', aliases: { graph: ['hc_attn_post'], test: ['after_attn_hc'], ascend: ['after_attn_hc'], cpu: ['after_attn_hc'] }, scope: 'layer', dtype: 'f32', shape: hcE, when: 'all', inputs: ['attn_out', 'hc_attn_post_w', 'hc_attn_comb', 'hc_in'], kernel: 'hc_expand', source: 'S12 hc_post_one' }),
  // S13 HC pre, FFN side
  st({ name: 'hc_ffn_mix', aliases: { graph: ['hc_ffn_pre_mixes'] }, scope: 'layer', dtype: 'f32', shape: mixN, when: 'all', inputs: ['after_attn_hc'], kernel: 'matmul_f16', source: 'S13 hc_pre_from_state_one (ffn)' }),
  st({ name: 'hc_ffn_pre_w', aliases: { graph: ['hc_ffn_pre_weights'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHc], when: 'all', inputs: ['hc_ffn_mix'], kernel: 'hc_split_sinkhorn4', source: 'S13 hc_split_sinkhorn_one' }),
  st({ name: 'hc_ffn_post_w', aliases: { graph: ['hc_ffn_pre_post_weights'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHc], when: 'all', inputs: ['hc_ffn_mix'], kernel: 'hc_split_sinkhorn4', source: 'S13 hc_split_sinkhorn_one' }),
  st({ name: 'hc_ffn_comb', aliases: { graph: ['hc_ffn_pre_comb'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nHc, c.nHc], when: 'all', inputs: ['hc_ffn_mix'], kernel: 'hc_split_sinkhorn4', source: 'S13 hc_split_sinkhorn_one' }),
  st({ name: 'ffn_cur', aliases: { graph: ['hc_ffn_pre'], test: ['ffn_cur'], cpu: ['ffn_cur'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['after_attn_hc', 'hc_ffn_pre_w'], kernel: 'hc_weighted_sum4', source: 'S13 hc_weighted_sum_one' }),
  st({ name: 'ffn_norm', aliases: { graph: ['ffn_norm'], test: ['ffn_norm'], cpu: ['ffn_norm'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['ffn_cur'], kernel: 'rms_norm', source: 'S13 rmsnorm * ffn_norm' }),
  // S14 router
  st({ name: 'router_logits', aliases: { graph: ['ffn_moe_logits'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nExpert], when: 'all', inputs: ['ffn_norm'], kernel: 'matmul_f16', source: 'S14 ffn_gate_inp (F16)' }),
  st({ name: 'router_probs', aliases: { graph: ['ffn_moe_probs'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nExpert], when: 'all', inputs: ['router_logits'], kernel: 'router_select', source: 'S14 sqrt(softplus(logit))' }),
  st({ name: 'router_topk', decision: 'selection', aliases: { graph: ['ffn_moe_topk'] }, scope: 'layer', dtype: 'i32', shape: (c) => [c.nExpertUsed], when: 'all', inputs: ['router_probs', 'token'], kernel: 'router_select', source: 'S14 hash (tid2eid) or top-k of probs + bias' }),
  st({ name: 'router_w', aliases: { graph: ['ffn_moe_weights_scaled'], test: ['router_w'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nExpertUsed], when: 'all', inputs: ['router_probs', 'router_topk'], kernel: 'router_select', source: 'S14 p/sum(p) * expert_weights_scale' }),
  // S15 routed experts
  st({ name: 'moe_gate', aliases: { graph: ['ffn_moe_gate_clamped'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nExpertUsed, c.nFfExp], when: 'all', inputs: ['ffn_norm', 'router_topk'], kernel: 'moe_gate_up_mid_iq2_q8', source: 'S15 IQ2_XXS gate . Q8_K, min(g, clamp)' }),
  st({ name: 'moe_up', aliases: { graph: ['ffn_moe_up_clamped'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nExpertUsed, c.nFfExp], when: 'all', inputs: ['ffn_norm', 'router_topk'], kernel: 'moe_gate_up_mid_iq2_q8', source: 'S15 IQ2_XXS up . Q8_K, clamp +-' }),
  st({ name: 'moe_mid', aliases: { graph: ['ffn_moe_weighted_swiglu'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nExpertUsed, c.nFfExp], when: 'all', inputs: ['moe_gate', 'moe_up', 'router_w'], kernel: 'moe_gate_up_mid_iq2_q8', source: 'S15 silu(g) u w_k' }),
  st({ name: 'moe_down', aliases: { graph: ['ffn_moe_down'] }, scope: 'layer', dtype: 'f32', shape: (c) => [c.nExpertUsed, c.nEmbd], when: 'all', inputs: ['moe_mid', 'router_topk'], kernel: 'moe_down_q2_q8', source: 'S15 Q2_K down . Q8_K(mid)' }),
  st({ name: 'moe_out', aliases: { graph: ['ffn_moe_out'], test: ['routed'], cpu: ['routed_moe'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['moe_down'], kernel: 'moe_sum_experts', source: 'S15 sum over experts in slot order' }),
  // S16 shared expert
  st({ name: 'shared_mid', aliases: {}, scope: 'layer', dtype: 'f32', shape: (c) => [c.nFfExp], when: 'all', inputs: ['ffn_norm'], kernel: 'swiglu', source: 'S16 silu(min(gate,clamp)) clamp(up)' }),
  st({ name: 'shared_out', aliases: { graph: ['ffn_shexp'], test: ['shared'], cpu: ['shared_ffn'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['shared_mid'], kernel: 'matmul_q8_0', source: 'S16 ffn_down_shexp (Q8_0)' }),
  // S17
  st({ name: 'ffn_out', aliases: { graph: ['ffn_out'], test: ['ffn_out'], cpu: ['ffn_out'] }, scope: 'layer', dtype: 'f32', shape: E, when: 'all', inputs: ['moe_out', 'shared_out'], kernel: 'add', source: 'S17 moe + shared' }),
  st({ name: 'after_ffn_hc', aliases: { graph: ['hc_ffn_post'], test: ['after_ffn_hc'], cpu: ['ffn_post_hc', 'after_ffn_hc'] }, scope: 'layer', dtype: 'f32', shape: hcE, when: 'all', inputs: ['ffn_out', 'hc_ffn_post_w', 'hc_ffn_comb', 'after_attn_hc'], kernel: 'hc_expand', source: 'S17 hc_post_one (ffn)' }),
  // S18 output head (dumped with layer = n_layer, as ds4's result_* dumps use layer id 43)
  st({ name: 'out_hc_pre', aliases: { graph: ['result_hc_pre'] }, scope: 'head', dtype: 'f32', shape: (c) => [c.nHc], when: 'all', inputs: ['hc_in'], kernel: 'matmul_f16', source: 'S18 output_hc_head_one (output_hc_fn)' }),
  st({ name: 'out_hc_w', aliases: { graph: ['result_hc_weights'] }, scope: 'head', dtype: 'f32', shape: (c) => [c.nHc], when: 'all', inputs: ['out_hc_pre'], kernel: 'output_hc_weights', source: 'S18 sigmoid + eps' }),
  st({ name: 'out_embd', aliases: { graph: ['result_hc'] }, scope: 'head', dtype: 'f32', shape: E, when: 'all', inputs: ['hc_in', 'out_hc_w'], kernel: 'hc_weighted_sum4', source: 'S18 weighted sum' }),
  st({ name: 'out_norm', aliases: { graph: ['result_norm'] }, scope: 'head', dtype: 'f32', shape: E, when: 'all', inputs: ['out_embd'], kernel: 'rms_norm', source: 'S18 rmsnorm * output_norm' }),
  st({ name: 'logits', aliases: { graph: ['result_output'], test: ['logits'], cpu: ['logits'] }, scope: 'head', dtype: 'f32', shape: (c) => [c.nVocab], when: 'all', inputs: ['out_norm'], kernel: 'matmul_q8_0', source: 'S18 output (Q8_0)' }),
];

const byName = new Map<string, StageDef>();
const byAlias = new Map<string, StageDef>();
for (const s of STAGES) {
  byName.set(s.name, s);
  for (const list of Object.values(s.aliases)) for (const a of list ?? []) if (!byAlias.has(a)) byAlias.set(a, s);
}

export function stage(name: string): StageDef {
  const s = byName.get(name);
  if (!s) throw new Error(`unknown stage '${name}'`);
  return s;
}

/** Canonical stage for a canonical name or any alias (ds4 graph, graph-test, Ascend, CPU trace). */
export function resolveStage(name: string): StageDef | undefined {
  return byName.get(name) ?? byAlias.get(name);
}

/** Parse one declared input (see InputRef). */
export function parseInput(text: string): InputRef {
  if (text === 'hc_in') return { kind: 'hc_in' };
  if (text === 'token') return { kind: 'token' };
  const m = /^([a-z_0-9]+)(?:@(window|emitted))?$/.exec(text);
  if (!m || !byName.has(m[1])) throw new Error(`bad stage input '${text}'`);
  return { kind: (m[2] ?? 'stage') as 'stage' | 'window' | 'emitted', stage: m[1] as StageId };
}

const parsedInputs = new Map(STAGES.map((s) => [s.name, s.inputs.map(parseInput)]));

/** The parsed inputs of a stage. */
export function stageInputs(name: StageId): InputRef[] {
  return parsedInputs.get(name)!;
}

/** Does a layer of kind `kind` produce this stage at all (emission-only stages may still be absent at a pos)? */
export function stageInLayer(s: StageDef, kind: LayerKind): boolean {
  switch (s.when) {
    case 'all':
      return true;
    case 'compressed':
    case 'emit':
      return kind !== 'raw';
    case 'ratio4':
    case 'index-emit':
    case 'index-select':
      return kind === 'ratio4';
  }
}

/** Compressed rows of layer `il` emitted at or before `pos` (a row closes every `ratio` tokens, catalog S7). */
export function compressedRowCount(cfg: Ds4Config, il: number, pos: number): number {
  const ratio = cfg.compressRatios[il];
  return ratio ? Math.floor((pos + 1) / ratio) : 0;
}

/**
 * Does the graph produce stage `s` at (layer, pos)? Layer stages by layer kind, compressed rows only at
 * the position that closes a window, the indexer's selection stages only where it selects (more
 * compressed rows than top-k, ds4.c indexer_allowed_decode_one), the embedding at layer 0, the head at
 * layer n_layer (at the positions a run evaluates its head).
 */
export function stageAt(cfg: Ds4Config, s: StageDef, layer: number, pos: number): boolean {
  if (pos < 0) return false;
  if (s.scope === 'embed') return layer === 0;
  if (s.scope === 'head') return layer === cfg.nLayer;
  if (!(layer >= 0 && layer < cfg.nLayer) || !stageInLayer(s, layerKind(cfg, layer))) return false;
  const ratio = cfg.compressRatios[layer];
  if (s.when === 'emit' || s.when === 'index-emit') return (pos + 1) % ratio === 0;
  if (s.when === 'index-select') return compressedRowCount(cfg, layer, pos) > cfg.indexerTopK;
  return true;
}

/**
 * The positions a windowed input covers at `pos`, oldest first:
 * - kv_cur: the raw sliding window, the last min(pos + 1, sliding_window) positions (S6);
 * - a compressor projection: the state the window closing at `pos` pools — `ratio` rows on ratio-128
 *   layers; on ratio-4 layers the previous window (state rows 0..3) and the current one (rows 4..7), 8
 *   positions, of which the previous window is absent for the first row (catalog S7).
 */
export function windowPositions(cfg: Ds4Config, input: StageId, layer: number, pos: number): number[] {
  const span = input === 'kv_cur' ? Math.min(pos + 1, cfg.slidingWindow) : cfg.compressRatios[layer] === 4 ? 8 : cfg.compressRatios[layer];
  const out: number[] = [];
  for (let q = Math.max(0, pos + 1 - span); q <= pos; q++) out.push(q);
  return out;
}

/** The positions of every row of an emitted stage at or before `pos` (each at its window's last position). */
export function emittedPositions(cfg: Ds4Config, layer: number, pos: number): number[] {
  const ratio = cfg.compressRatios[layer];
  return Array.from({ length: compressedRowCount(cfg, layer, pos) }, (_, i) => (i + 1) * ratio - 1);
}

/** Sort key for graph order: position, then embedding, layers in order with stages in layer order, then head. */
export function graphOrderKey(name: string, layer: number, pos: number): [number, number, number, number] {
  const s = resolveStage(name);
  const scopeRank = s ? (s.scope === 'embed' ? 0 : s.scope === 'layer' ? 1 : 2) : 3;
  return [pos, scopeRank, s?.scope === 'layer' ? layer : 0, s ? s.order : Number.MAX_SAFE_INTEGER];
}
