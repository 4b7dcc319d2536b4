// What the device math in use may add to a stage's own error (diff/judge.ts DeviceBound): the stated error
// bounds of the kernels that produce the stage, summed (relative errors of a chain add to first order).
// PROVISIONAL: per kernel family from kernels/ascend_math.h's stated bounds, until every kernel declares its
// own budget with its signature.
import type { DeviceBound } from '../diff/judge.ts';
import { stage as stageDef, type StageId } from '../model/stages.ts';

export type KernelMath = 'ascend' | 'exact';

// f32 reductions in another order than the reference's: ≤ √n · 2^-24 for n up to 16384 (the flattened HC state)
const REDUCTION = 1e-5;
// one or two f32 roundings per element
const ELEMENTWISE = 1e-6;
// ascend_math.h exp ≈ (1 + x/2048)^2048: relative error x²/4096, ≤ 2e-3 for the |x| ≤ 2.9 that carry the
// weight of a softmax, sigmoid or SiLU
const ASCEND_EXP = 2e-3;

const FAMILY: Record<string, { exact: number; ascend: number }> = {
  matmul_f16: { exact: REDUCTION, ascend: REDUCTION },
  matmul_q8_0: { exact: REDUCTION, ascend: REDUCTION },
  attention_output_low_q8: { exact: REDUCTION, ascend: REDUCTION },
  moe_down_q2_q8: { exact: REDUCTION, ascend: REDUCTION },
  indexer_scores: { exact: REDUCTION, ascend: REDUCTION },
  rms_norm: { exact: REDUCTION, ascend: REDUCTION },
  rope_tail: { exact: REDUCTION, ascend: REDUCTION },
  attention: { exact: REDUCTION, ascend: ASCEND_EXP },
  compressor_pool: { exact: REDUCTION, ascend: ASCEND_EXP },
  hc_split_sinkhorn4: { exact: REDUCTION, ascend: ASCEND_EXP },
  output_hc_weights: { exact: ELEMENTWISE, ascend: ASCEND_EXP },
  router_select: { exact: ELEMENTWISE, ascend: ASCEND_EXP },
  moe_gate_up_mid_iq2_q8: { exact: REDUCTION, ascend: ASCEND_EXP },
  swiglu: { exact: ELEMENTWISE, ascend: ASCEND_EXP },
};

/** The device bound of every stage under one kernel math. */
export function deviceBounds(math: KernelMath): (stage: StageId) => DeviceBound {
  return (stage) => {
    const family = stageDef(stage).kernel;
    const rel = FAMILY[family]?.[math] ?? ELEMENTWISE;
    return { rel, from: `${family} ${math} ${rel.toExponential(0)}` };
  };
}
