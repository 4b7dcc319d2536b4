// One forward function per stage of the registry (model/stages.ts): each computes its stage at one
// (layer, pos) from the stage's declared inputs, through StepInputs, and nothing else. The interpreter
// (reference/interpreter.ts) decides where the inputs come from — its own earlier results (a reference
// run), a dump (replay), or the reference's captured values (the rounding-noise twin) — so the graph is
// written once, here and in the registry. The ops themselves live in hc/attention/compressor/ffn/math.
import type { Ds4Config } from '../model/config.ts';
import { fp8KvQuantizeInplace, newMargins, type RoundingMargins } from '../model/quant/index.ts';
import { windowPositions, type StageId } from '../model/stages.ts';
import { attentionWithSinks, groupedOutLow, groupedOutProducts, indexerScores, indexerTopk } from './attention.ts';
import { closeCompressedRow, compressorKv, compressorScore, compressorWeight, indexerQat, windowState, type CompressorLane } from './compressor.ts';
import {
  expertsDown, expertsDownProducts, expertsMid, expertsProject, expertsProjectProducts, routerProbs, routerScores, routerSelect, routerWeights,
  selectionGap, sharedExpertProducts, sharedMid, sumExperts,
} from './ffn.ts';
import { embedHc, hcPost, hcSplitSinkhorn, hcWeightedSum, outputHcWeights } from './hc.ts';
import { cacheStore } from './kvcache.ts';
import { headRmsNormInplace, rmsNorm, rounder } from './math.ts';
import { matvec } from './matvec.ts';
import { ropeTailInplace } from './rope.ts';
import { allocVec, type LayerWeights, type Precision, type Vec, type Weight } from './types.ts';
import type { Weights } from './weights.ts';

/** What a step may read: its declared inputs (model/stages.ts) at its (layer, pos), and the weights. */
export interface StepInputs {
  cfg: Ds4Config;
  /** the stage's layer (n_layer for the head, 0 for the embedding) */
  layer: number;
  pos: number;
  p: Precision;
  weights: Weights;
  /** the layer's tensors (`blk.<layer>.`) */
  w: LayerWeights;
  /** an f32 input stage at (layer, pos) */
  input(stage: StageId): Vec;
  /** an i32 input stage at (layer, pos) */
  inputI32(stage: StageId): Int32Array;
  /** an input that exists only at some positions (index_topk where the indexer selects): undefined elsewhere */
  optionalI32(stage: StageId): Int32Array | undefined;
  /** the HC state the layer (or the head) reads: `hc_in` */
  hcIn(): Vec;
  /** a windowed input's rows at model/stages.ts windowPositions, oldest first */
  window(stage: StageId): Vec[];
  /** an emitted input's rows at model/stages.ts emittedPositions, oldest first */
  emitted(stage: StageId): Vec[];
  /** the token id at pos */
  token(): number;
  /** set when the caller asks where the step met a rounding or selection decision (model/stages.ts `decision`) */
  decisions?: Decisions;
}

/** Where a step's output sat relative to its last decision: the rounding margins of its elements, or the
 *  score gap of its top-k choice. */
export interface Decisions {
  margins?: RoundingMargins;
  gap?: number;
}

/** Rounding margins for an n-element output, if the caller asked for decisions. */
const marginsOf = (x: StepInputs, n: number): RoundingMargins | undefined => (x.decisions ? (x.decisions.margins = newMargins(n)) : undefined);

/**
 * The products (weight, input) a step makes at one position, when it declares them: the runner makes them
 * for all of a prompt's positions in one pass over each weight (reference/matvec.ts precompute), as ds4's
 * prefill streams a layer's weights once. A product left out is made when the step asks for it.
 */
export type Products = (x: StepInputs) => Array<[Weight, Vec]>;

export type Step = ((x: StepInputs) => Vec | Int32Array) & { products?: Products };

/** A step with its products declared. */
const withProducts = (products: Products, step: (x: StepInputs) => Vec | Int32Array): Step => Object.assign(step, { products });

const copy = (v: Vec): Vec => v.slice();

const concat = (rows: Vec[], dim: number, p: Precision): Vec => {
  const out = allocVec(p, rows.length * dim);
  rows.forEach((r, i) => out.set(r, i * dim));
  return out;
};

/** S1/S13 hc_pre_from_state_one's mix: F16 matvec of the RMS-normalized (no weight) HC state. */
const hcMix = (side: 'attn' | 'ffn', hc: (x: StepInputs) => Vec): Step => (x) =>
  matvec(x.w.get(`hc_${side}_fn.weight`), rmsNorm(hc(x), null, x.cfg.rmsEps, x.p), x.p);

/** S1/S13 hc_split_sinkhorn_one of the mix; `part` picks pre, post or comb (the split is cheap: each stage computes its own). */
const hcSplit = (side: 'attn' | 'ffn', part: 'pre' | 'post' | 'comb'): Step => (x) =>
  hcSplitSinkhorn(x.input(`hc_${side}_mix`), x.w.f32(`hc_${side}_scale.weight`), x.w.f32(`hc_${side}_base.weight`), x.cfg.nHc, x.cfg.sinkhornIters, x.cfg.hcEps, x.p)[part];

const afterAttn = (x: StepInputs): Vec => x.input('after_attn_hc');

/** RMSNorm with a learned weight of the input stage. */
const normOf = (input: StageId, weight: string): Step => (x) => rmsNorm(x.input(input), x.w.f32(weight), x.cfg.rmsEps, x.p);

/** A projection of the input stage (a Q8_0 weight quantizes the activation first, as ds4's CPU path). */
const matvecOf = (input: StageId, weight: string): Step =>
  withProducts((x) => [[x.w.get(weight), x.input(input)]], (x) => matvec(x.w.get(weight), x.input(input), x.p));

/** S5 RoPE of the input's heads at pos (S10: the inverse, of the attention output). */
const ropeOf = (input: StageId, heads: (c: Ds4Config) => number, inverse: boolean): Step => (x) => {
  const v = copy(x.input(input));
  ropeTailInplace(x.cfg, x.layer, v, heads(x.cfg), x.cfg.headDim, x.pos, inverse, x.p);
  return v;
};

const LANE_DIM: Record<CompressorLane, (c: Ds4Config) => number> = { attn: (c) => c.headDim, indexer: (c) => c.indexerHeadDim };
const LANE_STAGES: Record<CompressorLane, { kv: StageId; score: StageId }> = {
  attn: { kv: 'attn_comp_kv', score: 'attn_comp_score' },
  indexer: { kv: 'index_comp_kv', score: 'index_comp_score' },
};

/**
 * S7/S8 the compressed row of the window closing at pos: the lane's state rebuilt from the window's
 * projections, pooled, normed, RoPE'd, quantized (closeCompressedRow), then stored f16 in the cache.
 */
const compressedRow = (lane: CompressorLane): Step => (x) => {
  const { cfg, layer, pos, p } = x;
  const s = LANE_STAGES[lane];
  const st = windowState(lane, cfg.compressRatios[layer], LANE_DIM[lane](cfg), pos, windowPositions(cfg, s.kv, layer, pos), x.window(s.kv), x.window(s.score), p);
  const m = marginsOf(x, st.dim);
  return cacheStore(closeCompressedRow(cfg, layer, x.w, st, pos, p, m), p, m);
};

/** S7/S8 a compressor lane's projection of attn_norm. */
const compressorProducts = (lane: CompressorLane, part: 'kv' | 'gate'): Products => (x) => [[compressorWeight(x.w, lane, part), x.input('attn_norm')]];

/** S15 the selected experts' gate or up projections of ffn_norm, clamped. */
const expertsOf = (name: 'ffn_gate_exps.weight' | 'ffn_up_exps.weight'): Step => withProducts(
  (x) => expertsProjectProducts(x.w, x.layer, name, x.input('ffn_norm'), x.inputI32('router_topk')),
  (x) => expertsProject(x.w, x.layer, name, x.input('ffn_norm'), x.inputI32('router_topk'), x.cfg.nFfExp, x.cfg.swigluClamp[x.layer], x.p),
);

/** The HC state the head reads (hc_in): the last evaluated layer's after_ffn_hc. */
const headIn = (x: StepInputs): Vec => x.hcIn();

export const STEPS: Record<StageId, Step> = {
  embed_hc: (x) => embedHc(x.cfg, x.p, x.weights.embeddingRow(x.token())),
  hc_attn_mix: hcMix('attn', (x) => x.hcIn()),
  hc_attn_pre_w: hcSplit('attn', 'pre'),
  hc_attn_post_w: hcSplit('attn', 'post'),
  hc_attn_comb: hcSplit('attn', 'comb'),
  attn_cur: (x) => hcWeightedSum(x.cfg, x.hcIn(), x.input('hc_attn_pre_w'), x.p),
  attn_norm: normOf('attn_cur', 'attn_norm.weight'),
  q_lora: matvecOf('attn_norm', 'attn_q_a.weight'),
  q_lora_norm: normOf('q_lora', 'attn_q_a_norm.weight'),
  q_raw: matvecOf('q_lora_norm', 'attn_q_b.weight'),
  q_norm: (x) => {
    const v = copy(x.input('q_raw'));
    headRmsNormInplace(v, x.cfg.nHead, x.cfg.headDim, x.cfg.rmsEps, x.p);
    return v;
  },
  kv_raw: matvecOf('attn_norm', 'attn_kv.weight'),
  kv_norm: normOf('kv_raw', 'attn_kv_a_norm.weight'),
  q_rope: ropeOf('q_norm', (c) => c.nHead, false),
  kv_rope: ropeOf('kv_norm', (c) => c.nHeadKv, false),
  // S6 the cached row: FP8 on the non-RoPE dims (dsv4_fp8_kv_quantize_row_inplace_cpu), then the f16 store
  kv_cur: (x) => {
    const v = copy(x.input('kv_rope'));
    const m = marginsOf(x, v.length);
    fp8KvQuantizeInplace(v, 0, x.cfg.headDim - x.cfg.nRot, m);
    return cacheStore(v, x.p, m);
  },
  // S6 the raw window as attention reads it at pos: the window's cached rows, oldest first
  raw_cache: (x) => concat(x.window('kv_cur'), x.cfg.headDim, x.p),
  attn_comp_kv: withProducts(compressorProducts('attn', 'kv'), (x) => compressorKv(x.w, 'attn', x.input('attn_norm'), x.p)),
  attn_comp_score: withProducts(compressorProducts('attn', 'gate'), (x) => compressorScore(x.w, 'attn', x.input('attn_norm'), x.pos, x.cfg.compressRatios[x.layer], x.p)),
  attn_comp_row: compressedRow('attn'),
  index_comp_kv: withProducts(compressorProducts('indexer', 'kv'), (x) => compressorKv(x.w, 'indexer', x.input('attn_norm'), x.p)),
  index_comp_score: withProducts(compressorProducts('indexer', 'gate'), (x) => compressorScore(x.w, 'indexer', x.input('attn_norm'), x.pos, x.cfg.compressRatios[x.layer], x.p)),
  index_comp_row: compressedRow('indexer'),
  // S8 indexer query: indexer.attn_q_b of q_lora_norm, RoPE at pos, Hadamard + FP4 per head
  index_q: withProducts((x) => [[x.w.get('indexer.attn_q_b.weight'), x.input('q_lora_norm')]], (x) => {
    const { cfg, p } = x;
    const iq = matvec(x.w.get('indexer.attn_q_b.weight'), x.input('q_lora_norm'), p);
    ropeTailInplace(cfg, x.layer, iq, cfg.indexerHeads, cfg.indexerHeadDim, x.pos, false, p);
    const m = marginsOf(x, iq.length);
    for (let h = 0; h < cfg.indexerHeads; h++) indexerQat(iq, h * cfg.indexerHeadDim, m);
    return iq;
  }),
  // S8 head weights: indexer.proj of attn_norm scaled by 1/sqrt(ID·IH)
  index_w: withProducts((x) => [[x.w.get('indexer.proj.weight'), x.input('attn_norm')]], (x) => {
    const { cfg, p } = x;
    const r = rounder(p);
    const w = matvec(x.w.get('indexer.proj.weight'), x.input('attn_norm'), p);
    const scale = r(1 / r(Math.sqrt(cfg.indexerHeadDim * cfg.indexerHeads)));
    for (let h = 0; h < cfg.indexerHeads; h++) w[h] = r(w[h] * scale);
    return w;
  }),
  index_scores: (x) => {
    const rows = x.emitted('index_comp_row');
    return indexerScores(x.cfg, concat(rows, x.cfg.indexerHeadDim, x.p), rows.length, x.input('index_q'), x.input('index_w'), x.p);
  },
  index_topk: (x) => {
    const scores = x.input('index_scores');
    const top = indexerTopk(scores, x.cfg.indexerTopK);
    if (x.decisions) x.decisions.gap = selectionGap(scores, top);
    return top;
  },
  // S9 attention over the raw window and the compressed rows emitted so far; where the indexer selects,
  // only the rows it picked
  attn_heads: (x) => {
    const { cfg, p } = x;
    const D = cfg.headDim;
    const raw = x.input('raw_cache');
    const comp = cfg.compressRatios[x.layer] ? x.emitted('attn_comp_row') : [];
    const top = x.optionalI32('index_topk');
    let allowed: Uint8Array | null = null;
    if (top) {
      allowed = new Uint8Array(comp.length);
      for (const c of top) {
        if (!(c >= 0 && c < comp.length)) throw new RangeError(`index_topk layer ${x.layer} pos ${x.pos} selects row ${c} of ${comp.length}`);
        allowed[c] = 1;
      }
    }
    return attentionWithSinks(x.input('q_rope'), cfg.nHead, D, x.w.f32('attn_sinks.weight'), raw, raw.length / D, concat(comp, D, p), comp.length, allowed, p);
  },
  attn_heads_back: ropeOf('attn_heads', (c) => c.nHead, true),
  attn_low: withProducts(
    (x) => groupedOutProducts(x.cfg, x.w.get('attn_output_a.weight'), x.input('attn_heads_back')),
    (x) => groupedOutLow(x.cfg, x.w.get('attn_output_a.weight'), x.input('attn_heads_back'), x.p),
  ),
  attn_out: matvecOf('attn_low', 'attn_output_b.weight'),
  after_attn_hc: (x) => hcPost(x.cfg, x.input('attn_out'), x.hcIn(), x.input('hc_attn_post_w'), x.input('hc_attn_comb'), x.p),
  hc_ffn_mix: hcMix('ffn', afterAttn),
  hc_ffn_pre_w: hcSplit('ffn', 'pre'),
  hc_ffn_post_w: hcSplit('ffn', 'post'),
  hc_ffn_comb: hcSplit('ffn', 'comb'),
  ffn_cur: (x) => hcWeightedSum(x.cfg, afterAttn(x), x.input('hc_ffn_pre_w'), x.p),
  ffn_norm: normOf('ffn_cur', 'ffn_norm.weight'),
  router_logits: matvecOf('ffn_norm', 'ffn_gate_inp.weight'),
  router_probs: (x) => routerProbs(x.input('router_logits'), x.p),
  // only the hash layers (tid2eid) route by token: no choice there, so no near tie
  router_topk: (x) => {
    const probs = x.input('router_probs');
    const hash = x.w.has('ffn_gate_tid2eid.weight');
    const ids = routerSelect(x.cfg, x.w, probs, hash ? x.token() : -1, x.p);
    if (x.decisions) x.decisions.gap = hash ? Infinity : selectionGap(routerScores(x.w, probs, x.p), ids);
    return ids;
  },
  router_w: (x) => routerWeights(x.input('router_probs'), x.inputI32('router_topk'), x.cfg.expertWeightsScale, x.p),
  moe_gate: expertsOf('ffn_gate_exps.weight'),
  moe_up: expertsOf('ffn_up_exps.weight'),
  moe_mid: (x) => expertsMid(x.input('moe_gate'), x.input('moe_up'), x.input('router_w'), x.cfg.nFfExp, x.p),
  moe_down: withProducts(
    (x) => expertsDownProducts(x.w, x.layer, x.inputI32('router_topk'), x.input('moe_mid'), x.cfg.nFfExp),
    (x) => expertsDown(x.w, x.layer, x.inputI32('router_topk'), x.input('moe_mid'), x.cfg.nFfExp, x.cfg.nEmbd, x.p),
  ),
  moe_out: (x) => sumExperts(x.input('moe_down'), x.cfg.nExpertUsed, x.cfg.nEmbd, x.p),
  shared_mid: withProducts((x) => sharedExpertProducts(x.w, x.input('ffn_norm')), (x) => sharedMid(x.w, x.input('ffn_norm'), x.cfg.swigluClamp[x.layer], x.p)),
  shared_out: matvecOf('shared_mid', 'ffn_down_shexp.weight'),
  // S17 ffn_out = moe + shared
  ffn_out: (x) => {
    const r = rounder(x.p);
    const moe = x.input('moe_out'), shared = x.input('shared_out');
    const out = allocVec(x.p, moe.length);
    for (let d = 0; d < moe.length; d++) out[d] = r(moe[d] + shared[d]);
    return out;
  },
  after_ffn_hc: (x) => hcPost(x.cfg, x.input('ffn_out'), afterAttn(x), x.input('hc_ffn_post_w'), x.input('hc_ffn_comb'), x.p),
  // S18 the output head (ds4.c output_hc_head_one + output_logits_one): sigmoid HC weights (no Sinkhorn, no 2x)
  out_hc_pre: (x) => matvec(x.weights.global('output_hc_fn.weight'), rmsNorm(headIn(x), null, x.cfg.rmsEps, x.p), x.p),
  out_hc_w: (x) => outputHcWeights(x.cfg, x.input('out_hc_pre'), x.weights.globalF32('output_hc_scale.weight'), x.weights.globalF32('output_hc_base.weight'), x.p),
  out_embd: (x) => hcWeightedSum(x.cfg, headIn(x), x.input('out_hc_w'), x.p),
  out_norm: (x) => rmsNorm(x.input('out_embd'), x.weights.globalF32('output_norm.weight'), x.cfg.rmsEps, x.p),
  logits: withProducts((x) => [[x.weights.global('output.weight'), x.input('out_norm')]], (x) => matvec(x.weights.global('output.weight'), x.input('out_norm'), x.p)),
};
