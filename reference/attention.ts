// Attention ops of a DS4 layer (catalog S8-S11), following ds4.c's CPU path: attention over the raw
// sliding window and the compressed rows with sinks, the indexer's scores and top-k, and the grouped
// output projection. The graph around them (which stage reads what) is the registry's (model/stages.ts);
// reference/steps.ts applies these ops to a stage's inputs.
import type { Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import { dot, expP, NEG_INF, rounder } from './math.ts';
import { matvec, rowSlice } from './matvec.ts';
import type { Precision, Vec, Weight } from './types.ts';
import { allocVec } from './types.ts';

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
 * S8 ds4.c `indexer_allowed_decode_one`'s selection: top_k of the scores by repeated arg-max (strict >,
 * ties to the lowest index), in selection order.
 */
export function indexerTopk(scores: ArrayLike<number>, k: number): Int32Array {
  const taken = new Uint8Array(scores.length);
  const top = new Int32Array(k);
  for (let j = 0; j < k; j++) {
    let best = 0;
    let bestScore = NEG_INF;
    for (let c = 0; c < scores.length; c++) {
      if (taken[c] === 0 && scores[c] > bestScore) {
        best = c;
        bestScore = scores[c];
      }
    }
    taken[best] = 1;
    top[j] = best;
  }
  return top;
}

/**
 * S11 ds4.c `layer_grouped_out_one`, first half: the heads form oGroups groups of nHead/oGroups
 * consecutive heads; group g goes through rows g·oLora.. of attn_output_a with its own activation
 * quantization (one matvec per group): these (weight rows, heads) pairs.
 */
export function groupedOutProducts(cfg: Ds4Config, oa: Weight, heads: Vec): Array<[Weight, Vec]> {
  const G = cfg.oGroups;
  const groupDim = (cfg.nHead / G) * cfg.headDim;
  if (oa.cols !== groupDim || oa.rows < G * cfg.oLoraRank) {
    throw badInput(`${oa.name}: expected [${groupDim}, ${G * cfg.oLoraRank}] (group dim, groups × output_lora_rank), got [${oa.cols}, ${oa.rows}]`);
  }
  return Array.from({ length: G }, (_, g) => [rowSlice(oa, g * cfg.oLoraRank, cfg.oLoraRank), heads.subarray(g * groupDim, (g + 1) * groupDim)]);
}

/** S11 the grouped output's low-rank half: each group's product, concatenated (groupedOutProducts). */
export function groupedOutLow(cfg: Ds4Config, oa: Weight, heads: Vec, p: Precision): Vec {
  const low = allocVec(p, cfg.oGroups * cfg.oLoraRank);
  groupedOutProducts(cfg, oa, heads).forEach(([w, x], g) => low.set(matvec(w, x, p), g * cfg.oLoraRank));
  return low;
}
