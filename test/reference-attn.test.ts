// The attention side of the reference (catalog S0-S12): hand-computed cases and properties that
// catch real mistakes (Sinkhorn direction, comb indexing, RoPE pair layout, YaRN angles, sinks,
// compressor lanes and emission positions, any evaluation order bit for bit, the f64 twin's rounding).
import { describe, expect, it } from 'vitest';

import type { Ds4Config } from '../model/config.ts';
import { encodeF16, f16Round, fp8KvQuantizeInplace, quantizeQ8_0Weights } from '../model/quant/index.ts';
import { GGMLType } from '../model/quant/types.ts';
import { STAGES, stage as stageDef, stageAt, stageKey, windowPositions, type StageId } from '../model/stages.ts';
import { attentionWithSinks } from '../reference/attention.ts';
import { compressorPool, newCompressorState, windowState } from '../reference/compressor.ts';
import { embedHc, hcPost, hcSplitSinkhorn, outputHcWeights } from '../reference/hc.ts';
import { evaluate, type Graph, type Values } from '../reference/interpreter.ts';
import { rmsNorm } from '../reference/math.ts';
import { ropeTailInplace, ropeThetas, yarnCorrDims } from '../reference/rope.ts';
import type { LayerWeights, Precision, Vec, Weight } from '../reference/types.ts';

/** A tiny config with the real structure; dims chosen so FP8 (64-blocks of the no-RoPE part) and the
 *  indexer's Hadamard-128 apply: headDim 80 = 64 nope + 16 rot, indexer head dim 128. */
function tinyConfig(over: Partial<Ds4Config> = {}): Ds4Config {
  return {
    nLayer: 4, nEmbd: 32, nVocab: 16, nHead: 4, nHeadKv: 1, headDim: 80, nRot: 16,
    qLoraRank: 32, oLoraRank: 16, oGroups: 2, nExpert: 4, nExpertUsed: 2, nFfExp: 32, nExpertShared: 1,
    nHashLayers: 1, slidingWindow: 6, indexerHeads: 2, indexerHeadDim: 128, indexerTopK: 2,
    nHc: 4, sinkhornIters: 20, hcEps: 1e-6, rmsEps: 1e-6, compressRatios: [0, 0, 4, 128],
    swigluClamp: [10, 10, 10, 10], ropeFreqBase: 10000, ropeScalingFactor: 16, ropeOrigCtx: 65536,
    yarnBetaFast: 32, yarnBetaSlow: 1, compressRopeFreqBase: 160000, expertWeightsScale: 1.5,
    expertWeightsNorm: true, contextLength: 4096,
    ...over,
  };
}

/** Deterministic uniform(-1, 1) stream (LCG), so the synthetic weights are the same every run. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

/** Exact double matvec of an F32 Weight: the test's own independent computation of a projection. */
function exactMatvec(w: Weight, x: ArrayLike<number>): Float64Array {
  const W = new Float32Array(w.data.buffer, w.data.byteOffset, w.rows * w.cols);
  const out = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++) for (let c = 0; c < w.cols; c++) out[r] += W[r * w.cols + c] * x[c];
  return out;
}

function f32Weight(name: string, rows: number, cols: number, values: Float32Array): Weight {
  return { name, type: GGMLType.F32, rows, cols, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

/** Synthetic LayerWeights double with small random values: every 2-D tensor F32, or with `ggufTypes`
 *  the shipped GGUF's types (Q8_0 attention projections, F16 HC / compressor / indexer). */
const Q8_0_TENSORS = new Set(['attn_q_a.weight', 'attn_q_b.weight', 'attn_kv.weight', 'attn_output_a.weight', 'attn_output_b.weight']);

function synthLayer(cfg: Ds4Config, il: number, seed: number, ggufTypes = false): LayerWeights {
  const rand = rng(seed);
  const mats = new Map<string, Weight>();
  const vecs = new Map<string, Float32Array>();
  const mat = (name: string, rows: number, cols: number, amp: number) => {
    const v = new Float32Array(rows * cols);
    for (let i = 0; i < v.length; i++) v[i] = rand() * amp / Math.sqrt(cols);
    if (!ggufTypes) mats.set(name, f32Weight(name, rows, cols, v));
    else if (Q8_0_TENSORS.has(name)) mats.set(name, { name, type: GGMLType.Q8_0, rows, cols, data: quantizeQ8_0Weights(v) });
    else mats.set(name, { name, type: GGMLType.F16, rows, cols, data: encodeF16(v) });
  };
  const vec = (name: string, n: number, f: () => number) => vecs.set(name, Float32Array.from({ length: n }, f));
  const { nEmbd: E, nHc: H, headDim: D, nHead, qLoraRank: QL, oGroups: G, oLoraRank: OL } = cfg;
  mat('hc_attn_fn.weight', 2 * H + H * H, H * E, 1);
  vec('hc_attn_scale.weight', 3, () => 0.5 + 0.5 * rand());
  vec('hc_attn_base.weight', 2 * H + H * H, () => 0.5 * rand());
  vec('attn_norm.weight', E, () => 1 + 0.1 * rand());
  mat('attn_q_a.weight', QL, E, 1);
  vec('attn_q_a_norm.weight', QL, () => 1 + 0.1 * rand());
  mat('attn_q_b.weight', nHead * D, QL, 1);
  mat('attn_kv.weight', D, E, 1);
  vec('attn_kv_a_norm.weight', D, () => 1 + 0.1 * rand());
  vec('attn_sinks.weight', nHead, () => rand());
  mat('attn_output_a.weight', G * OL, (nHead / G) * D, 1);
  mat('attn_output_b.weight', E, G * OL, 1);
  const ratio = cfg.compressRatios[il];
  if (ratio !== 0) {
    const coff = ratio === 4 ? 2 : 1;
    mat('attn_compressor_kv.weight', coff * D, E, 1);
    mat('attn_compressor_gate.weight', coff * D, E, 3);
    mat('attn_compressor_ape.weight', ratio, coff * D, Math.sqrt(coff * D));
    vec('attn_compressor_norm.weight', D, () => 1 + 0.1 * rand());
  }
  if (ratio === 4) {
    const { indexerHeads: IH, indexerHeadDim: ID } = cfg;
    mat('indexer.attn_q_b.weight', IH * ID, QL, 1);
    mat('indexer.proj.weight', IH, E, 1);
    mat('indexer_compressor_kv.weight', 2 * ID, E, 1);
    mat('indexer_compressor_gate.weight', 2 * ID, E, 3);
    mat('indexer_compressor_ape.weight', 4, 2 * ID, Math.sqrt(2 * ID));
    vec('indexer_compressor_norm.weight', ID, () => 1 + 0.1 * rand());
  }
  const missing = (name: string): never => {
    throw new Error(`synthetic layer ${il} has no ${name}`);
  };
  return {
    il,
    has: (name) => mats.has(name) || vecs.has(name),
    get: (name) => mats.get(name) ?? missing(name),
    f32: (name) => vecs.get(name) ?? missing(name),
    i32: (name) => missing(name),
    expert: (name) => missing(name),
  };
}

interface Capture {
  stage: string;
  pos: number;
  values: Values;
}

/**
 * One layer of the interpreter over synthetic weights: `hcIn(pos)` is the HC state entering the layer,
 * `given` pre-sets stages (e.g. attn_norm) at chosen positions; `run` evaluates a stage where it exists.
 */
function layerGraph(cfg: Ds4Config, il: number, p: Precision, w: LayerWeights, hcIn: (pos: number) => Vec = () => { throw new Error('no hc_in'); }) {
  const store = new Map<string, Values>();
  const none = (): never => {
    throw new Error('not a layer tensor');
  };
  const g: Graph = { cfg, weights: { layer: () => w, global: none, globalF32: none, embeddingRow: none }, token: () => 0, lastLayer: il };
  const read = (s: StageId, l: number, q: number): Values => {
    if ((s === 'embed_hc' && il === 0) || (s === 'after_ffn_hc' && l === il - 1)) return hcIn(q);
    const v = store.get(stageKey(s, l, q));
    if (!v) throw new Error(`${s} layer ${l} pos ${q} not evaluated`);
    return v;
  };
  const caps: Capture[] = [];
  return {
    caps,
    set: (s: StageId, q: number, v: Values) => store.set(stageKey(s, il, q), v),
    run: (s: StageId, q: number): Values | undefined => {
      if (!stageAt(cfg, stageDef(s), il, q)) return undefined;
      const v = evaluate(g, s, il, q, p, read);
      store.set(stageKey(s, il, q), v);
      caps.push({ stage: s, pos: q, values: v });
      return v;
    },
  };
}

function randomHc(cfg: Ds4Config, p: Precision, seed: number): Vec {
  const rand = rng(seed);
  const row = Float32Array.from({ length: cfg.nEmbd }, rand);
  const hc = embedHc(cfg, p, row);
  for (let i = 0; i < hc.length; i++) hc[i] += 0.1 * rand(); // streams differ, like after a few layers
  return hc;
}

describe('hyper-connections (S0, S1, S12, S18)', () => {
  it('embedHc copies the embedding row into every stream', () => {
    const cfg = tinyConfig({ nEmbd: 2 });
    const hc = embedHc(cfg, 'ds4', Float32Array.from([1.5, -2]));
    expect(Array.from(hc)).toEqual([1.5, -2, 1.5, -2, 1.5, -2, 1.5, -2]);
  });

  it('Sinkhorn comb: for every output stream a the weights over source b sum to 1', () => {
    const rand = rng(7);
    for (const p of ['ds4', 'f64'] as Precision[]) {
      const mix = Float64Array.from({ length: 24 }, () => 3 * rand());
      const { pre, post, comb } = hcSplitSinkhorn(mix, Float32Array.from([1.3, 0.7, 2.1]), Float32Array.from({ length: 24 }, rand), 4, 20, 1e-6, p);
      for (let a = 0; a < 4; a++) {
        let s = 0;
        for (let b = 0; b < 4; b++) s += comb[a + 4 * b];
        expect(Math.abs(s - 1)).toBeLessThan(1e-5);
        expect(pre[a]).toBeGreaterThan(0);
        expect(pre[a]).toBeLessThan(1 + 2e-6);
        expect(post[a]).toBeGreaterThan(0);
        expect(post[a]).toBeLessThan(2);
      }
      // after 20 rounds the other direction is close to 1 too (doubly stochastic)
      for (let b = 0; b < 4; b++) {
        let s = 0;
        for (let a = 0; a < 4; a++) s += comb[a + 4 * b];
        expect(Math.abs(s - 1)).toBeLessThan(1e-2);
      }
    }
  });

  it('Sinkhorn ends on the sum over b: with few iterations only that direction is exact', () => {
    const rand = rng(9);
    const mix = Float64Array.from({ length: 24 }, () => 4 * rand());
    for (const iters of [1, 2]) {
      const { comb } = hcSplitSinkhorn(mix, Float32Array.from([1, 1, 3]), new Float32Array(24), 4, iters, 1e-6, 'f64');
      let worstA = 0;
      for (let a = 0; a < 4; a++) {
        let sb = 0;
        let sa = 0;
        for (let b = 0; b < 4; b++) {
          sb += comb[a + 4 * b];
          sa += comb[b + 4 * a];
        }
        expect(Math.abs(sb - 1)).toBeLessThan(1e-4); // the divisor is (Σ + 1e-6)
        worstA = Math.max(worstA, Math.abs(sa - 1));
      }
      expect(worstA).toBeGreaterThan(1e-2);
    }
  });

  it('hand-computed HC pre (n_hc 4, E 2): zero fn weights make pre = sigmoid(base) + eps', () => {
    const cfg = tinyConfig({ nEmbd: 2 });
    const H = 4;
    const zeros = new Float32Array((2 * H + H * H) * H * 2);
    // pre bases 0, ln 3, -ln 3, 0 → sigmoid 1/2, 3/4, 1/4, 1/2; post bases 0 → 2·sigmoid(0) = 1; comb bases 0 → uniform
    const base = new Float32Array(24);
    base[1] = Math.log(3);
    base[2] = -Math.log(3);
    const vecs: Record<string, Float32Array> = { 'hc_attn_scale.weight': Float32Array.from([1, 1, 1]), 'hc_attn_base.weight': base };
    const w: LayerWeights = {
      il: 0, has: () => true,
      get: () => f32Weight('hc_attn_fn.weight', 24, 8, zeros),
      f32: (n) => vecs[n], i32: () => new Int32Array(), expert: () => f32Weight('x', 1, 1, new Float32Array(1)),
    };
    const hc = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8]); // stream h = [2h+1, 2h+2]
    const L = layerGraph(cfg, 0, 'f64', w, () => hc);
    for (const s of ['hc_attn_mix', 'hc_attn_pre_w', 'hc_attn_post_w', 'hc_attn_comb'] as StageId[]) L.run(s, 5);
    const cur = L.run('attn_cur', 5)!, post = L.caps[2].values, comb = L.caps[3].values;
    const pre = [0.5 + 1e-6, 0.75 + 1e-6, 0.25 + 1e-6, 0.5 + 1e-6];
    expect(cur[0]).toBeCloseTo(pre[0] * 1 + pre[1] * 3 + pre[2] * 5 + pre[3] * 7, 5);
    expect(cur[1]).toBeCloseTo(pre[0] * 2 + pre[1] * 4 + pre[2] * 6 + pre[3] * 8, 5);
    for (let i = 0; i < 4; i++) expect(post[i]).toBeCloseTo(1, 12);
    for (let i = 0; i < 16; i++) expect(comb[i]).toBeCloseTo(0.25, 5);
  });

  it('hand-computed HC post: out[a] = post[a]·x + Σ_b comb[a + 4b]·hc[b]', () => {
    const cfg = tinyConfig({ nEmbd: 2 });
    const hc = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const comb = new Float64Array(16);
    comb[0 + 4 * 1] = 1; // output 0 takes source stream 1
    comb[1 + 4 * 3] = 0.5; // output 1 takes half of source 3 ...
    comb[1 + 4 * 0] = 2; // ... and twice source 0
    comb[3 + 4 * 3] = 1; // output 3 keeps stream 3; output 2 gets no residual
    const out = hcPost(cfg, Float64Array.from([10, 20]), hc, Float64Array.from([1, 0.5, 2, 0]), comb, 'f64');
    expect(Array.from(out)).toEqual([10 + 3, 20 + 4, 5 + 3.5 + 2, 10 + 4 + 4, 20, 40, 7, 8]);
  });

  it('output head HC weights are plain sigmoid + eps (no 2×)', () => {
    const cfg = tinyConfig();
    const w = outputHcWeights(cfg, Float64Array.from([0, 1, 0, 0]), Float32Array.from([Math.log(3)]), Float32Array.from([0, 0, Math.log(3), -100]), 'f64');
    expect(w[0]).toBeCloseTo(0.5 + 1e-6, 12);
    expect(w[1]).toBeCloseTo(0.75 + 1e-6, 7);
    expect(w[2]).toBeCloseTo(0.75 + 1e-6, 7);
    expect(w[3]).toBeCloseTo(1e-6, 12);
  });
});

describe('RoPE on the head tail (S5, S10)', () => {
  const cfg = tinyConfig();

  it('rotates adjacent pairs of the tail only, by pos·base^(-2j/nRot) on dense layers', () => {
    const D = cfg.headDim;
    const nope = D - cfg.nRot;
    const x = new Float64Array(2 * D);
    for (let i = 0; i < nope; i++) x[i] = i + 1;
    // head 1: pair j = 1 holds (1, 0), pair j = 2 holds (0, 2)
    x[D + nope + 2] = 1;
    x[D + nope + 5] = 2;
    const before = x.slice();
    ropeTailInplace(cfg, 0, x, 2, D, 3, false, 'f64');
    for (let i = 0; i < nope; i++) expect(x[i]).toBe(before[i]);
    const th1 = 3 * Math.pow(10000, -2 / cfg.nRot);
    const th2 = 3 * Math.pow(10000, -4 / cfg.nRot);
    expect(x[D + nope + 2]).toBeCloseTo(Math.cos(th1), 12);
    expect(x[D + nope + 3]).toBeCloseTo(Math.sin(th1), 12);
    expect(x[D + nope + 4]).toBeCloseTo(-2 * Math.sin(th2), 12);
    expect(x[D + nope + 5]).toBeCloseTo(2 * Math.cos(th2), 12);
    // the NeoX halves partner of dim nope+2 (nope+2+nRot/2) stays zero
    expect(x[D + nope + 2 + cfg.nRot / 2]).toBe(0);
  });

  it('preserves pair norms and the inverse undoes it (dense and YaRN layers, both precisions)', () => {
    const rand = rng(11);
    for (const il of [0, 2]) {
      for (const p of ['ds4', 'f64'] as Precision[]) {
        const x = p === 'ds4' ? new Float32Array(3 * cfg.headDim) : new Float64Array(3 * cfg.headDim);
        for (let i = 0; i < x.length; i++) x[i] = rand();
        const y = x.slice();
        ropeTailInplace(cfg, il, y, 3, cfg.headDim, 1234, false, p);
        const tol = p === 'ds4' ? 1e-6 : 1e-12;
        for (let i = 0; i < x.length; i += 2) {
          expect(Math.hypot(y[i], y[i + 1])).toBeCloseTo(Math.hypot(x[i], x[i + 1]), p === 'ds4' ? 5 : 11);
        }
        ropeTailInplace(cfg, il, y, 3, cfg.headDim, 1234, true, p);
        for (let i = 0; i < x.length; i++) expect(Math.abs(y[i] - x[i])).toBeLessThan(tol * 4);
      }
    }
  });

  it('YaRN angles on compressed layers match the closed form (lo = 15, hi = 25 for the real config)', () => {
    const real = tinyConfig({ nRot: 64, headDim: 512 });
    // corr_dim(β) = nRot·ln(orig / (β·2π)) / (2·ln base)
    const corr = (beta: number) => (64 * Math.log(65536 / (beta * 2 * Math.PI))) / (2 * Math.log(160000));
    const lo = Math.floor(corr(32));
    const hi = Math.ceil(corr(1));
    expect([lo, hi]).toEqual([15, 25]);
    expect(yarnCorrDims(64, 65536, 160000, 32, 1, 'ds4')).toEqual([15, 25]);
    expect(yarnCorrDims(64, 65536, 160000, 32, 1, 'f64')).toEqual([15, 25]);
    for (const pos of [1, 1000, 70000]) {
      const th = ropeThetas(real, 2, pos, 'f64');
      const thF = ropeThetas(real, 2, pos, 'ds4');
      for (const j of [3, 15, 20, 25, 31]) {
        const extrap = pos * Math.pow(160000, (-2 * j) / 64);
        const ramp = 1 - Math.min(1, Math.max(0, (j - 15) / 10));
        const want = extrap * ramp + (extrap / 16) * (1 - ramp);
        expect(Math.abs(th[j] - want) / want).toBeLessThan(1e-12);
        expect(Math.abs(thF[j] - want) / want).toBeLessThan(2e-5);
      }
      // dense layers: plain base 10000
      const dense = ropeThetas(real, 0, pos, 'f64');
      expect(dense[10] / (pos * Math.pow(10000, -20 / 64))).toBeCloseTo(1, 12);
    }
  });
});

describe('attention with sinks (S9)', () => {
  it('attention over one row returns that row when the sink is negligible', () => {
    const rand = rng(3);
    const D = 8;
    const q = Float32Array.from({ length: 2 * D }, rand);
    const k = Float32Array.from({ length: D }, rand);
    const out = attentionWithSinks(q, 2, D, Float32Array.from([-1e30, -1e30]), k, 1, null, 0, null, 'ds4');
    for (let h = 0; h < 2; h++) for (let d = 0; d < D; d++) expect(out[h * D + d]).toBe(k[d]);
  });

  it('the sink only adds to the denominator: weight = e^s / (e^sink + e^s)', () => {
    const D = 4;
    // q·k/√D = (2 ln 3)·1/2 = ln 3; sink 0 → weight 3/4; second head sink ln 3 → weight 1/2
    const q = Float64Array.from([2 * Math.log(3), 0, 0, 0, 2 * Math.log(3), 0, 0, 0]);
    const k = Float64Array.from([1, 2, -1, 4]);
    const out = attentionWithSinks(q, 2, D, Float32Array.from([0, Math.fround(Math.log(3))]), k, 1, null, 0, null, 'f64');
    for (let d = 0; d < D; d++) {
      expect(out[d]).toBeCloseTo(0.75 * k[d], 12);
      expect(out[D + d]).toBeCloseTo(0.5 * k[d], 6);
    }
  });

  it('raw and compressed rows share one softmax; masked compressed rows are skipped', () => {
    const D = 2;
    const q = Float64Array.from([0, 0]); // all scores 0: equal weights over visible rows and the sink
    const raw = Float64Array.from([1, 0]);
    const comp = Float64Array.from([0, 1, 5, 5]);
    const all = attentionWithSinks(q, 1, D, Float32Array.from([-1e30]), raw, 1, comp, 2, null, 'f64');
    expect(Array.from(all)).toEqual([2, 2]); // (1+0+5)/3, (0+1+5)/3
    const masked = attentionWithSinks(q, 1, D, Float32Array.from([0]), raw, 1, comp, 2, Uint8Array.from([1, 0]), 'f64');
    expect(masked[0]).toBeCloseTo(1 / 3, 12); // rows (1,0), (0,1) and the sink share the denominator
    expect(masked[1]).toBeCloseTo(1 / 3, 12);
  });
});

describe('compressor (S7, S8)', () => {
  it('ratio-4 pool: lane A from the previous window rows, lane B from the current window rows', () => {
    const st = newCompressorState('f64', 'attn', 4, 2);
    const W = st.width; // 4
    for (let i = 0; i < st.kv.length; i++) st.kv[i] = i + 1;
    // dim 0: row 1 lane A (col 0) score 0, row 6 lane B (col 2) score ln 3 → weights 1/4, 3/4
    st.score[1 * W + 0] = 0;
    st.score[6 * W + 2] = Math.log(3);
    // dim 1: row 5 lane B (col 3) score 5; row 5 lane-A column (col 1) is not a candidate
    st.score[5 * W + 3] = 5;
    st.score[5 * W + 1] = 100;
    const out = compressorPool(st, 'f64');
    expect(out[0]).toBeCloseTo(0.25 * st.kv[1 * W + 0] + 0.75 * st.kv[6 * W + 2], 12);
    expect(out[1]).toBeCloseTo(st.kv[5 * W + 3], 12);
  });

  it('an empty window dim pools to 0', () => {
    const st = newCompressorState('ds4', 'attn', 128, 4);
    expect(Array.from(compressorPool(st, 'ds4'))).toEqual([0, 0, 0, 0]);
  });

  for (const [il, ratio, emits] of [[2, 4, [3, 7, 11]], [3, 128, [127]]] as const) {
    it(`ratio ${ratio} emits at pos ${emits.join(',')} a row RoPE'd at comp_pos = pos + 1 - ratio`, () => {
      const cfg = tinyConfig();
      const w = synthLayer(cfg, il, 100 + il);
      const x = Float64Array.from({ length: cfg.nEmbd }, rng(5));
      // the same input every token → every window slot r has kv = W_kv·x and score = W_gate·x + ape[r];
      // ratio 4 pools dims [0,D) of the previous window (absent in the first) with dims [D,2D) of the current
      const D = cfg.headDim;
      const kv = exactMatvec(w.get('attn_compressor_kv.weight'), x);
      const g = exactMatvec(w.get('attn_compressor_gate.weight'), x);
      const apeW = w.get('attn_compressor_ape.weight');
      const ape = new Float32Array(apeW.data.buffer, apeW.data.byteOffset, apeW.rows * apeW.cols);
      const pooled = (first: boolean) => {
        const out = new Float64Array(D);
        for (let j = 0; j < D; j++) {
          const cands: [number, number][] = []; // (score, value)
          for (let r = 0; r < ratio; r++) {
            if (ratio === 128) cands.push([g[j] + ape[r * D + j], kv[j]]);
            else {
              if (!first) cands.push([g[j] + ape[r * 2 * D + j], kv[j]]);
              cands.push([g[D + j] + ape[r * 2 * D + D + j], kv[D + j]]);
            }
          }
          const m = Math.max(...cands.map((c) => c[0]));
          let num = 0;
          let den = 0;
          for (const [sc, v] of cands) {
            num += Math.exp(sc - m) * v;
            den += Math.exp(sc - m);
          }
          out[j] = num / den;
        }
        return out;
      };
      const L = layerGraph(cfg, il, 'f64', w);
      const seen: number[] = [];
      for (let pos = 0; pos < emits[emits.length - 1] + 2; pos++) {
        L.set('attn_norm', pos, x);
        L.run('attn_comp_kv', pos);
        L.run('attn_comp_score', pos);
        const row = L.run('attn_comp_row', pos);
        if (!row) continue;
        // the window's state as the step rebuilds it from the projections, pooled: the hand-computed pool
        const positions = windowPositions(cfg, 'attn_comp_kv', il, pos);
        expect(positions.length).toBe(ratio === 4 && seen.length === 0 ? 4 : ratio === 4 ? 8 : ratio);
        const at = (stage: string) => positions.map((q) => L.caps.find((c) => c.stage === stage && c.pos === q)!.values as Vec);
        const st = windowState('attn', ratio, D, pos, positions, at('attn_comp_kv'), at('attn_comp_score'), 'f64');
        const got = rmsNorm(compressorPool(st, 'f64'), w.f32('attn_compressor_norm.weight'), cfg.rmsEps, 'f64');
        const want = rmsNorm(pooled(seen.length === 0), w.f32('attn_compressor_norm.weight'), cfg.rmsEps, 'f64');
        for (let i = 0; i < D; i++) expect(got[i]).toBeCloseTo(want[i], 9);
        // the emitted row: that pool RoPE'd at comp_pos = pos + 1 - ratio, FP8 on the non-RoPE dims, stored f16
        ropeTailInplace(cfg, il, got, 1, D, pos + 1 - ratio, false, 'f64');
        fp8KvQuantizeInplace(got, 0, D - cfg.nRot);
        expect(Array.from(row)).toEqual(Array.from(got, f16Round));
        seen.push(pos);
      }
      expect(seen).toEqual([...emits]);
    });
  }
});

describe('attention side of a layer (S1-S12) through the interpreter', () => {
  const cfg = tinyConfig();
  const N = 13;
  const ATTN = STAGES.filter((d) => d.scope === 'layer' && d.order <= stageDef('after_attn_hc').order).map((d) => d.name);

  /** Every attention stage of layer il over N tokens, evaluated chunk by chunk (a chunk stage-major, as a prefill). */
  function run(il: number, p: Precision, chunks: number[], ggufTypes = false): { outs: Vec[]; caps: Capture[] } {
    const L = layerGraph(cfg, il, p, synthLayer(cfg, il, 40 + il, ggufTypes), (q) => randomHc(cfg, p, 1000 + q));
    let pos = 0;
    for (const n of chunks) {
      const positions = Array.from({ length: n }, (_, i) => pos + i);
      for (const s of ATTN) for (const q of positions) L.run(s, q);
      pos += n;
    }
    const outs = L.caps.filter((c) => c.stage === 'after_attn_hc').sort((x, y) => x.pos - y.pos).map((c) => c.values as Vec);
    return { outs, caps: L.caps };
  }

  const key = (c: Capture) => `${c.stage}@${c.pos}`;

  for (const [il, gguf] of [[0, false], [2, false], [3, false], [2, true]] as const) {
    it(`layer kind ${cfg.compressRatios[il]}${gguf ? ' (Q8_0 + F16 weights)' : ''}: prefill of ${N} tokens == token-by-token decode, bit for bit`, () => {
      const batch = run(il, 'ds4', [N], gguf);
      const decode = run(il, 'ds4', Array(N).fill(1), gguf);
      const mixed = run(il, 'ds4', [5, 1, 7], gguf);
      for (const other of [decode, mixed]) {
        expect(other.outs.length).toBe(N);
        for (let t = 0; t < N; t++) expect(Buffer.compare(Buffer.from(other.outs[t].buffer), Buffer.from(batch.outs[t].buffer))).toBe(0);
        const a = new Map(batch.caps.map((c) => [key(c), c]));
        expect(other.caps.length).toBe(batch.caps.length);
        for (const c of other.caps) {
          const b = a.get(key(c));
          expect(b, key(c)).toBeDefined();
          expect(Array.from(c.values), key(c)).toEqual(Array.from(b!.values));
        }
      }
    });
  }

  it('captures every attention stage at the right positions (ratio 4: rows at 3,7,11; top-k only when n_comp > top_k)', () => {
    const { caps } = run(2, 'ds4', [N]);
    const at = (s: string) => caps.filter((c) => c.stage === s).map((c) => c.pos).sort((x, y) => x - y);
    const all = Array.from({ length: N }, (_, i) => i);
    for (const s of ['hc_attn_mix', 'attn_cur', 'attn_norm', 'q_lora', 'q_norm', 'kv_raw', 'q_rope', 'kv_cur', 'raw_cache', 'attn_comp_kv', 'index_comp_score', 'attn_heads', 'attn_heads_back', 'attn_low', 'attn_out', 'after_attn_hc']) {
      expect(at(s), s).toEqual(all);
    }
    expect(at('attn_comp_row')).toEqual([3, 7, 11]);
    expect(at('index_comp_row')).toEqual([3, 7, 11]);
    // top_k = 2: selection from the third compressed row on (pos 11, 12)
    expect(at('index_topk')).toEqual([11, 12]);
    expect(at('index_scores')).toEqual([11, 12]);
    const topk = caps.find((c) => c.stage === 'index_topk')!;
    expect(topk.values).toBeInstanceOf(Int32Array);
    expect(topk.values.length).toBe(2);
    // the raw cache slides: window 6 rows at most
    const raw = caps.filter((c) => c.stage === 'raw_cache').sort((x, y) => x.pos - y.pos);
    expect(raw.map((c) => c.values.length / cfg.headDim)).toEqual([1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 6, 6]);
    // the newest raw row is the token's kv_cur
    const last = raw[N - 1];
    const kvCur = caps.find((c) => c.stage === 'kv_cur' && c.pos === N - 1)!;
    expect(Array.from(last.values.slice(5 * cfg.headDim))).toEqual(Array.from(kvCur.values));
  });

  it('the f64 twin keeps ds4\'s quantization and differs only by rounding', () => {
    const relRms = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      let num = 0;
      let den = 0;
      for (let i = 0; i < a.length; i++) {
        num += (a[i] - b[i]) ** 2;
        den += b[i] ** 2;
      }
      return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    };
    for (const il of [0, 2, 3]) {
      const a = run(il, 'ds4', [N], true);
      const b = run(il, 'f64', [N], true);
      const fb = new Map(b.caps.map((c) => [key(c), c.values]));
      let flips = 0;
      let rows = 0;
      for (const c of a.caps) {
        const other = fb.get(key(c));
        expect(other, key(c)).toBeDefined();
        if (c.values instanceof Int32Array) continue;
        rows++;
        // free-running, an FP8/FP4/int8 code can round the other way where the value sits on a boundary,
        // and the row then differs by that code step; everywhere else the twin is f32 rounding away
        const d = relRms(c.values, other!);
        if (d > 1e-5) flips++;
        else expect(d, key(c)).toBeGreaterThanOrEqual(0);
      }
      expect(flips / rows, `layer ${il}: rows off by more than rounding`).toBeLessThan(0.25);
      // the quantizers run in both: the f64 twin's cached rows sit on ds4's FP8/f16 grid, mostly on the very same codes
      const kvA = a.caps.find((c) => c.stage === 'kv_cur' && c.pos === 0)!.values, kvB = fb.get('kv_cur@0')!;
      let same = 0;
      for (let i = 0; i < kvA.length; i++) if (kvA[i] === kvB[i]) same++;
      expect(same / kvA.length).toBeGreaterThan(0.9);
      for (const v of kvB) expect(f16Round(v)).toBe(v);
    }
  });
});
