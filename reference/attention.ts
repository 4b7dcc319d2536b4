// The attention side of a DS4 layer (catalog S1-S12), following ds4.c `layer_attention_raw_swa_batch`
// (prefill) / `layer_attention_raw_swa_one` (decode): HC pre + attention norm and the Q/KV
// projections per token, then a sequential per-token loop in position order (RoPE, FP8, raw cache
// push, compressor(s), indexer, attention against the cache as it is at that token, inverse RoPE),
// then the grouped output projection and HC post. Every per-token computation is the same function
// in both paths, so a batch equals the same tokens decoded one call at a time, bit for bit.
import type { Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import { fp8KvQuantizeInplace } from '../model/quant/index.ts';
import type { LayerContext, Precision, Vec } from './types.ts';
import { allocVec } from './types.ts';
import { checkCompressRatio, compressorStep, HADAMARD_N, indexerQat, newCompressorState } from './compressor.ts';
import type { CompressorState } from './compressor.ts';
import { hcPost, hcPre } from './hc.ts';
import { cacheRow, cacheRows, newRowCache, pushComp, pushRaw } from './kvcache.ts';
import type { RowCache } from './kvcache.ts';
import { dot, expP, headRmsNormInplace, NEG_INF, rmsNorm, rounder } from './math.ts';
import { matvec, rowSlice } from './matvec.ts';
import { ropeTailInplace } from './rope.ts';

/** What one layer's attention keeps between tokens (ds4.c `ds4_layer_cache`, catalog §6). */
export interface AttnLayerState {
  il: number;
  /** compress ratio: 0 (raw only), 4 (compressor + indexer) or 128 (compressor) */
  ratio: number;
  /** raw sliding window: min(slidingWindow, ctx) rows × headDim, FP8 + f16 rounded, oldest first */
  raw: RowCache;
  /** compressed attention rows (ctx/ratio + 2) × headDim; null on raw layers */
  comp: RowCache | null;
  attnCompressor: CompressorState | null;
  /** ratio 4 only: compressed indexer rows (ctx/4 + 2) × indexerHeadDim */
  indexComp: RowCache | null;
  indexCompressor: CompressorState | null;
  /** tokens processed so far = the next absolute position */
  nTok: number;
}

export function newAttnLayerState(cfg: Ds4Config, il: number, ctxLen: number, p: Precision): AttnLayerState {
  if (!(ctxLen >= 1)) throw badInput(`context length ${ctxLen} must be at least 1`);
  const ratio = checkCompressRatio(cfg, il);
  // ds4_default_raw_cap: the sliding window, at most the context, at least one row
  const rawCap = Math.max(1, Math.min(cfg.slidingWindow, ctxLen));
  const compCap = ratio === 0 ? 0 : Math.floor(ctxLen / ratio) + 2;
  if (ratio === 4 && cfg.indexerHeadDim !== HADAMARD_N) {
    throw badInput(`attention.indexer.key_length is ${cfg.indexerHeadDim}; the indexer's Hadamard transform needs ${HADAMARD_N}`);
  }
  return {
    il,
    ratio,
    raw: newRowCache(p, rawCap, cfg.headDim, `layer ${il} raw KV cache`),
    comp: ratio === 0 ? null : newRowCache(p, compCap, cfg.headDim, `layer ${il} compressed KV cache`),
    attnCompressor: ratio === 0 ? null : newCompressorState(p, 'attn', ratio, cfg.headDim),
    indexComp: ratio === 4 ? newRowCache(p, compCap, cfg.indexerHeadDim, `layer ${il} indexer KV cache`) : null,
    indexCompressor: ratio === 4 ? newCompressorState(p, 'indexer', ratio, cfg.indexerHeadDim) : null,
    nTok: 0,
  };
}

/**
 * S9 ds4.c `layer_attention_rows_one` / `layer_attention_mixed_one`, for every head h:
 * s_r = (q_h·k_r)/√D over the raw rows then the compressed rows (rows with allowed[c] == 0 are
 * skipped); m = max(sink_h, max s); out_h = Σ exp(s_r − m)·k_r / (exp(sink_h − m) + Σ exp(s_r − m)).
 * The sink adds to the denominator only; K = V (one shared row).
 */
export function attentionWithSinks(
  q: Vec, nHead: number, headDim: number, sinks: Float32Array,
  raw: Vec, nRaw: number, comp: Vec | null, nComp: number, allowed: Uint8Array | null, p: Precision,
): Vec {
  const r = rounder(p);
  const kqScale = r(1 / r(Math.sqrt(headDim)));
  const out = allocVec(p, nHead * headDim);
  const n = nRaw + nComp;
  const score = new Float64Array(n);
  const rowOf = (i: number): [Vec, number] => (i < nRaw ? [raw, i * headDim] : [comp as Vec, (i - nRaw) * headDim]);
  const visible = (i: number) => i < nRaw || !allowed || allowed[i - nRaw] !== 0;
  for (let h = 0; h < nHead; h++) {
    const qo = h * headDim;
    let max = sinks[h];
    for (let i = 0; i < n; i++) {
      if (!visible(i)) continue;
      const [rows, off] = rowOf(i);
      score[i] = r(dot(q, qo, rows, off, headDim, p) * kqScale);
      if (score[i] > max) max = score[i];
    }
    let den = expP(r(sinks[h] - max), p);
    for (let i = 0; i < n; i++) {
      if (!visible(i)) continue;
      const wgt = expP(r(score[i] - max), p);
      const [rows, off] = rowOf(i);
      den = r(den + wgt);
      for (let d = 0; d < headDim; d++) out[qo + d] = r(out[qo + d] + r(wgt * rows[off + d]));
    }
    const inv = r(1 / den);
    for (let d = 0; d < headDim; d++) out[qo + d] = r(out[qo + d] * inv);
  }
  return out;
}

/** S8 the indexer score of each of n compressed rows k_c: Σ_h relu(q_h·k_c)·w_h, heads in order. */
export function indexerScores(cfg: Ds4Config, k: Vec, n: number, iq: Vec, wts: Vec, p: Precision): Vec {
  const r = rounder(p);
  const IH = cfg.indexerHeads, ID = cfg.indexerHeadDim;
  const scores = allocVec(p, n);
  for (let c = 0; c < n; c++) {
    let s = 0;
    for (let h = 0; h < IH; h++) s = r(s + r(Math.max(0, dot(k, c * ID, iq, h * ID, ID, p)) * wts[h]));
    scores[c] = s;
  }
  return scores;
}

/**
 * S8 ds4.c `indexer_allowed_decode_one`: with more compressed rows than top_k, score every
 * compressed indexer row as Σ_h relu(iq_h·k_c)·w_h and keep top_k of them by repeated arg-max
 * (strict >, ties to the lowest index). Returns null when every row is visible (no selection).
 */
export function indexerAllowed(cx: LayerContext, attnNorm: Vec, qrNorm: Vec, rows: RowCache, pos: number): Uint8Array | null {
  const { cfg, p, w } = cx;
  const r = rounder(p);
  const n = rows.n;
  const topK = Math.min(cfg.indexerTopK, n);
  if (n === 0 || topK === n) return null;
  const IH = cfg.indexerHeads;
  const ID = cfg.indexerHeadDim;

  const iq = matvec(w.get('indexer.attn_q_b.weight'), qrNorm, p);
  ropeTailInplace(cfg, cx.il, iq, IH, ID, pos, false, p);
  for (let h = 0; h < IH; h++) indexerQat(iq, h * ID, p);
  cx.emit('index_q', pos, iq, [IH, ID]);

  const wts = matvec(w.get('indexer.proj.weight'), attnNorm, p);
  const scale = r(1 / r(Math.sqrt(ID * IH)));
  for (let h = 0; h < IH; h++) wts[h] = r(wts[h] * scale);
  cx.emit('index_w', pos, wts);

  const scores = indexerScores(cfg, cacheRows(rows), n, iq, wts, p);
  cx.emit('index_scores', pos, scores);

  const allowed = new Uint8Array(n);
  const topk = new Int32Array(topK);
  for (let j = 0; j < topK; j++) {
    let best = 0;
    let bestScore = NEG_INF;
    for (let c = 0; c < n; c++) {
      if (allowed[c] === 0 && scores[c] > bestScore) {
        best = c;
        bestScore = scores[c];
      }
    }
    allowed[best] = 1;
    topk[j] = best;
  }
  cx.emit('index_topk', pos, topk);
  return allowed;
}

/**
 * S11 ds4.c `layer_grouped_out_one`: the heads form oGroups groups of nHead/oGroups consecutive
 * heads; group g goes through rows g·oLora.. of attn_output_a with its own activation
 * quantization (one matvec per group), then attn_output_b maps all groups back to nEmbd.
 */
export function groupedOut(cx: LayerContext, heads: Vec, pos: number): Vec {
  const { cfg, p, w } = cx;
  const G = cfg.oGroups;
  const groupDim = (cfg.nHead / G) * cfg.headDim;
  const oa = w.get('attn_output_a.weight');
  if (oa.cols !== groupDim || oa.rows < G * cfg.oLoraRank) {
    throw badInput(`${oa.name}: expected [${groupDim}, ${G * cfg.oLoraRank}] (group dim, groups × output_lora_rank), got [${oa.cols}, ${oa.rows}]`);
  }
  const low = allocVec(p, G * cfg.oLoraRank);
  for (let g = 0; g < G; g++) {
    const part = matvec(rowSlice(oa, g * cfg.oLoraRank, cfg.oLoraRank), heads.subarray(g * groupDim, (g + 1) * groupDim), p);
    low.set(part, g * cfg.oLoraRank);
  }
  cx.emit('attn_low', pos, low);
  const out = matvec(w.get('attn_output_b.weight'), low, p);
  cx.emit('attn_out', pos, out);
  return out;
}

function copyVec(v: Vec): Vec {
  return v.slice();
}

/**
 * The attention sublayer for consecutive tokens `positions` of layer cx.il (their HC states
 * `hcIn`), updating `st`; returns after_attn_hc per token. One token = ds4 decode.
 */
export function attentionSublayer(cx: LayerContext, hcIn: Vec[], positions: number[], st: AttnLayerState): Vec[] {
  const { cfg, p, w, il } = cx;
  const nt = positions.length;
  if (hcIn.length !== nt) throw new Error(`attentionSublayer: ${hcIn.length} HC states for ${nt} positions`);
  for (let t = 0; t < nt; t++) {
    if (positions[t] !== st.nTok + t) throw new Error(`attentionSublayer layer ${il}: position ${positions[t]} out of order (expected ${st.nTok + t})`);
  }
  const eps = cfg.rmsEps;
  const D = cfg.headDim;

  // HC pre + attention norm (ds4 hc_pre_norm_batch)
  const pre = hcIn.map((hc, t) => hcPre(cx, 'attn', hc, positions[t]));
  const attnNormW = w.f32('attn_norm.weight');
  const norm = pre.map((x, t) => {
    const y = rmsNorm(x.cur, attnNormW, eps, p);
    cx.emit('attn_norm', positions[t], y);
    return y;
  });

  // Q low-rank projection + per-head norm (S3)
  const qA = w.get('attn_q_a.weight');
  const qB = w.get('attn_q_b.weight');
  const qANorm = w.f32('attn_q_a_norm.weight');
  const qrNorm: Vec[] = [];
  const qNorm: Vec[] = [];
  for (let t = 0; t < nt; t++) {
    const pos = positions[t];
    const qr = matvec(qA, norm[t], p);
    cx.emit('q_lora', pos, qr);
    qrNorm.push(rmsNorm(qr, qANorm, eps, p));
    cx.emit('q_lora_norm', pos, qrNorm[t]);
    const q = matvec(qB, qrNorm[t], p);
    cx.emit('q_raw', pos, q, [cfg.nHead, D]);
    const qn = copyVec(q);
    headRmsNormInplace(qn, cfg.nHead, D, eps, p);
    cx.emit('q_norm', pos, qn, [cfg.nHead, D]);
    qNorm.push(qn);
  }

  // KV projection (S4)
  const kvW = w.get('attn_kv.weight');
  const kvANorm = w.f32('attn_kv_a_norm.weight');
  const kvNorm = norm.map((x, t) => {
    const raw = matvec(kvW, x, p);
    cx.emit('kv_raw', positions[t], raw);
    const y = rmsNorm(raw, kvANorm, eps, p);
    cx.emit('kv_norm', positions[t], y);
    return y;
  });

  // the sequential per-token loop (S5-S10)
  const sinks = w.f32('attn_sinks.weight');
  const back: Vec[] = [];
  for (let t = 0; t < nt; t++) {
    const pos = positions[t];
    const q = copyVec(qNorm[t]);
    ropeTailInplace(cfg, il, q, cfg.nHead, D, pos, false, p);
    cx.emit('q_rope', pos, q, [cfg.nHead, D]);
    const kv = copyVec(kvNorm[t]);
    ropeTailInplace(cfg, il, kv, cfg.nHeadKv, D, pos, false, p);
    cx.emit('kv_rope', pos, kv);
    const kvq = copyVec(kv);
    if (p === 'ds4') fp8KvQuantizeInplace(kvq, 0, D - cfg.nRot);
    // pushed before attention: the token attends to itself
    pushRaw(st.raw, kvq, p);
    cx.emit('kv_cur', pos, copyVec(cacheRow(st.raw, st.raw.n - 1)));
    cx.emit('raw_cache', pos, copyVec(cacheRows(st.raw)), [st.raw.n, D]);

    let allowed: Uint8Array | null = null;
    if (st.comp && st.attnCompressor) {
      const row = compressorStep(cx, st.attnCompressor, norm[t], pos);
      if (row) {
        pushComp(st.comp, row, p);
        cx.emit('attn_comp_row', pos, copyVec(cacheRow(st.comp, st.comp.n - 1)));
      }
      if (st.indexComp && st.indexCompressor) {
        const irow = compressorStep(cx, st.indexCompressor, norm[t], pos);
        if (irow) {
          pushComp(st.indexComp, irow, p);
          cx.emit('index_comp_row', pos, copyVec(cacheRow(st.indexComp, st.indexComp.n - 1)));
        }
        allowed = indexerAllowed(cx, norm[t], qrNorm[t], st.indexComp, pos);
      }
    }
    const nComp = st.comp ? st.comp.n : 0;
    const heads = attentionWithSinks(q, cfg.nHead, D, sinks, cacheRows(st.raw), st.raw.n, st.comp ? cacheRows(st.comp) : null, nComp, allowed, p);
    cx.emit('attn_heads', pos, heads, [cfg.nHead, D]);
    const hb = copyVec(heads);
    ropeTailInplace(cfg, il, hb, cfg.nHead, D, pos, true, p);
    cx.emit('attn_heads_back', pos, hb, [cfg.nHead, D]);
    back.push(hb);
  }
  st.nTok += nt;

  // grouped output projection + HC post (S11, S12)
  return back.map((hb, t) => {
    const pos = positions[t];
    const out = groupedOut(cx, hb, pos);
    const after = hcPost(cfg, out, hcIn[t], pre[t].post, pre[t].comb, p);
    cx.emit('after_attn_hc', pos, after, [cfg.nHc, cfg.nEmbd]);
    return after;
  });
}
