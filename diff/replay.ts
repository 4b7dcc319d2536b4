// Replay (issue 7): recompute every stage of a dump from that dump's OWN inputs with the reference's
// stage functions, and report each stage's own error. Free-running dumps (a device run, an imported
// ds4 dump, a colleague's file) carry errors that accumulate downstream; feeding each stage the values
// the producer actually consumed isolates the kernel that is wrong by itself — the same question the
// teacher-forced device pass answers, but for any dump, with no access to the producer.
//
// Each stage is recomputed from its registry inputs (reference/registry.ts `inputs`; `prev:` = the
// previous layer's stage, the embedding for layer 0, the last layer for the head) by the reference op
// that produces it. Where one reference function bundles several stages (hcPre, routedExperts,
// sharedExpert, groupedOut, indexerAllowed, compressorStep) it is called with the dump's values of all
// its inputs and the needed output is picked. Stateful stages read the earlier positions they depend
// on from the same dump: raw_cache@p the window's kv_cur rows, a compressed row its window's
// projections, attn_heads the compressed rows emitted up to p and index_topk@p. A stage whose inputs
// are not all in the dump is reported as skipped, naming the first missing input.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { layerKind, type Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import type { GgufModel } from '../model/gguf.ts';
import { fp8KvQuantizeInplace } from '../model/quant/index.ts';
import { attentionWithSinks, groupedOut, indexerAllowed, indexerScores } from '../reference/attention.ts';
import { STAGE_PREFIX, closeCompressedRow, compressorStep, newCompressorState, type CompressorLane } from '../reference/compressor.ts';
import { expertsDown, routedExperts, routerProbs, routerSelect, routerWeights, sharedExpert, sumExperts, topkDesc } from '../reference/ffn.ts';
import { embedHc, hcPost, hcSplitSinkhorn, hcWeightedSum, outputHcWeights } from '../reference/hc.ts';
import { cacheRow, cacheRows, newRowCache, pushComp, pushRaw } from '../reference/kvcache.ts';
import { headRmsNormInplace, rmsNorm, rounder } from '../reference/math.ts';
import { matvec } from '../reference/matvec.ts';
import { graphOrderKey, resolveStage, stageInLayer, type StageDef } from '../reference/registry.ts';
import { ropeTailInplace } from '../reference/rope.ts';
import type { LayerContext, LayerWeights, Vec } from '../reference/types.ts';
import { ModelWeights } from '../reference/weights.ts';
import { throwIfCancelled } from './cancel.ts';
import { iterateDump, readDumpMeta, type DumpMeta } from './dump.ts';
import { MANIFEST_NAME, readManifest } from './manifest.ts';
import { recordMetrics, type Metrics } from './metrics.ts';
import { checkThresholds, EMPTY_POLICY, nearTieMargin, thresholdsFor, type Policy, type Thresholds, type Violation } from './policy.ts';
import type { StageRecord } from './record.ts';

export interface ReplayRow {
  stage: string;
  layer: number;
  pos: number;
  status: 'pass' | 'fail' | 'skipped';
  /** skipped: why (the missing input, by stage, layer and pos); fail: a shape or dtype disagreement */
  reason?: string;
  /** own error: the replayed value (reference side) against the dumped one */
  metrics?: Metrics;
  thresholds?: Thresholds;
  violations: Violation[];
}

export interface ReplayResult {
  file: string;
  rows: ReplayRow[];
  counts: { rows: number; replayed: number; passed: number; failed: number; skipped: number };
  /** the first own-error failure in graph order: the first stage that is wrong by itself */
  firstOwnFailure?: ReplayRow;
}

export interface ReplayOptions {
  model: GgufModel;
  cfg: Ds4Config;
  policy?: Policy;
  /** which dumped records to replay (default all) */
  filter?: (stage: string, layer: number, pos: number) => boolean;
  onProgress?: (m: string) => void;
  warn?: (m: string) => void;
}

/** Replay runs the reference's CPU arithmetic (the dumps it checks are f32). */
const P = 'ds4' as const;

/** An input the replay needs is not in the dump (or not usable): the row is skipped with this reason. */
class Unavailable extends Error {}

const key = (stage: string, layer: number, pos: number) => `${stage}\u0000${layer}\u0000${pos}`;
const product = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** What one stage's replay reads: the dump's records, the model, and the dump's layout facts. */
class ReplayInputs {
  readonly weights: ModelWeights;
  private memo = new Map<string, Map<string, Vec | Int32Array>>();

  constructor(
    readonly cfg: Ds4Config,
    model: GgufModel,
    private readonly records: Map<string, StageRecord>,
    private readonly meta: DumpMeta,
    /** the layer whose after_ffn_hc fed the output head */
    readonly headLayer: number,
  ) {
    this.weights = new ModelWeights(model, cfg);
  }

  /** The dumped values of an input stage, checked against the registry's per-position size. */
  need(stage: string, layer: number, pos: number): Vec {
    const v = this.values(stage, layer, pos);
    if (!(v instanceof Float32Array)) throw new Unavailable(`input ${stage} layer ${layer} pos ${pos} is not f32`);
    return v;
  }

  needI32(stage: string, layer: number, pos: number): Int32Array {
    const v = this.values(stage, layer, pos);
    if (!(v instanceof Int32Array)) throw new Unavailable(`input ${stage} layer ${layer} pos ${pos} is not i32`);
    return v;
  }

  private values(stage: string, layer: number, pos: number): Float32Array | Int32Array {
    const r = this.records.get(key(stage, layer, pos));
    if (!r) throw new Unavailable(`missing input ${stage} layer ${layer} pos ${pos}`);
    const def = resolveStage(stage) as StageDef;
    const one = product(def.shape(this.cfg, { layer, n: 1 }));
    // count-dependent stages (raw_cache rows, indexer candidates) are checked where they are read
    if (one === product(def.shape(this.cfg, { layer, n: 2 })) && r.values.length !== one) {
      throw new Unavailable(`input ${stage} layer ${layer} pos ${pos} has ${r.values.length} values, expected ${one}`);
    }
    return r.values;
  }

  /** The HC state entering layer `il` (S1: the previous layer's after_ffn_hc, the embedding for layer 0). */
  hcIn(il: number, pos: number): Vec {
    return il === 0 ? this.need('embed_hc', 0, pos) : this.need('after_ffn_hc', il - 1, pos);
  }

  /** The token at `pos`: the record's own, else the dump's prompt tokens. */
  token(rec: StageRecord): number {
    const t = rec.token >= 0 ? rec.token : this.meta.promptTokens[rec.pos];
    if (t === undefined || t < 0) throw new Unavailable(`the token id at pos ${rec.pos} is not in the dump`);
    if (t >= this.cfg.nVocab) throw new Unavailable(`token ${t} at pos ${rec.pos} is outside the model's vocabulary (0..${this.cfg.nVocab - 1})`);
    return t;
  }

  /** The dumped router_topk, checked to name experts of the model (a wrong id must not abort the replay). */
  experts(il: number, pos: number): Int32Array {
    const sel = this.needI32('router_topk', il, pos);
    for (const e of sel) if (!(e >= 0 && e < this.cfg.nExpert)) throw new Unavailable(`input router_topk layer ${il} pos ${pos} selects expert ${e} of ${this.cfg.nExpert}`);
    return sel;
  }

  lw(il: number): LayerWeights {
    return this.weights.layer(il);
  }

  /**
   * Runs a bundled reference function of layer `il` with a context that keeps what it emits, and
   * returns one emitted stage. Memoized per (function, layer, pos) so the stages it bundles share one call.
   */
  bundled(name: string, il: number, pos: number, stage: string, run: (cx: LayerContext) => void): Vec | Int32Array {
    const k = `${name}/${il}/${pos}`;
    let out = this.memo.get(k);
    if (!out) {
      const emitted = new Map<string, Vec | Int32Array>();
      const cx: LayerContext = { cfg: this.cfg, il, p: P, w: this.lw(il), emit: (s, at, values) => { if (at === pos) emitted.set(s, values.slice()); } };
      run(cx);
      this.memo.set(k, (out = emitted));
    }
    const v = out.get(stage);
    if (!v) throw new Unavailable(`the reference emits no ${stage} at layer ${il} pos ${pos}`);
    return v;
  }

  /** Bundled calls are only shared between the stages of one (layer, pos). */
  forget(): void {
    this.memo.clear();
  }
}

/** Recomputes one stage at (layer, pos) from the dump. */
type Replayer = (x: ReplayInputs, il: number, pos: number, rec: StageRecord) => Vec | Int32Array;

const copy = (v: Vec): Vec => v.slice();

/** S1/S13 hc_pre_from_state_one, mix step: F16 matvec of the RMS-normalized (no weight) HC state. */
const hcMix = (side: 'attn' | 'ffn', hc: (x: ReplayInputs, il: number, pos: number) => Vec): Replayer => (x, il, pos) =>
  matvec(x.lw(il).get(`hc_${side}_fn.weight`), rmsNorm(hc(x, il, pos), null, x.cfg.rmsEps, P), P);

/** S1/S13 Sinkhorn split of the dumped mix; `part` picks pre, post or comb. */
const hcSplit = (side: 'attn' | 'ffn', part: 'pre' | 'post' | 'comb'): Replayer => (x, il, pos) => {
  const w = x.lw(il);
  return hcSplitSinkhorn(x.need(`hc_${side}_mix`, il, pos), w.f32(`hc_${side}_scale.weight`), w.f32(`hc_${side}_base.weight`), x.cfg.nHc, x.cfg.sinkhornIters, x.cfg.hcEps, P)[part];
};

const afterAttn = (x: ReplayInputs, il: number, pos: number) => x.need('after_attn_hc', il, pos);

/** A norm with a learned weight of the dumped input stage. */
const normOf = (input: string, weight: string): Replayer => (x, il, pos) => rmsNorm(x.need(input, il, pos), x.lw(il).f32(weight), x.cfg.rmsEps, P);

/** A matvec of the dumped input stage (Q8_0 weights quantize the activation first, as ds4's CPU path). */
const matvecOf = (input: string, weight: string): Replayer => (x, il, pos) => matvec(x.lw(il).get(weight), x.need(input, il, pos), P);

/** S5 RoPE of the dumped per-head-normed rows at pos (S10: the inverse, of the attention output). */
const ropeOf = (input: string, heads: (c: Ds4Config) => number, inverse: boolean): Replayer => (x, il, pos) => {
  const v = copy(x.need(input, il, pos));
  ropeTailInplace(x.cfg, il, v, heads(x.cfg), x.cfg.headDim, pos, inverse, P);
  return v;
};

const LANES: Record<CompressorLane, { stage: string; dim: (c: Ds4Config) => number }> = {
  attn: { stage: STAGE_PREFIX.attn, dim: (c) => c.headDim },
  indexer: { stage: STAGE_PREFIX.indexer, dim: (c) => c.indexerHeadDim },
};

/** S7/S8 the per-token projections (kv, score + ape) of compressorStep, from the dumped attn_norm. */
const compressorProjection = (lane: CompressorLane, what: 'kv' | 'score'): Replayer => (x, il, pos) => {
  const l = LANES[lane];
  const norm = x.need('attn_norm', il, pos);
  return x.bundled(`compressor-${lane}`, il, pos, `${l.stage}_${what}`, (cx) => {
    compressorStep(cx, newCompressorState(P, lane, x.cfg.compressRatios[il], l.dim(x.cfg)), norm, pos);
  });
};

/**
 * S7/S8 the compressed row emitted at pos ((pos+1) % ratio == 0) from the dumped projections of its
 * window. The state is laid out as compressorStep keeps it: ratio 128 one lane of `ratio` rows (row =
 * pos mod ratio); ratio 4 the previous window in rows 0..3 and the current one in rows 4..7 (catalog S7).
 * Then the reference's closing sequence (closeCompressedRow: pool, RMSNorm, RoPE, FP8 or Hadamard + FP4)
 * and the cache's f16 store.
 */
const compressedRow = (lane: CompressorLane): Replayer => (x, il, pos) => {
  const { cfg } = x;
  const l = LANES[lane];
  const ratio = cfg.compressRatios[il];
  const dim = l.dim(cfg);
  const st = newCompressorState(P, lane, ratio, dim);
  const span = ratio === 4 ? 2 * ratio : ratio;
  for (let q = Math.max(0, pos + 1 - span); q <= pos; q++) {
    const row = ratio === 4 ? (q > pos - ratio ? ratio : 0) + (q % ratio) : q % ratio;
    st.kv.set(x.need(`${l.stage}_kv`, il, q), row * st.width);
    st.score.set(x.need(`${l.stage}_score`, il, q), row * st.width);
  }
  const comp = closeCompressedRow(cfg, il, x.lw(il), st, pos, P);
  const stored = newRowCache(P, 1, dim, `layer ${il} replayed ${l.stage}_row`);
  pushComp(stored, comp, P);
  return cacheRow(stored, 0);
};

/** The compressed rows of a lane emitted at positions ≤ pos, oldest first, as the cache holds them. */
function compressedRows(x: ReplayInputs, lane: CompressorLane, il: number, pos: number): { rows: Float32Array; n: number } {
  const ratio = x.cfg.compressRatios[il];
  const dim = LANES[lane].dim(x.cfg);
  const n = Math.floor((pos + 1) / ratio);
  const rows = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) rows.set(x.need(`${LANES[lane].stage}_row`, il, (i + 1) * ratio - 1), i * dim);
  return { rows, n };
}

/**
 * S8 index_q / index_w: indexerAllowed with the dump's attn_norm, q_lora_norm and indexer rows (it
 * emits them only when it selects, i.e. with more rows than top-k, as at the dumped pos).
 */
const indexerPart = (stage: string): Replayer => (x, il, pos) => {
  const { rows, n } = compressedRows(x, 'indexer', il, pos);
  const cache = newRowCache(P, n, x.cfg.indexerHeadDim, `layer ${il} replayed indexer rows`);
  for (let i = 0; i < n; i++) pushComp(cache, rows.subarray(i * x.cfg.indexerHeadDim, (i + 1) * x.cfg.indexerHeadDim), P);
  const norm = x.need('attn_norm', il, pos), qr = x.need('q_lora_norm', il, pos);
  return x.bundled('indexer', il, pos, stage, (cx) => {
    indexerAllowed(cx, norm, qr, cache, pos);
  });
};

/** S8 index_scores from the dumped index_q, index_w and indexer rows (the reference's indexerScores). */
const indexScores: Replayer = (x, il, pos) => {
  const { rows, n } = compressedRows(x, 'indexer', il, pos);
  return indexerScores(x.cfg, rows, n, x.need('index_q', il, pos), x.need('index_w', il, pos), P);
};

/**
 * S8 index_topk from the dumped scores: top-k, descending, ties to the lowest index — indexerAllowed's
 * repeated arg-max and ffn.ts topkDesc order finite scores identically.
 */
const indexTopk: Replayer = (x, il, pos) => {
  const scores = x.need('index_scores', il, pos);
  return topkDesc(scores, Math.min(x.cfg.indexerTopK, scores.length));
};

/**
 * S9 attention of the dumped q_rope over the dumped raw window at pos and the compressed rows emitted
 * up to pos; on ratio-4 layers with more rows than top-k, only the rows the dumped index_topk selected.
 */
const attnHeads: Replayer = (x, il, pos) => {
  const { cfg } = x;
  const D = cfg.headDim;
  const raw = x.need('raw_cache', il, pos);
  if (raw.length % D !== 0 || raw.length === 0) throw new Unavailable(`input raw_cache layer ${il} pos ${pos} has ${raw.length} values, not whole rows of ${D}`);
  const ratio = cfg.compressRatios[il];
  const comp = ratio === 0 ? { rows: new Float32Array(0), n: 0 } : compressedRows(x, 'attn', il, pos);
  let allowed: Uint8Array | null = null;
  if (ratio === 4 && comp.n > cfg.indexerTopK) {
    allowed = new Uint8Array(comp.n);
    for (const c of x.needI32('index_topk', il, pos)) {
      if (c < 0 || c >= comp.n) throw new Unavailable(`input index_topk layer ${il} pos ${pos} selects row ${c} of ${comp.n}`);
      allowed[c] = 1;
    }
  }
  return attentionWithSinks(x.need('q_rope', il, pos), cfg.nHead, D, x.lw(il).f32('attn_sinks.weight'), raw, raw.length / D, comp.rows, comp.n, allowed, P);
};

/** S6 the raw window at pos: the dumped kv_cur rows of the last min(pos+1, sliding window) positions, pushed in order. */
const rawCache: Replayer = (x, il, pos) => {
  const n = Math.min(pos + 1, x.cfg.slidingWindow);
  const c = newRowCache(P, n, x.cfg.headDim, `layer ${il} replayed raw cache`);
  for (let q = pos + 1 - n; q <= pos; q++) pushRaw(c, x.need('kv_cur', il, q), P);
  return cacheRows(c);
};

/** S6 the cached row: FP8 on the non-RoPE dims, then the cache's f16 store. */
const kvCur: Replayer = (x, il, pos) => {
  const v = copy(x.need('kv_rope', il, pos));
  fp8KvQuantizeInplace(v, 0, x.cfg.headDim - x.cfg.nRot);
  const c = newRowCache(P, 1, x.cfg.headDim, `layer ${il} replayed kv_cur`);
  pushRaw(c, v, P);
  return cacheRow(c, 0);
};

/** S15 moe_gate / moe_up / moe_mid: routedExperts with the dumped ffn_norm, router_topk and router_w. */
const routed = (stage: string): Replayer => (x, il, pos) => {
  const norm = x.need('ffn_norm', il, pos), sel = x.experts(il, pos), w = x.need('router_w', il, pos);
  return x.bundled('routed', il, pos, stage, (cx) => {
    routedExperts(cx, norm, sel, w, pos);
  });
};

/** S15 moe_down from the dumped moe_mid and router_topk: the reference's expertsDown. */
const moeDown: Replayer = (x, il, pos) => {
  const sel = x.experts(il, pos);
  return expertsDown(x.lw(il), il, sel, x.need('moe_mid', il, pos), x.cfg.nFfExp, x.cfg.nEmbd, P);
};

/** S15 moe_out: the dumped per-slot down rows summed in slot order (the reference's sumExperts). */
const moeOut: Replayer = (x, il, pos) => {
  const down = x.need('moe_down', il, pos);
  return sumExperts(down, down.length / x.cfg.nEmbd, x.cfg.nEmbd, P);
};

/** S17 ffn_out = moe_out + shared_out (ffnToken). */
const ffnOut: Replayer = (x, il, pos) => {
  const r = rounder(P);
  const moe = x.need('moe_out', il, pos), shared = x.need('shared_out', il, pos);
  return Float32Array.from(moe, (v, d) => r(v + shared[d]));
};

/** The HC state the head reads: after_ffn_hc of the dump's last layer. */
const headIn = (x: ReplayInputs, pos: number) => x.need('after_ffn_hc', x.headLayer, pos);

const REPLAY: Record<string, Replayer> = {
  embed_hc: (x, _il, _pos, rec) => embedHc(x.cfg, P, x.weights.embeddingRow(x.token(rec))),
  hc_attn_mix: hcMix('attn', (x, il, pos) => x.hcIn(il, pos)),
  hc_attn_pre_w: hcSplit('attn', 'pre'),
  hc_attn_post_w: hcSplit('attn', 'post'),
  hc_attn_comb: hcSplit('attn', 'comb'),
  attn_cur: (x, il, pos) => hcWeightedSum(x.cfg, x.hcIn(il, pos), x.need('hc_attn_pre_w', il, pos), P),
  attn_norm: normOf('attn_cur', 'attn_norm.weight'),
  q_lora: matvecOf('attn_norm', 'attn_q_a.weight'),
  q_lora_norm: normOf('q_lora', 'attn_q_a_norm.weight'),
  q_raw: matvecOf('q_lora_norm', 'attn_q_b.weight'),
  q_norm: (x, il, pos) => {
    const v = copy(x.need('q_raw', il, pos));
    headRmsNormInplace(v, x.cfg.nHead, x.cfg.headDim, x.cfg.rmsEps, P);
    return v;
  },
  kv_raw: matvecOf('attn_norm', 'attn_kv.weight'),
  kv_norm: normOf('kv_raw', 'attn_kv_a_norm.weight'),
  q_rope: ropeOf('q_norm', (c) => c.nHead, false),
  kv_rope: ropeOf('kv_norm', (c) => c.nHeadKv, false),
  kv_cur: kvCur,
  raw_cache: rawCache,
  attn_comp_kv: compressorProjection('attn', 'kv'),
  attn_comp_score: compressorProjection('attn', 'score'),
  attn_comp_row: compressedRow('attn'),
  index_comp_kv: compressorProjection('indexer', 'kv'),
  index_comp_score: compressorProjection('indexer', 'score'),
  index_comp_row: compressedRow('indexer'),
  index_q: indexerPart('index_q'),
  index_w: indexerPart('index_w'),
  index_scores: indexScores,
  index_topk: indexTopk,
  attn_heads: attnHeads,
  attn_heads_back: ropeOf('attn_heads', (c) => c.nHead, true),
  attn_low: (x, il, pos) => {
    const back = x.need('attn_heads_back', il, pos);
    return x.bundled('grouped-out', il, pos, 'attn_low', (cx) => {
      groupedOut(cx, back, pos);
    });
  },
  attn_out: matvecOf('attn_low', 'attn_output_b.weight'),
  after_attn_hc: (x, il, pos) => hcPost(x.cfg, x.need('attn_out', il, pos), x.hcIn(il, pos), x.need('hc_attn_post_w', il, pos), x.need('hc_attn_comb', il, pos), P),
  hc_ffn_mix: hcMix('ffn', afterAttn),
  hc_ffn_pre_w: hcSplit('ffn', 'pre'),
  hc_ffn_post_w: hcSplit('ffn', 'post'),
  hc_ffn_comb: hcSplit('ffn', 'comb'),
  ffn_cur: (x, il, pos) => hcWeightedSum(x.cfg, afterAttn(x, il, pos), x.need('hc_ffn_pre_w', il, pos), P),
  ffn_norm: normOf('ffn_cur', 'ffn_norm.weight'),
  router_logits: matvecOf('ffn_norm', 'ffn_gate_inp.weight'),
  router_probs: (x, il, pos) => routerProbs(x.need('router_logits', il, pos), P),
  router_topk: (x, il, pos, rec) => {
    const probs = x.need('router_probs', il, pos);
    // only the hash layers (tid2eid) route by token
    const token = x.lw(il).has('ffn_gate_tid2eid.weight') ? x.token(rec) : -1;
    return x.bundled('router-select', il, pos, 'router_topk', (cx) => cx.emit('router_topk', pos, routerSelect(cx, probs, token)));
  },
  router_w: (x, il, pos) => routerWeights(x.need('router_probs', il, pos), x.experts(il, pos), x.cfg.expertWeightsScale, P),
  moe_gate: routed('moe_gate'),
  moe_up: routed('moe_up'),
  moe_mid: routed('moe_mid'),
  moe_down: moeDown,
  moe_out: moeOut,
  shared_mid: (x, il, pos) => {
    const norm = x.need('ffn_norm', il, pos);
    return x.bundled('shared', il, pos, 'shared_mid', (cx) => {
      sharedExpert(cx, norm, pos);
    });
  },
  shared_out: matvecOf('shared_mid', 'ffn_down_shexp.weight'),
  ffn_out: ffnOut,
  after_ffn_hc: (x, il, pos) => hcPost(x.cfg, x.need('ffn_out', il, pos), afterAttn(x, il, pos), x.need('hc_ffn_post_w', il, pos), x.need('hc_ffn_comb', il, pos), P),
  out_hc_pre: (x, _il, pos) => matvec(x.weights.global('output_hc_fn.weight'), rmsNorm(headIn(x, pos), null, x.cfg.rmsEps, P), P),
  out_hc_w: (x, _il, pos) => outputHcWeights(x.cfg, x.need('out_hc_pre', x.cfg.nLayer, pos), x.weights.globalF32('output_hc_scale.weight'), x.weights.globalF32('output_hc_base.weight'), P),
  out_embd: (x, _il, pos) => hcWeightedSum(x.cfg, headIn(x, pos), x.need('out_hc_w', x.cfg.nLayer, pos), P),
  out_norm: (x, _il, pos) => rmsNorm(x.need('out_embd', x.cfg.nLayer, pos), x.weights.globalF32('output_norm.weight'), x.cfg.rmsEps, P),
  logits: (x, _il, pos) => matvec(x.weights.global('output.weight'), x.need('out_norm', x.cfg.nLayer, pos), P),
};

/**
 * The layer whose after_ffn_hc fed the head: the run's last layer from the run directory's manifest
 * when the dump sits in one, else the highest layer the dump holds (a `--layer N` run ends at N).
 */
function headLayerOf(file: string, records: Iterable<StageRecord>, cfg: Ds4Config): number {
  const dir = path.dirname(file);
  if (fs.existsSync(path.join(dir, MANIFEST_NAME))) {
    try {
      return readManifest(dir).layers.last;
    } catch {
      // an unreadable manifest next to the dump is not this dump's problem: fall back to its contents
    }
  }
  let last = -1;
  for (const r of records) if (r.layer < cfg.nLayer && resolveStage(r.stage)?.scope === 'layer' && r.layer > last) last = r.layer;
  return last < 0 ? cfg.nLayer - 1 : last;
}

function ownError(rec: StageRecord, replayed: Vec | Int32Array, t: Thresholds): Pick<ReplayRow, 'status' | 'reason' | 'metrics' | 'violations'> {
  const a = replayed instanceof Int32Array ? replayed : replayed instanceof Float32Array ? replayed : Float32Array.from(replayed);
  if ((a instanceof Int32Array) !== (rec.values instanceof Int32Array)) {
    return { status: 'fail', reason: `dtype ${rec.dtype}, the reference produces ${a instanceof Int32Array ? 'i32' : 'f32'}`, violations: [{ threshold: 'dtype', value: 1, limit: 0 }] };
  }
  if (a.length !== rec.values.length) {
    return { status: 'fail', reason: `${rec.values.length} values (shape [${rec.shape}]), the reference produces ${a.length}`, violations: [{ threshold: 'shape', value: rec.values.length, limit: a.length }] };
  }
  const metrics = recordMetrics(a, rec.values, { logits: rec.stage === 'logits', nearTieMargin: nearTieMargin(t) });
  const violations = checkThresholds(metrics, t);
  return { status: violations.length ? 'fail' : 'pass', metrics, violations };
}

/** Why a dumped record cannot be replayed at all, independent of the other records. */
function notReplayable(rec: StageRecord, cfg: Ds4Config): string | undefined {
  const def = resolveStage(rec.stage);
  if (!def) return `'${rec.stage}' is not a registry stage`;
  if (!REPLAY[def.name]) return `replay has no recomputation for ${def.name}`;
  if (def.scope === 'layer' && !(rec.layer >= 0 && rec.layer < cfg.nLayer)) return `layer ${rec.layer} is not a layer of the model (0..${cfg.nLayer - 1})`;
  if (def.scope === 'layer' && !stageInLayer(def, layerKind(cfg, rec.layer))) {
    return `layer ${rec.layer} (compress ratio ${cfg.compressRatios[rec.layer]}) has no ${def.name}`;
  }
  if ((def.when === 'emit' || def.when === 'index-emit') && (rec.pos + 1) % cfg.compressRatios[rec.layer] !== 0) {
    return `no compressed row closes at pos ${rec.pos} (ratio ${cfg.compressRatios[rec.layer]})`;
  }
  return undefined;
}

export async function replayDump(file: string, opts: ReplayOptions): Promise<ReplayResult> {
  const { model, cfg } = opts;
  const policy = opts.policy ?? EMPTY_POLICY;
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`ds4-diff: warning: ${m}\n`));
  const meta = await readDumpMeta(file);
  if (meta.modelFingerprint === 'unknown') {
    warn(`${file} does not name its model (imported without -m); replaying it on ${model.path} unchecked`);
  } else if (meta.modelFingerprint !== model.fingerprint) {
    throw badInput(`${file} was made with model ${meta.modelFingerprint.slice(0, 12)}, not ${model.path} (${model.fingerprint.slice(0, 12)}); pass its model with -m`);
  }
  if ((meta.producer?.options as { teacherForced?: boolean } | undefined)?.teacherForced) {
    warn(`${file} is a teacher-forced capture: its stages consumed the reference's values, not the dumped ones, so its own error is its compare against the reference, not its replay`);
  }
  const records = new Map<string, StageRecord>();
  for await (const r of iterateDump(file)) records.set(key(r.stage, r.layer, r.pos), r);
  const inputs = new ReplayInputs(cfg, model, records, meta, headLayerOf(file, records.values(), cfg));

  const keep = opts.filter ?? (() => true);
  const order = [...records.values()].filter((r) => keep(r.stage, r.layer, r.pos));
  order.sort((x, y) => {
    const kx = graphOrderKey(x.stage, x.layer, x.pos), ky = graphOrderKey(y.stage, y.layer, y.pos);
    for (let i = 0; i < 4; i++) if (kx[i] !== ky[i]) return kx[i] - ky[i];
    return x.layer - y.layer || (x.stage < y.stage ? -1 : x.stage > y.stage ? 1 : 0);
  });

  const rows: ReplayRow[] = [];
  let group = '';
  for (const [i, rec] of order.entries()) {
    await throwIfCancelled();
    if (`${rec.layer}/${rec.pos}` !== group) {
      inputs.forget();
      group = `${rec.layer}/${rec.pos}`;
      opts.onProgress?.(`pos ${rec.pos} layer ${rec.layer} (${i + 1}/${order.length} records)`);
    }
    const base = { stage: rec.stage, layer: rec.layer, pos: rec.pos };
    const why = notReplayable(rec, cfg);
    if (why) {
      rows.push({ ...base, status: 'skipped', reason: why, violations: [] });
      continue;
    }
    const stage = (resolveStage(rec.stage) as StageDef).name;
    const t = thresholdsFor(policy, stage, rec.layer, rec.pos);
    let replayed: Vec | Int32Array;
    try {
      replayed = REPLAY[stage](inputs, rec.layer, rec.pos, rec);
    } catch (e) {
      if (!(e instanceof Unavailable)) throw e;
      rows.push({ ...base, status: 'skipped', reason: e.message, violations: [] });
      continue;
    }
    rows.push({ ...base, thresholds: t, ...ownError(rec, replayed, t) });
  }
  const passed = rows.filter((r) => r.status === 'pass').length;
  const failed = rows.filter((r) => r.status === 'fail').length;
  const skipped = rows.length - passed - failed;
  return {
    file,
    rows,
    counts: { rows: rows.length, replayed: passed + failed, passed, failed, skipped },
    firstOwnFailure: rows.find((r) => r.status === 'fail'),
  };
}
