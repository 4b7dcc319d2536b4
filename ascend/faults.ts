// Fault injection into the simulated device (issue 6): `--inject KERNEL:FAULT[=ARG]` plants one of the
// real bug classes seen while porting DS4 (the seeds' expert-cache id bug, the RoPE pair layout, the
// freed RoPE table read by an async kernel, …) into one kernel, so bisect can be shown to name it.
// The orchestrator applies a fault around that kernel's launches only: it post-processes the kernel's
// output or transforms its inputs, so the stage(s) the kernel produces are wrong and everything
// downstream inherits the error — in free-running and teacher-forced passes alike.
import { badInput } from '../model/errors.ts';
import { openBackend } from './backend.ts';

export type FaultKind =
  | 'bias' | 'scale' | 'nan' | 'pairs-halves' | 'transpose-comb' | 'expert-off-by-one'
  | 'stale-buffer' | 'round-half-away' | 'coarse-exp' | 'emit-pos';

export interface Injection {
  kernel: string;
  fault: FaultKind;
  /** bias: the constant; scale: the factor; nan: the output element index */
  arg?: number;
  /** only launches in these layers (inclusive; `@L` or `@A:B` after the spec); all layers when absent */
  layers?: [number, number];
  /** the spec as the user wrote it, for messages and reports */
  spec: string;
}

/**
 * The kernels each fault makes sense for (faults with numeric ARG need a float output the orchestrator
 * can reach: OUTPUTS below). A missing entry means "any kernel with a float output".
 */
const FAULT_KERNELS: Partial<Record<FaultKind, { kernels: readonly string[]; why: string }>> = {
  'pairs-halves': { kernels: ['rope_tail'], why: 'only RoPE rotates pairs' },
  'transpose-comb': { kernels: ['hc_expand', 'hc_expand_split'], why: 'only the HC expand kernels read the comb matrix' },
  'expert-off-by-one': { kernels: ['moe_gate_up_mid_iq2_q8', 'moe_down_q2_q8'], why: 'only the routed-MoE kernels stage expert slices by id' },
  'round-half-away': {
    kernels: ['quantize_q8_0', 'quantize_q8_k', 'matmul_q8_0', 'attention_output_low_q8'],
    why: 'only kernels that quantize activations to int8 round to integers',
  },
  'coarse-exp': {
    kernels: ['swiglu', 'output_hc_weights', 'router_select', 'moe_gate_up_mid_iq2_q8'],
    why: 'the simulator emulates a cruder exp only where it can recompute the exp part on the host (swiglu, output_hc_weights, router_select, moe_gate_up_mid_iq2_q8)',
  },
  'emit-pos': { kernels: ['compressor_update_pool'], why: 'only the compressor emits rows at window ends' },
};

/** Output buffers a kernel writes, as (argument index, first element, element count) from its scalars. */
export type OutputSpan = [arg: number, off: number, count: number];
export const OUTPUTS: Record<string, (s: number[]) => OutputSpan[]> = {
  add: (s) => [[0, 0, s[0]]],
  attention_decode: (s) => [[0, 0, s[5] * s[6]]],
  attention_output_low_q8: (s) => [[0, 0, s[1] * s[2] * s[3]]],
  compressor_set_rows: (s) => [[3, 0, s[0]]],
  compressor_update_pool: (s) => [[0, 0, s[0]]],
  embed_token_hc: (s) => [[0, 0, s[1] * s[2]]],
  fp8_kv_quantize: (s) => [[0, 0, s[0] * s[1]]],
  hc_expand: (s) => [[0, 0, s[0] * s[1] * s[2]]],
  hc_expand_split: (s) => [[0, 0, s[0] * s[1] * s[2]]],
  hc_split_sinkhorn4: (s) => [[0, 0, 24 * s[0]]],
  hc_weighted_sum4: (s) => [[0, 0, s[0] * s[1]]],
  indexer_qat: (s) => [[0, 0, 128 * s[0]]],
  indexer_scores: (s) => [[0, 0, s[0]]],
  indexer_weights_scale: (s) => [[0, 0, s[0]]],
  matmul_f16: (s) => [[0, 0, s[1] * s[2]]],
  matmul_q8_0: (s) => [[0, 0, s[1] * s[2]]],
  matmul_q8_0_prequant: (s) => [[0, 0, s[1] * s[2]]],
  moe_down_q2_q8: (s) => [[0, 0, s[1] * s[2]]],
  moe_gate_up_mid_iq2_q8: (s) => [[0, 0, s[1] * s[2]], [1, 0, s[1] * s[2]], [2, 0, s[1] * s[2]]],
  moe_sum_experts: (s) => [[0, 0, s[0]]],
  output_hc_weights: (s) => [[0, 0, s[0] * s[1]]],
  rms_norm_inplace: (s) => [[0, 0, s[0] * s[1]]],
  rms_norm_plain: (s) => [[0, 0, s[0] * s[1]]],
  rms_norm_weight: (s) => [[0, 0, s[0] * s[1]]],
  rope_tail: (s) => [[0, 0, s[0] * s[1] * s[2]]],
  // router: the probabilities and the normalized weights (the ids are integers: see expert-off-by-one)
  router_select: (s) => [[0, 0, s[0]], [2, 0, s[1]]],
  store_raw_kv: (s) => [[0, (s[1] % s[0]) * s[3], s[2] * s[3]]],
  swiglu: (s) => [[0, 0, s[0]]],
};

/**
 * The data input a stale-buffer fault replaces with the previous position's contents (argument index,
 * element count): the activation the kernel reads, not its weights.
 */
export const DATA_INPUT: Record<string, (s: number[]) => [arg: number, count: number]> = {
  add: (s) => [1, s[0]],
  attention_decode: (s) => [2, s[5] * s[6]],
  attention_output_low_q8: (s) => [2, s[0] * s[2] * s[3]],
  compressor_update_pool: (s) => [1, (s[1] === 4 ? 8 : s[1]) * (s[1] === 4 ? 2 : 1) * s[0]],
  fp8_kv_quantize: (s) => [0, s[0] * s[1]],
  hc_expand_split: (s) => [1, s[0] * s[2]],
  hc_split_sinkhorn4: (s) => [1, 24 * s[0]],
  hc_weighted_sum4: (s) => [1, 4 * s[0] * s[1]],
  indexer_qat: (s) => [0, 128 * s[0]],
  matmul_f16: (s) => [2, s[0] * s[2]],
  matmul_q8_0: (s) => [2, s[0] * s[2]],
  moe_sum_experts: (s) => [1, s[0] * s[1]],
  output_hc_weights: (s) => [1, s[0] * s[1]],
  quantize_q8_0: (s) => [2, s[0] * s[1]],
  quantize_q8_k: (s) => [3, s[0]],
  rms_norm_inplace: (s) => [0, s[0] * s[1]],
  rms_norm_plain: (s) => [1, s[0] * s[1]],
  rms_norm_weight: (s) => [1, s[0] * s[1]],
  rope_tail: (s) => [0, s[0] * s[1] * s[2]],
  store_raw_kv: (s) => [1, s[2] * s[3]],
  swiglu: (s) => [1, s[0]],
};

const NUMERIC: Record<string, boolean> = { bias: true, scale: true, nan: true };
const KINDS = new Set<FaultKind>(['bias', 'scale', 'nan', 'pairs-halves', 'transpose-comb', 'expert-off-by-one', 'stale-buffer', 'round-half-away', 'coarse-exp', 'emit-pos']);

/** Does fault f apply to a launch in layer `layer`? */
export function faultInLayer(f: Injection, layer: number): boolean {
  return !f.layers || (layer >= f.layers[0] && layer <= f.layers[1]);
}

/** Parse `KERNEL:FAULT[=ARG][@LAYERS]`; refuse (exit 3) unknown kernels, unknown faults and faults that make no sense for the kernel. */
export function parseInject(spec: string, kernels: string[]): Injection {
  const m = /^([A-Za-z0-9_]+):([a-z-]+)(?:=([^@]*))?(?:@(\d+)(?::(\d+))?)?$/.exec(spec.trim());
  if (!m) throw badInput(`--inject ${spec}: expected KERNEL:FAULT[=ARG][@LAYER|@A:B], e.g. rope_tail:pairs-halves or matmul_q8_0:bias=0.1@5`);
  const [, kernel, name, argText, lo, hi] = m;
  const layers: [number, number] | undefined = lo === undefined ? undefined : [Number(lo), Number(hi ?? lo)];
  if (layers && layers[1] < layers[0]) throw badInput(`--inject ${spec}: layer range ${lo}:${hi} is empty`);
  if (!kernels.includes(kernel)) throw badInput(`--inject ${spec}: no kernel ${kernel} (see ds4-diff kernels)`);
  if (!KINDS.has(name as FaultKind)) throw badInput(`--inject ${spec}: unknown fault ${name} (expected one of ${[...KINDS].join(', ')})`);
  const fault = name as FaultKind;
  let arg: number | undefined;
  if (NUMERIC[fault]) {
    if (argText === undefined || argText.trim() === '' || !Number.isFinite(Number(argText))) throw badInput(`--inject ${spec}: fault ${fault} needs a number, e.g. ${kernel}:${fault}=${fault === 'nan' ? 0 : 0.1}`);
    arg = Number(argText);
    if (fault === 'nan' && !(Number.isInteger(arg) && arg >= 0)) throw badInput(`--inject ${spec}: nan=I needs an element index ≥ 0`);
    if (!OUTPUTS[kernel]) throw badInput(`--inject ${spec}: ${kernel} has no float output stage a ${fault} fault could change`);
  } else if (argText !== undefined) {
    throw badInput(`--inject ${spec}: fault ${fault} takes no argument`);
  }
  const allowed = FAULT_KERNELS[fault];
  if (allowed && !allowed.kernels.includes(kernel)) throw badInput(`--inject ${spec}: fault ${fault} makes no sense for ${kernel}: ${allowed.why}`);
  if (fault === 'stale-buffer' && !DATA_INPUT[kernel]) throw badInput(`--inject ${spec}: fault stale-buffer makes no sense for ${kernel}: it has no activation input that a reused buffer could hold`);
  return { kernel, fault, arg, spec, layers };
}

/**
 * The cruder exp of the coarse-exp fault: (1 + x/16)^16 (4 squarings), 0 at or below x = −16 — the
 * kind of low-order shortcut a hand-written vector exp takes; off by 3 % at x = 1 and 28 % at x = −3.
 */
export function coarseExp(x: number): number {
  if (x <= -16) return 0;
  let y = 1 + x / 16;
  for (let i = 0; i < 4; i++) y *= y;
  return y;
}

/** Round to nearest with ties away from zero (the round-half-away fault; ggml uses nearest-even). */
export function roundHalfAway(v: number): number {
  return Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
}

/** Parse every `--inject` spec against the kernels of `backend` (refused before any work is done). */
export function parseInjects(specs: string[], backend: string, addonPath?: string): Injection[] {
  if (specs.length === 0) return [];
  const kernels = openBackend(backend, addonPath).kernels().map((k) => k.name);
  return specs.map((s) => parseInject(s, kernels));
}

/**
 * round-half-away: x → q·d with q rounded half away from zero (Q8_0: d = amax/127 per 32; Q8_K:
 * iscale = −127/signed-max per 256, d = 1/iscale).
 */
export function requantHalfAway(x: Float32Array, block: number, q8k: boolean): Float32Array {
  const y = new Float32Array(x.length);
  for (let b = 0; b < x.length; b += block) {
    let amax = 0, smax = 0;
    for (let i = b; i < b + block; i++) if (Math.abs(x[i]) > amax) { amax = Math.abs(x[i]); smax = x[i]; }
    if (amax === 0) continue;
    const id = q8k ? Math.fround(-127 / smax) : Math.fround(127 / amax), d = q8k ? Math.fround(1 / id) : Math.fround(amax / 127);
    for (let i = b; i < b + block; i++) y[i] = Math.fround(Math.max(-127, Math.min(127, roundHalfAway(Math.fround(x[i] * id)))) * d);
  }
  return y;
}
