// RoPE on the tail of each head (catalog S5/S10), ds4.c `rope_tail_layer_inplace` →
// `rope_tail_ext_inplace`. Only the last nRot dims of every head rotate, as ADJACENT pairs
// (x[nope+2j], x[nope+2j+1]) — GPT-J style, not NeoX halves.
// Dense layers: base rope.freq_base, no scaling. Compressed layers: base compress_rope_freq_base,
// freq_scale 1/factor, YaRN ramp between corr dims lo/hi; the YaRN magnitude factor is cancelled
// (ds4 passes attn_factor = 1/(1+0.1 ln(1/freq_scale)) and the helper multiplies it back).
import type { Ds4Config } from '../model/config.ts';
import type { Precision, Vec } from './types.ts';
import { rounder } from './math.ts';

/** ds4.c `rope_yarn_corr_dim`: nDims·ln(nCtxOrig / (beta·2π)) / (2·ln base), in float for ds4. */
function yarnCorrDim(nDims: number, nCtxOrig: number, beta: number, base: number, p: Precision): number {
  const r = rounder(p);
  const denom = r(r(beta * 2) * r(Math.PI));
  const ratio = r(r(nCtxOrig) / denom);
  return r(r(nDims * r(Math.log(ratio))) / r(2 * r(Math.log(base))));
}

/** ds4.c `rope_yarn_corr_dims`: [max(0, floor(corr(beta_fast))), min(nDims-1, ceil(corr(beta_slow)))]. */
export function yarnCorrDims(nDims: number, nCtxOrig: number, base: number, betaFast: number, betaSlow: number, p: Precision): [number, number] {
  const lo = Math.floor(yarnCorrDim(nDims, nCtxOrig, betaFast, base, p));
  const hi = Math.ceil(yarnCorrDim(nDims, nCtxOrig, betaSlow, base, p));
  return [Math.max(0, lo), Math.min(nDims - 1, hi)];
}

/** The layer's RoPE settings (ds4.c layer_rope_freq_base / layer_rope_freq_scale / rope_tail_layer_inplace). */
export interface RopeParams {
  base: number;
  freqScale: number;
  /** 1 on compressed layers with scaling factor > 1 (YaRN on), else 0 */
  extFactor: number;
  /** attn_factor · (1 + 0.1·ln(1/freqScale)) when YaRN is on: the cancelled magnitude, ≈ 1 */
  mscale: number;
  nCtxOrig: number;
}

export function ropeParams(cfg: Ds4Config, il: number, p: Precision): RopeParams {
  const r = rounder(p);
  const compressed = cfg.compressRatios[il] !== 0;
  const base = compressed && cfg.compressRopeFreqBase > 0 ? cfg.compressRopeFreqBase : cfg.ropeFreqBase;
  const freqScale = compressed && cfg.ropeScalingFactor > 0 ? r(1 / cfg.ropeScalingFactor) : 1;
  const extFactor = compressed && cfg.ropeScalingFactor > 1 ? 1 : 0;
  let mscale = 1;
  if (extFactor !== 0) {
    const yarnMag = r(1 + r(r(0.1) * r(Math.log(r(1 / freqScale)))));
    const attnFactor = r(1 / yarnMag);
    mscale = r(attnFactor * yarnMag);
  }
  return { base, freqScale, extFactor, mscale, nCtxOrig: compressed ? cfg.ropeOrigCtx : 0 };
}

/**
 * θ_j for the nRot/2 pairs at `pos`: θ_extrap starts at pos and is multiplied by
 * base^(-2/nRot) once per pair (float in ds4); with YaRN θ = θ_interp·(1-ramp_j) + θ_extrap·ramp_j,
 * θ_interp = freqScale·θ_extrap, ramp_j = 1 - clamp((j - lo)/max(0.001, hi - lo), 0, 1).
 */
export function ropeThetas(cfg: Ds4Config, il: number, pos: number, p: Precision): Float64Array {
  const r = rounder(p);
  const nRot = cfg.nRot;
  const rp = ropeParams(cfg, il, p);
  const thetaScale = r(Math.pow(r(rp.base), r(-2 / nRot)));
  const [lo, hi] = rp.extFactor !== 0 ? yarnCorrDims(nRot, rp.nCtxOrig, rp.base, cfg.yarnBetaFast, cfg.yarnBetaSlow, p) : [0, 0];
  const out = new Float64Array(nRot / 2);
  let thetaExtrap = r(pos);
  for (let j = 0; j < nRot / 2; j++) {
    const thetaInterp = r(rp.freqScale * thetaExtrap);
    let theta = thetaInterp;
    if (rp.extFactor !== 0) {
      const y = r(r(j - lo) / Math.max(r(0.001), r(hi - lo)));
      const ramp = r(r(1 - Math.min(1, Math.max(0, y))) * rp.extFactor);
      theta = r(r(thetaInterp * r(1 - ramp)) + r(thetaExtrap * ramp));
    }
    out[j] = theta;
    thetaExtrap = r(thetaExtrap * thetaScale);
  }
  return out;
}

/**
 * Rotate the tail of `nHead` heads of width `headDim` in place by θ(pos) (or by -θ when `inverse`,
 * S10: ds4 negates sin). c = cos θ·mscale, s = ±sin θ·mscale;
 * (x0, x1) ← (x0·c − x1·s, x0·s + x1·c). The angles are the same for every head.
 */
export function ropeTailInplace(cfg: Ds4Config, il: number, x: Vec, nHead: number, headDim: number, pos: number, inverse: boolean, p: Precision): void {
  const r = rounder(p);
  const nRot = cfg.nRot;
  const nope = headDim - nRot;
  const thetas = ropeThetas(cfg, il, pos, p);
  const { mscale } = ropeParams(cfg, il, p);
  const sign = inverse ? -1 : 1;
  const cs = new Float64Array(nRot / 2);
  const sn = new Float64Array(nRot / 2);
  for (let j = 0; j < nRot / 2; j++) {
    cs[j] = r(r(Math.cos(thetas[j])) * mscale);
    sn[j] = r(sign * r(Math.sin(thetas[j])) * mscale);
  }
  for (let h = 0; h < nHead; h++) {
    const t = h * headDim + nope;
    for (let j = 0; j < nRot / 2; j++) {
      const x0 = x[t + 2 * j];
      const x1 = x[t + 2 * j + 1];
      x[t + 2 * j] = r(r(x0 * cs[j]) - r(x1 * sn[j]));
      x[t + 2 * j + 1] = r(r(x0 * sn[j]) + r(x1 * cs[j]));
    }
  }
}
