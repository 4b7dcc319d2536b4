// FFN ops of a DS4 layer (catalog S14-S16), following ds4.c's CPU path: the router (sqrt-softplus;
// hash routing from tid2eid on the first layers, biased top-k elsewhere, weights from the UNBIASED
// probabilities), the routed experts (Q8_K activations, IQ2_XXS gate/up, clamps, SiLU, router weight
// before down, Q8_K mid, Q2_K down, sum in slot order) and the shared expert (Q8_0 SwiGLU MLP).
import type { Ds4Config } from '../model/config.ts';
import { GGMLType, typeName } from '../model/quant/types.ts';
import { rounder, silu, softplus, sqrtP } from './math.ts';
import { matvec } from './matvec.ts';
import { allocVec, type LayerWeights, type Precision, type Vec, type Weight } from './types.ts';

/** ds4 floors the router weight sum at 2^-14 before normalizing (layer_topk_selected_experts_from_probs). */
const ROUTER_SUM_FLOOR = 6.103515625e-5;

/** S14: p_e = sqrt(softplus(logit_e)) — sqrt-softplus scores, not sigmoid or softmax. */
export function routerProbs(logits: Vec, p: Precision): Vec {
  const probs = allocVec(p, logits.length);
  for (let e = 0; e < logits.length; e++) probs[e] = sqrtP(softplus(logits[e], p), p);
  return probs;
}

/**
 * S14 top-k by insertion (ds4 `topk_desc`): strict `>` so ties keep the lower expert index, result in
 * descending score order.
 */
export function topkDesc(score: ArrayLike<number>, k: number): Int32Array {
  const idx = new Int32Array(k).fill(-1);
  for (let i = 0; i < score.length; i++) {
    for (let j = 0; j < k; j++) {
      if (idx[j] < 0 || score[i] > score[idx[j]]) {
        for (let m = k - 1; m > j; m--) idx[m] = idx[m - 1];
        idx[j] = i;
        break;
      }
    }
  }
  return idx;
}

/** S14 weights: w_k = p_sel_k / max(sum_k p_sel_k, 2^-14) * expert_weights_scale. */
export function routerWeights(probs: Vec, selected: Int32Array, scale: number, p: Precision): Vec {
  const r = rounder(p);
  const w = allocVec(p, selected.length);
  let sum = 0;
  for (let k = 0; k < selected.length; k++) {
    w[k] = probs[selected[k]];
    sum = r(sum + w[k]);
  }
  if (sum < ROUTER_SUM_FLOOR) sum = ROUTER_SUM_FLOOR;
  for (let k = 0; k < selected.length; k++) w[k] = r(r(w[k] / sum) * scale);
  return w;
}

/** S14 the selection score of every expert: probs + exp_probs_b where the layer has the bias (selection only). */
export function routerScores(w: LayerWeights, probs: Vec, p: Precision): Float64Array {
  const score = Float64Array.from(probs);
  if (w.has('exp_probs_b.bias')) {
    const bias = w.f32('exp_probs_b.bias');
    const r = rounder(p);
    for (let e = 0; e < score.length; e++) score[e] = r(score[e] + bias[e]);
  }
  return score;
}

/** S14: hash layers take tid2eid[token]; others take the top-k of the selection scores (routerScores). */
export function routerSelect(cfg: Ds4Config, w: LayerWeights, probs: Vec, token: number, p: Precision): Int32Array {
  const K = cfg.nExpertUsed;
  if (w.has('ffn_gate_tid2eid.weight')) {
    const table = w.i32('ffn_gate_tid2eid.weight');
    if (token < 0 || (token + 1) * K > table.length) throw new Error(`layer ${w.il}: token ${token} is outside the hash routing table`);
    const sel = table.slice(token * K, (token + 1) * K);
    for (const e of sel) if (e < 0 || e >= cfg.nExpert) throw new Error(`layer ${w.il}: hash-selected expert ${e} is outside 0..${cfg.nExpert - 1}`);
    return sel;
  }
  return topkDesc(routerScores(w, probs, p), K);
}

/**
 * How close a top-k choice came to being another: the smallest score gap between consecutive chosen ids (the
 * order is the slot order) and between the last chosen and the best unchosen. A kernel whose scores differ
 * from the reference's by more than this may choose otherwise: a near tie.
 */
export function selectionGap(score: ArrayLike<number>, chosen: Int32Array): number {
  let gap = Infinity;
  for (let j = 0; j + 1 < chosen.length; j++) gap = Math.min(gap, score[chosen[j]] - score[chosen[j + 1]]);
  const taken = new Set(chosen);
  let best = -Infinity;
  for (let i = 0; i < score.length; i++) if (!taken.has(i) && score[i] > best) best = score[i];
  return chosen.length ? Math.min(gap, score[chosen[chosen.length - 1]] - best) : gap;
}

/** ds4 `swiglu`'s clamp (S15/S16): the gate is clamped from above only, the up projection both ways. */
export function clampGate(g: number, clamp: number): number {
  return clamp > 1e-6 && g > clamp ? clamp : g;
}

export function clampUp(u: number, clamp: number): number {
  return clamp > 1e-6 ? Math.max(-clamp, Math.min(clamp, u)) : u;
}

function expectType(wt: Weight, t: GGMLType, il: number): void {
  if (wt.type !== t) throw new Error(`layer ${il}: ${wt.name} is ${typeName(wt.type)}, the reference's routed experts need ${typeName(t)} (as ds4's CPU path)`);
}

/**
 * S15 one projection (`ffn_gate_exps` or `ffn_up_exps`) of the selected experts, slot by slot: the
 * activation quantized to Q8_K once, IQ2_XXS row dots (ds4.c matvec_iq2_xxs; `f64`: the same codes,
 * the float combination in double), then the clamp of that side.
 */
export function expertsProject(w: LayerWeights, il: number, name: 'ffn_gate_exps.weight' | 'ffn_up_exps.weight', x: Vec, selected: Int32Array, F: number, clamp: number, p: Precision): Vec {
  const out = allocVec(p, selected.length * F);
  const clampSide = name === 'ffn_gate_exps.weight' ? clampGate : clampUp;
  expertsProjectProducts(w, il, name, x, selected).forEach(([ew, v], k) => {
    const y = matvec(ew, v, p);
    for (let row = 0; row < F; row++) out[k * F + row] = clampSide(y[row], clamp);
  });
  return out;
}

/** S15 the selected experts' gate or up slices (IQ2_XXS), each times ffn_norm, in slot order. */
export function expertsProjectProducts(w: LayerWeights, il: number, name: 'ffn_gate_exps.weight' | 'ffn_up_exps.weight', x: Vec, selected: Int32Array): Array<[Weight, Vec]> {
  return Array.from(selected, (e) => [expertWeight(w, il, name, e, GGMLType.IQ2_XXS), x]);
}

/** S15 the selected experts' down slices (Q2_K), each times its slot's row of moe_mid. */
export function expertsDownProducts(w: LayerWeights, il: number, selected: Int32Array, mid: Vec, F: number): Array<[Weight, Vec]> {
  return Array.from(selected, (e, k) => [expertWeight(w, il, 'ffn_down_exps.weight', e, GGMLType.Q2_K), mid.subarray(k * F, (k + 1) * F)]);
}

/** Expert e's slice of a routed expert tensor, of the type the reference's routed experts run. */
function expertWeight(w: LayerWeights, il: number, name: string, e: number, type: GGMLType): Weight {
  const ew = w.expert(name, e);
  expectType(ew, type, il);
  return ew;
}

/**
 * S15 moe_mid: per slot k and row, silu(gate)·up (both already clamped) times the router weight w_k —
 * the router weight is applied before the down projection (ds4.c matvec_iq2_xxs_mid_worker).
 */
export function expertsMid(gate: Vec, up: Vec, weights: Vec, F: number, p: Precision): Vec {
  const r = rounder(p);
  const mid = allocVec(p, gate.length);
  for (let i = 0; i < gate.length; i++) mid[i] = r(r(silu(gate[i], p) * up[i]) * weights[Math.floor(i / F)]);
  return mid;
}

/** S15 the down projections of the selected experts: per slot, Q8_K of its mid row · Q2_K rows (`f64`: the same codes, combined in double). */
export function expertsDown(w: LayerWeights, il: number, selected: Int32Array, mid: Vec, F: number, E: number, p: Precision): Vec {
  const down = allocVec(p, selected.length * E);
  expertsDownProducts(w, il, selected, mid, F).forEach(([dw, v], k) => down.set(matvec(dw, v, p), k * E));
  return down;
}

/** S15 moe_out: the slots' down rows summed in slot order. */
export function sumExperts(down: Vec, K: number, E: number, p: Precision): Vec {
  const r = rounder(p);
  const out = allocVec(p, E);
  for (let d = 0; d < E; d++) {
    let acc = 0;
    for (let k = 0; k < K; k++) acc = r(acc + down[k * E + d]);
    out[d] = acc;
  }
  return out;
}

/** S16 the shared expert's gate and up projections of ffn_norm. */
export function sharedExpertProducts(w: LayerWeights, x: Vec): Array<[Weight, Vec]> {
  return [[w.get('ffn_gate_shexp.weight'), x], [w.get('ffn_up_shexp.weight'), x]];
}

/** S16 shared expert's mid: Q8_0 gate/up projections of ffn_norm, clamped SwiGLU (ds4.c shared expert). */
export function sharedMid(w: LayerWeights, x: Vec, clamp: number, p: Precision): Vec {
  const [gate, up] = sharedExpertProducts(w, x).map(([wt, v]) => matvec(wt, v, p));
  const r = rounder(p);
  const mid = allocVec(p, gate.length);
  for (let i = 0; i < gate.length; i++) mid[i] = r(silu(clampGate(gate[i], clamp), p) * clampUp(up[i], clamp));
  return mid;
}
