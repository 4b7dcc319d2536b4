// Fault injection (issue 6, ascend/faults.ts): each fault class, planted in one kernel on the bundled
// tiny fixture, makes a stage that kernel produces fail its registry tolerance in the teacher-forced
// pass, and every stage captured before it is bit-identical to the unfaulted run.
import { describe, expect, it } from 'vitest';

import { loadNative } from '../ascend/native.ts';
import { coarseExp, parseInject, requantHalfAway, roundHalfAway, type Injection } from '../ascend/faults.ts';
import { Ds4DiffError } from '../model/errors.ts';

const ready = loadNative(process.env.DS4_SIM_ADDON).ok;
const KERNELS = ['rope_tail', 'matmul_q8_0', 'hc_expand_split', 'moe_down_q2_q8', 'swiglu', 'quantize_q8_0', 'compressor_update_pool', 'rms_norm_plain', 'copy', 'indexer_topk'];

function refusal(spec: string): string {
  try {
    parseInject(spec, KERNELS);
  } catch (e) {
    expect(e).toBeInstanceOf(Ds4DiffError);
    expect((e as Ds4DiffError).exitCode).toBe(3);
    return (e as Error).message;
  }
  throw new Error(`${spec} was accepted`);
}

describe('parseInject', () => {
  it('parses KERNEL:FAULT[=ARG]', () => {
    expect(parseInject('matmul_q8_0:bias=0.25', KERNELS)).toEqual({ kernel: 'matmul_q8_0', fault: 'bias', arg: 0.25, spec: 'matmul_q8_0:bias=0.25' });
    expect(parseInject('rope_tail:nan=7', KERNELS)).toMatchObject({ fault: 'nan', arg: 7 });
    expect(parseInject('rope_tail:pairs-halves', KERNELS)).toMatchObject({ kernel: 'rope_tail', fault: 'pairs-halves', arg: undefined });
  });

  it('refuses unknown kernels and faults, bad arguments, and faults that make no sense for the kernel', () => {
    expect(refusal('nope:bias=1')).toMatch(/no kernel nope/);
    expect(refusal('rope_tail:melt')).toMatch(/unknown fault melt/);
    expect(refusal('rope_tail:bias')).toMatch(/needs a number/);
    expect(refusal('rope_tail:nan=-1')).toMatch(/index/);
    expect(refusal('rope_tail:pairs-halves=2')).toMatch(/takes no argument/);
    expect(refusal('rms_norm_plain:pairs-halves')).toMatch(/pairs-halves makes no sense for rms_norm_plain: only RoPE/);
    expect(refusal('rope_tail:transpose-comb')).toMatch(/rope_tail.*comb/);
    expect(refusal('swiglu:expert-off-by-one')).toMatch(/expert-off-by-one makes no sense for swiglu/);
    expect(refusal('rope_tail:round-half-away')).toMatch(/round-half-away makes no sense for rope_tail/);
    expect(refusal('matmul_q8_0:coarse-exp')).toMatch(/coarse-exp makes no sense for matmul_q8_0/);
    expect(refusal('rope_tail:emit-pos')).toMatch(/emit-pos makes no sense for rope_tail: only the compressor/);
    expect(refusal('copy:bias=1')).toMatch(/copy has no float output/);
    expect(refusal('indexer_topk:stale-buffer')).toMatch(/stale-buffer makes no sense for indexer_topk/);
  });

  it('coarse exp is (1 + x/16)^16 and round-half-away differs from half-even only at ties', () => {
    expect(coarseExp(0)).toBe(1);
    expect(coarseExp(1)).toBeCloseTo(1.0625 ** 16, 12);
    expect(coarseExp(-20)).toBe(0);
    expect(coarseExp(-3)).toBeCloseTo(0.8125 ** 16, 12); // 0.036 where e^-3 = 0.0498
    expect([roundHalfAway(2.5), roundHalfAway(-2.5), roundHalfAway(0.5), roundHalfAway(2.4)]).toEqual([3, -3, 1, 2]);
  });

  it('round-half-away requantization: a Q8_0 block with amax 127 has d = 1, so 2.5 → 3 and −4.5 → −5 (half-even: 2, −4)', () => {
    const x = new Float32Array(32);
    x[0] = 127; x[1] = 2.5; x[2] = -4.5; x[3] = 1.25;
    const y = requantHalfAway(x, 32, false);
    expect(Array.from(y.subarray(0, 5))).toEqual([127, 3, -5, 1, 0]);
    // Q8_K: iscale = −127/signed max (−127 here → iscale 1, d 1)
    const z = new Float32Array(256);
    z[0] = -127; z[9] = 6.5;
    const w = requantHalfAway(z, 256, true);
    expect([w[0], w[9]]).toEqual([-127, 7]);
  });
});

describe.skipIf(!ready)('injected faults on the tiny fixture (teacher-forced, layers 0..2, 5 tokens)', async () => {
  const { tinyCase, key, ownFailures } = await import('./tiny-case.ts');
  const { runDevice } = await import('../ascend/orchestrator.ts');
  const { openBackend } = await import('../ascend/backend.ts');
  type Rec = import('../model/stages.ts').StageRecord;
  // layer 2 is ratio 4: one compressed window closes at pos 3
  const tc = await tinyCase([1, 5, 9, 12, 40], 2);
  const { model, cfg, tokens, lastLayer, addonPath, teacher } = tc;
  const names = openBackend('sim', addonPath).kernels().map((k) => k.name);

  async function teacherRun(inject: Injection[]): Promise<Rec[]> {
    const out: Rec[] = [];
    await runDevice({ model, cfg, tokens, lastLayer, addonPath, inject, tap: (x) => out.push(x), teacher });
    return out;
  }
  const clean = await teacherRun([]);

  // fault → the stages its kernel produces (the first changed capture must be one of them)
  // (mustFail false: the fault is visible but may stay inside its budget on this fixture — sigmoid
  // arguments near 0, small router logits: where a coarse exp is still accurate)
  const TABLE: Array<[spec: string, stages: string[], mustFail?: boolean]> = [
    ['matmul_q8_0:bias=0.5', ['q_lora']],
    ['rms_norm_weight:scale=1.5', ['attn_norm']],
    ['rope_tail:pairs-halves', ['q_rope', 'kv_rope']],
    ['hc_expand_split:transpose-comb', ['after_attn_hc']],
    ['moe_gate_up_mid_iq2_q8:expert-off-by-one', ['moe_gate', 'moe_up', 'moe_mid']],
    ['moe_down_q2_q8:expert-off-by-one', ['moe_down']],
    ['swiglu:stale-buffer', ['shared_mid']],
    ['matmul_f16:stale-buffer', ['hc_attn_mix']],
    ['swiglu:coarse-exp', ['shared_mid']],
    ['output_hc_weights:coarse-exp', ['out_hc_w'], false],
    ['router_select:coarse-exp', ['router_probs', 'router_topk', 'router_w'], false],
    ['moe_gate_up_mid_iq2_q8:coarse-exp', ['moe_mid']],
    ['compressor_update_pool:emit-pos', ['attn_comp_row', 'index_comp_row']],
  ];
  for (const [spec, stages, mustFail = true] of TABLE) {
    it(`${spec} → ${stages.join('/')}`, async () => {
      const faulty = await teacherRun([parseInject(spec, names)]);
      const first = faulty.findIndex((r, i) => key(r) !== key(clean[i]) || r.values.some((v, j) => !Object.is(v, clean[i].values[j])));
      expect(first, 'the fault changed nothing').toBeGreaterThanOrEqual(0);
      // a changed value, or (emit-pos) a capture that moved: the clean run's record at that place
      const changed = key(faulty[first]) === key(clean[first]) ? faulty[first].stage : clean[first].stage;
      expect(stages, `first changed capture ${key(faulty[first])} (clean: ${key(clean[first])})`).toContain(changed);
      const broken = (await ownFailures(tc, faulty)).filter((f) => stages.includes(f.split('/')[0]));
      if (mustFail) expect(broken.length, 'no produced stage fails its own budget').toBeGreaterThan(0);
    });
  }

  it('nan=I stops the run naming the kernel and the stage', async () => {
    await expect(teacherRun([parseInject('matmul_f16:nan=3', names)])).rejects.toThrow(/kernel matmul_f16 produced NaN at element 3 of stage hc_attn_mix \(layer 0, pos 0\)/);
  });

  it('round-half-away changes only the quantized stages it feeds, and only on rounding ties', async () => {
    // ties (x/d exactly k + ½) are rare in f32 activations: the fault may leave the run unchanged, but never earlier stages
    const faulty = await teacherRun([parseInject('quantize_q8_0:round-half-away', names)]);
    const first = faulty.findIndex((r, i) => r.values.some((v, j) => !Object.is(v, clean[i].values[j])));
    if (first >= 0) expect(['shared_mid']).toContain(faulty[first].stage);
  });
});
