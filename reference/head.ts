// S18, the output head (ds4 output_hc_head_one + output_logits_one): collapse the HC streams with
// sigmoid weights (no Sinkhorn, no 2x), RMSNorm with output_norm, Q8_0 vocab projection.
import type { Ds4Config } from '../model/config.ts';
import { hcWeightedSum, outputHcWeights } from './hc.ts';
import { rmsNorm } from './math.ts';
import { matvec } from './matvec.ts';
import type { Precision, Vec } from './types.ts';
import type { ModelWeights } from './weights.ts';

export type HeadEmit = (stage: string, values: Vec, shape?: number[]) => void;

export function outputHead(cfg: Ds4Config, w: ModelWeights, hc: Vec, p: Precision, emit: HeadEmit): Vec {
  const flat = rmsNorm(hc, null, cfg.rmsEps, p);
  const pre = matvec(w.global('output_hc_fn.weight'), flat, p);
  const hw = outputHcWeights(cfg, pre, w.globalF32('output_hc_scale.weight'), w.globalF32('output_hc_base.weight'), p);
  const embd = hcWeightedSum(cfg, hc, hw, p);
  const norm = rmsNorm(embd, w.globalF32('output_norm.weight'), cfg.rmsEps, p);
  const logits = matvec(w.global('output.weight'), norm, p);
  emit('out_hc_pre', pre);
  emit('out_hc_w', hw);
  emit('out_embd', embd);
  emit('out_norm', norm);
  emit('logits', logits);
  return logits;
}
