// The FFN side of a DS4 layer (catalog S13-S17), following ds4.c's CPU path:
// HC pre (ffn) -> ffn_norm -> router (sqrt-softplus; hash routing from tid2eid on the first layers,
// biased top-k elsewhere, weights from the UNBIASED probabilities) -> routed experts (Q8_K
// activations, IQ2_XXS gate/up, clamps, SiLU, router weight before down, Q8_K mid, Q2_K down, sum in
// slot order) + shared expert (Q8_0 SwiGLU MLP) -> ffn_out = moe + shared -> HC post (ffn).
import { dotIQ2_XXS_Q8_K, dotQ2_K_Q8_K, quantizeQ8_K } from '../model/quant/index.ts';
import { GGMLType, rowBytes, typeName } from '../model/quant/types.ts';
import { hcPost, hcPre } from './hc.ts';
import { rmsNorm, rounder, silu, softplus } from './math.ts';
import { matvec } from './matvec.ts';
import { allocVec, type LayerContext, type LayerWeights, type Precision, type Vec, type Weight } from './types.ts';

/** ds4 floors the router weight sum at 2^-14 before normalizing (layer_topk_selected_experts_from_probs). */
const ROUTER_SUM_FLOOR = 6.103515625e-5;

/** S14: p_e = sqrt(softplus(logit_e)) — sqrt-softplus scores, not sigmoid or softmax. */
export function routerProbs(logits: Vec, p: Precision): Vec {
  const r = rounder(p);
  const probs = allocVec(p, logits.length);
  for (let e = 0; e < logits.length; e++) probs[e] = r(Math.sqrt(softplus(logits[e], p)));
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

/** S14: hash layers take tid2eid[token]; others take the top-k of probs + exp_probs_b (bias for selection only). */
export function routerSelect(cx: LayerContext, probs: Vec, token: number): Int32Array {
  const { cfg, w, il } = cx;
  const K = cfg.nExpertUsed;
  if (w.has('ffn_gate_tid2eid.weight')) {
    const table = w.i32('ffn_gate_tid2eid.weight');
    if (token < 0 || (token + 1) * K > table.length) throw new Error(`layer ${il}: token ${token} is outside the hash routing table`);
    const sel = table.slice(token * K, (token + 1) * K);
    for (const e of sel) if (e < 0 || e >= cfg.nExpert) throw new Error(`layer ${il}: hash-selected expert ${e} is outside 0..${cfg.nExpert - 1}`);
    return sel;
  }
  const score = Float64Array.from(probs);
  if (w.has('exp_probs_b.bias')) {
    const bias = w.f32('exp_probs_b.bias');
    const r = rounder(cx.p);
    for (let e = 0; e < score.length; e++) score[e] = r(score[e] + bias[e]);
  }
  return topkDesc(score, K);
}

/** ds4 `swiglu` with its clamp: the gate is clamped from above only, the up projection both ways. */
function swigluClamped(g: number, u: number, clamp: number, p: Precision): { g: number; u: number; mid: number } {
  if (clamp > 1e-6) {
    if (g > clamp) g = clamp;
    if (u > clamp) u = clamp;
    if (u < -clamp) u = -clamp;
  }
  return { g, u, mid: rounder(p)(silu(g, p) * u) };
}

function expectType(wt: Weight, t: GGMLType, il: number): void {
  if (wt.type !== t) throw new Error(`layer ${il}: ${wt.name} is ${typeName(wt.type)}, the reference's routed experts need ${typeName(t)} (as ds4's CPU path)`);
}

/**
 * S15 routed experts for one token. Emits moe_gate / moe_up (clamped), moe_mid (weighted SwiGLU),
 * moe_down (per slot) and moe_out.
 */
export function routedExperts(cx: LayerContext, x: Vec, selected: Int32Array, weights: Vec, pos: number): Vec {
  const { cfg, p, w, il } = cx;
  const K = selected.length;
  const F = cfg.nFfExp;
  const E = cfg.nEmbd;
  const clamp = cfg.swigluClamp[il];
  const r = rounder(p);
  const gate = allocVec(p, K * F);
  const up = allocVec(p, K * F);
  const mid = allocVec(p, K * F);
  const xq = p === 'ds4' ? quantizeQ8_K(x) : undefined;
  for (let k = 0; k < K; k++) {
    const gw = w.expert('ffn_gate_exps.weight', selected[k]);
    const uw = w.expert('ffn_up_exps.weight', selected[k]);
    let gRow: ArrayLike<number>;
    let uRow: ArrayLike<number>;
    if (xq) {
      expectType(gw, GGMLType.IQ2_XXS, il);
      expectType(uw, GGMLType.IQ2_XXS, il);
      const rb = rowBytes(gw.type, gw.cols);
      const g = new Float32Array(F);
      const u = new Float32Array(F);
      for (let row = 0; row < F; row++) {
        g[row] = dotIQ2_XXS_Q8_K(gw.data, row * rb, xq);
        u[row] = dotIQ2_XXS_Q8_K(uw.data, row * rb, xq);
      }
      gRow = g;
      uRow = u;
    } else {
      gRow = matvec(gw, x, p);
      uRow = matvec(uw, x, p);
    }
    for (let row = 0; row < F; row++) {
      const s = swigluClamped(gRow[row], uRow[row], clamp, p);
      gate[k * F + row] = s.g;
      up[k * F + row] = s.u;
      // the router weight is applied before the down projection (matvec_iq2_xxs_mid_worker)
      mid[k * F + row] = r(s.mid * weights[k]);
    }
  }
  const down = expertsDown(w, il, selected, mid, F, E, p);
  const out = sumExperts(down, K, E, p);
  cx.emit('moe_gate', pos, gate);
  cx.emit('moe_up', pos, up);
  cx.emit('moe_mid', pos, mid);
  cx.emit('moe_down', pos, down);
  cx.emit('moe_out', pos, out);
  return out;
}

/** S15 the down projections of the selected experts: per slot, Q8_K of its mid row · Q2_K rows (f64: a plain matvec). */
export function expertsDown(w: LayerWeights, il: number, selected: Int32Array, mid: Vec, F: number, E: number, p: Precision): Vec {
  const down = allocVec(p, selected.length * E);
  for (let k = 0; k < selected.length; k++) {
    const dw = w.expert('ffn_down_exps.weight', selected[k]);
    const midK = mid.subarray(k * F, (k + 1) * F);
    if (p === 'ds4') {
      expectType(dw, GGMLType.Q2_K, il);
      const mq = quantizeQ8_K(midK);
      const rb = rowBytes(dw.type, dw.cols);
      for (let d = 0; d < E; d++) down[k * E + d] = dotQ2_K_Q8_K(dw.data, d * rb, mq);
    } else {
      down.set(matvec(dw, midK, p), k * E);
    }
  }
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

/** S16 shared expert: Q8_0 gate/up of ffn_norm, clamped SwiGLU, Q8_0 down (mid re-quantized). */
export function sharedExpert(cx: LayerContext, x: Vec, pos: number): Vec {
  const { cfg, p, w, il } = cx;
  const gate = matvec(w.get('ffn_gate_shexp.weight'), x, p);
  const up = matvec(w.get('ffn_up_shexp.weight'), x, p);
  const mid = allocVec(p, gate.length);
  for (let i = 0; i < gate.length; i++) mid[i] = swigluClamped(gate[i], up[i], cfg.swigluClamp[il], p).mid;
  const out = matvec(w.get('ffn_down_shexp.weight'), mid, p);
  cx.emit('shared_mid', pos, mid);
  cx.emit('shared_out', pos, out);
  return out;
}

/** One token's FFN sublayer: returns after_ffn_hc (the next layer's input HC state). */
export function ffnToken(cx: LayerContext, hc: Vec, pos: number, token: number): Vec {
  const { cfg, p, w } = cx;
  const r = rounder(p);
  const { cur, post, comb } = hcPre(cx, 'ffn', hc, pos);
  const norm = rmsNorm(cur, w.f32('ffn_norm.weight'), cfg.rmsEps, p);
  cx.emit('ffn_norm', pos, norm);
  const logits = matvec(w.get('ffn_gate_inp.weight'), norm, p);
  const probs = routerProbs(logits, p);
  const selected = routerSelect(cx, probs, token);
  const weights = routerWeights(probs, selected, cfg.expertWeightsScale, p);
  cx.emit('router_logits', pos, logits);
  cx.emit('router_probs', pos, probs);
  cx.emit('router_topk', pos, selected);
  cx.emit('router_w', pos, weights);
  const moe = routedExperts(cx, norm, selected, weights, pos);
  const shared = sharedExpert(cx, norm, pos);
  const ffnOut = allocVec(p, cfg.nEmbd);
  for (let d = 0; d < cfg.nEmbd; d++) ffnOut[d] = r(moe[d] + shared[d]);
  cx.emit('ffn_out', pos, ffnOut);
  const after = hcPost(cfg, ffnOut, hc, post, comb, p);
  cx.emit('after_ffn_hc', pos, after, [cfg.nHc, cfg.nEmbd]);
  return after;
}

/**
 * S13-S17 for a batch of consecutive tokens of one layer. Every token's FFN depends only on its own
 * HC state, so the batch is the per-token function in position order (ds4's batched prefill FFN
 * computes the same math in another loop order).
 */
export function ffnSublayer(cx: LayerContext, hcIn: Vec[], positions: number[], tokens: number[]): Vec[] {
  return hcIn.map((hc, t) => ffnToken(cx, hc, positions[t], tokens[t]));
}
