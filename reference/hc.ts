// Hyper-connections (catalog S0, S1/S13, S12/S17, S18 weights): the residual stream is nHc copies
// of the embedding; before each sublayer a learned control vector reduces them to one input
// (pre weights), afterwards post gates and a Sinkhorn-normalized combine matrix expand back.
import type { Ds4Config } from '../model/config.ts';
import type { Precision, Vec } from './types.ts';
import { allocVec } from './types.ts';
import { expP, NEG_INF, rounder, sigmoid } from './math.ts';

/** S0 `hc_from_plain_embedding`: every HC stream starts as a copy of the embedding row. */
export function embedHc(cfg: Ds4Config, p: Precision, row: Float32Array): Vec {
  const E = cfg.nEmbd;
  const hc = allocVec(p, cfg.nHc * E);
  for (let h = 0; h < cfg.nHc; h++) hc.set(row.subarray(0, E), h * E);
  return hc;
}

export interface HcSplit {
  pre: Vec;
  post: Vec;
  /** [nHc*nHc], element a + nHc*b mixes source stream b into output stream a (S12) */
  comb: Vec;
}

/**
 * ds4.c `hc_split_sinkhorn_one` (S1 steps 3-5). The mix vector is [pre(H) | post(H) | comb(H*H)].
 * pre = sigmoid + eps, post = 2*sigmoid (both the plain 1/(1+exp(-z)) form, not the stable one);
 * comb: softmax over the fast index a for each slow index b, +eps, then alternating
 * normalizations of the sums over b (iters times) and over a (iters-1 times), the sum over b last,
 * so for every output stream a the weights Σ_b comb[a + H*b] are ≈ 1.
 */
export function hcSplitSinkhorn(mix: Vec, scale: Float32Array, base: Float32Array, nHc: number, iters: number, eps: number, p: Precision): HcSplit {
  const r = rounder(p);
  const e = r(eps); // a float constant (1.0e-6f) in ds4.c
  const H = nHc;
  const pre = allocVec(p, H);
  const post = allocVec(p, H);
  const c = allocVec(p, H * H);
  // the Ascend kernels write every sigmoid in the stable form (exp of −|z| only, kernels/ascend_math.h): with
  // their exp the two forms err in opposite directions below 0, so the approximation twin follows the kernels
  const sig = (z: number) => (p === 'ascend' ? sigmoid(z, p) : r(1 / r(1 + expP(-z, p))));
  for (let i = 0; i < H; i++) {
    const z = r(r(mix[i] * scale[0]) + base[i]);
    pre[i] = r(sig(z) + e);
  }
  for (let i = 0; i < H; i++) {
    const z = r(r(mix[H + i] * scale[1]) + base[H + i]);
    post[i] = r(2 * sig(z));
  }
  for (let b = 0; b < H; b++) {
    let max = NEG_INF; // ds4.c starts the row max at DS4_NEG_INF, not -Infinity
    for (let a = 0; a < H; a++) {
      const o = 2 * H + a + H * b;
      const v = r(r(mix[o] * scale[2]) + base[o]);
      c[a + H * b] = v;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let a = 0; a < H; a++) {
      const v = expP(r(c[a + H * b] - max), p);
      c[a + H * b] = v;
      sum = r(sum + v);
    }
    const inv = r(1 / sum);
    for (let a = 0; a < H; a++) c[a + H * b] = r(r(c[a + H * b] * inv) + e);
  }
  const normOverB = () => {
    for (let a = 0; a < H; a++) {
      let sum = 0;
      for (let b = 0; b < H; b++) sum = r(sum + c[a + H * b]);
      const inv = r(1 / r(sum + e));
      for (let b = 0; b < H; b++) c[a + H * b] = r(c[a + H * b] * inv);
    }
  };
  const normOverA = () => {
    for (let b = 0; b < H; b++) {
      let sum = 0;
      for (let a = 0; a < H; a++) sum = r(sum + c[a + H * b]);
      const inv = r(1 / r(sum + e));
      for (let a = 0; a < H; a++) c[a + H * b] = r(c[a + H * b] * inv);
    }
  };
  normOverB();
  for (let it = 1; it < iters; it++) {
    normOverA();
    normOverB();
  }
  return { pre, post, comb: c };
}

/** ds4.c `hc_weighted_sum_one`: out[d] = Σ_h w[h]·x[h][d], float accumulator in stream order. */
export function hcWeightedSum(cfg: Ds4Config, hc: Vec, w: Vec, p: Precision): Vec {
  const E = cfg.nEmbd;
  const r = rounder(p);
  const out = allocVec(p, E);
  for (let d = 0; d < E; d++) {
    let acc = 0;
    for (let h = 0; h < cfg.nHc; h++) acc = r(acc + r(hc[h * E + d] * w[h]));
    out[d] = acc;
  }
  return out;
}

/**
 * S12 / S17 `hc_post_one`: out[a][d] = post[a]·x[d] + Σ_b comb[a + H·b]·hc[b][d]
 * (float accumulator starting from the post term, sources in order).
 */
export function hcPost(cfg: Ds4Config, x: Vec, hc: Vec, post: Vec, comb: Vec, p: Precision): Vec {
  const E = cfg.nEmbd;
  const H = cfg.nHc;
  const r = rounder(p);
  const out = allocVec(p, H * E);
  for (let a = 0; a < H; a++) {
    for (let d = 0; d < E; d++) {
      let acc = r(x[d] * post[a]);
      for (let b = 0; b < H; b++) acc = r(acc + r(comb[a + H * b] * hc[b * E + d]));
      out[a * E + d] = acc;
    }
  }
  return out;
}

/**
 * S18 `output_hc_head_one` weights: w_h = sigmoid_stable(pre_h·scale + base_h) + eps —
 * plain sigmoid, no 2×, no Sinkhorn. `pre` is output_hc_fn · rmsnorm(hc).
 */
export function outputHcWeights(cfg: Ds4Config, pre: Vec, scale: Float32Array, base: Float32Array, p: Precision): Vec {
  const r = rounder(p);
  const w = allocVec(p, cfg.nHc);
  for (let h = 0; h < cfg.nHc; h++) w[h] = r(sigmoid(r(r(pre[h] * scale[0]) + base[h]), p) + r(cfg.hcEps));
  return w;
}
