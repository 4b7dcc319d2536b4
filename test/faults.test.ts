// Fault injection (issue 6, ascend/faults.ts): each fault class, planted in one kernel on the bundled
// tiny fixture, makes a stage that kernel produces fail its registry tolerance in the teacher-forced
// pass, and every stage captured before it is bit-identical to the unfaulted run.
import { existsSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { FAULT_KINDS, kernelFaults, parseInject, type Injection } from '../ascend/faults.ts';
import { KernelCatalog, kernelCatalog } from '../ascend/kernels.ts';
import { loadNative } from '../ascend/native.ts';
import { Ds4DiffError } from '../model/errors.ts';

const load = loadNative(process.env.DS4_SIM_ADDON);
const ready = load.ok;
const catalog = (): KernelCatalog => kernelCatalog(process.env.DS4_SIM_ADDON);

function refusal(spec: string): string {
  try {
    parseInject(spec, catalog());
  } catch (e) {
    expect(e).toBeInstanceOf(Ds4DiffError);
    expect((e as Ds4DiffError).exitCode).toBe(3);
    return (e as Error).message;
  }
  throw new Error(`${spec} was accepted`);
}

describe.skipIf(!ready)('parseInject', () => {
  it('parses KERNEL[.BUFFER]:FAULT[=ARG][@LAYERS]', () => {
    expect(parseInject('matmul_q8_0:bias=0.25', catalog())).toEqual({ kernel: 'matmul_q8_0', fault: 'bias', arg: 0.25, spec: 'matmul_q8_0:bias=0.25' });
    expect(parseInject('rope_tail:nan=7', catalog())).toMatchObject({ fault: 'nan', arg: 7 });
    expect(parseInject('rope_tail:pairs-halves', catalog())).toMatchObject({ kernel: 'rope_tail', fault: 'pairs-halves', arg: undefined });
    expect(parseInject('moe_gate_up_mid_iq2_q8.mid:scale=1.001@2:3', catalog())).toMatchObject({ buffer: 'mid', fault: 'scale', arg: 1.001, layers: [2, 3] });
  });

  it('refuses unknown kernels, buffers and faults, bad arguments, and faults that make no sense for the kernel', () => {
    expect(refusal('nope:bias=1')).toMatch(/no kernel nope/);
    expect(refusal('rope_tail:melt')).toMatch(/unknown fault melt/);
    expect(refusal('rope_tail:bias')).toMatch(/needs a number/);
    expect(refusal('rope_tail:nan=-1')).toMatch(/index/);
    expect(refusal('rope_tail:pairs-halves=2')).toMatch(/takes no argument/);
    expect(refusal('rms_norm_plain:pairs-halves')).toMatch(/pairs-halves makes no sense for rms_norm_plain: it rotates no RoPE pairs/);
    expect(refusal('rope_tail:transpose-comb')).toMatch(/rope_tail.*square matrix/);
    expect(refusal('swiglu:expert-off-by-one')).toMatch(/expert-off-by-one makes no sense for swiglu/);
    expect(refusal('rope_tail:round-half-away')).toMatch(/round-half-away makes no sense for rope_tail/);
    expect(refusal('matmul_q8_0:coarse-exp')).toMatch(/coarse-exp makes no sense for matmul_q8_0/);
    expect(refusal('rope_tail:emit-pos')).toMatch(/emit-pos makes no sense for rope_tail: only the compressor/);
    expect(refusal('copy:bias=1')).toMatch(/copy has no float output/);
    expect(refusal('embed_token_hc:stale-buffer')).toMatch(/stale-buffer makes no sense for embed_token_hc: it reads no activation/);
    // a kernel whose launches produce no stage could never be named by bisect
    expect(refusal('fill:bias=1')).toMatch(/fill produces no stage of the graph/);
    expect(refusal('matmul_f16.w:bias=1')).toMatch(/cannot target matmul_f16\.w \(it can target out\)/);
    expect(refusal('matmul_f16.nope:bias=1')).toMatch(/matmul_f16 has no buffer nope/);
  });

  it('every fault class applies wherever the signature makes it meaningful, with no per-kernel table', () => {
    const kinds = (k: string) => kernelFaults(catalog().get(k));
    // the comb is a square matrix the Sinkhorn kernel writes and the expand kernels read
    expect(kinds('hc_split_sinkhorn4')).toEqual(expect.arrayContaining(['bias', 'scale', 'nan', 'stale-buffer', 'transpose-comb', 'coarse-exp']));
    expect(kinds('hc_expand_split')).toContain('transpose-comb');
    expect(kinds('rope_tail')).toEqual(['bias', 'scale', 'nan', 'pairs-halves', 'stale-buffer']);
    expect(kinds('matmul_q8_0')).toEqual(['bias', 'scale', 'nan', 'stale-buffer', 'round-half-away']);
    expect(kinds('moe_down_q2_q8')).toEqual(['bias', 'scale', 'nan', 'expert-off-by-one', 'stale-buffer']);
    expect(kinds('compressor_update_pool')).toEqual(['bias', 'scale', 'nan', 'stale-buffer', 'coarse-exp', 'emit-pos']);
    // every kernel the graph launches for a stage takes bias and scale (what calibrate plants everywhere)
    for (const k of catalog().kernels.values()) if (k.stages.length && k.buffers.some((b) => b.dtype === 'f32' && b.role !== 'in' && b.role !== 'weight')) {
      expect(kernelFaults(k), k.name).toEqual(expect.arrayContaining(['bias', 'scale']));
    }
    expect(FAULT_KINDS.length).toBe(10);
  });
});

describe.skipIf(!ready)('faults planted inside a kernel (device launch option)', () => {
  if (!load.ok) return;
  const dev = load.dev;
  const f32 = (h: number) => { const b = dev.download(h); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); };
  const upload = (a: Float32Array) => { const h = dev.alloc(a.byteLength, 'x'); dev.upload(h, a); return h; };

  it('coarse-exp: the kernel\'s exp is (1 + x/16)^16, 0 at or below −16', () => {
    const xs = Float32Array.from([0, 1, -3, -20, 2.5]);
    const out = dev.alloc(xs.byteLength, 'out');
    catalog().launch(dev, 'math_probe', { out, x: upload(xs) }, { fn: 0, n: xs.length }, { faults: ['coarse-exp'] });
    const f = Math.fround, coarse = (x: number) => { if (x <= -16) return 0; let y = f(1 + f(x * f(1 / 16))); for (let k = 0; k < 4; k++) y = f(y * y); return y; };
    expect(Array.from(f32(out))).toEqual(Array.from(xs, coarse));
    expect(f32(out)[2]).toBeCloseTo(0.8125 ** 16, 6); // 0.036 where e^-3 = 0.0498
  });

  it('round-half-away: a Q8_0 block with amax 127 has d = 1, so 2.5 → 3 and −4.5 → −5 (half-even: 2, −4); Q8_K likewise', () => {
    const x = new Float32Array(32);
    x[0] = 127; x[1] = 2.5; x[2] = -4.5; x[3] = 1.25;
    const codes = (faults: string[]) => {
      const xq = dev.alloc(32, 'xq'), xs = dev.alloc(4, 'xscale');
      catalog().launch(dev, 'quantize_q8_0', { xq, xscale: xs, x: upload(x) }, { in_dim: 32, n_tok: 1 }, { faults });
      const b = dev.download(xq);
      return Array.from(new Int8Array(b.buffer, b.byteOffset, 4));
    };
    expect(codes(['round-half-away'])).toEqual([127, 3, -5, 1]);
    expect(codes([])).toEqual([127, 2, -4, 1]);
    const z = new Float32Array(256);
    z[0] = -127; z[9] = 6.5;
    const q = dev.alloc(256, 'q');
    catalog().launch(dev, 'quantize_q8_k', { q, d: dev.alloc(4, 'd'), bsums: dev.alloc(64, 'bs'), x: upload(z) }, { n: 256 }, { faults: ['round-half-away'] });
    const b = dev.download(q);
    expect([b[0] << 24 >> 24, b[9]]).toEqual([-127, 7]);
  });

  it('the device refuses a fault it cannot plant', () => {
    const h = dev.alloc(4, 'h');
    expect(() => catalog().launch(dev, 'add', { out: h, a: h, b: h }, { n: 1 }, { faults: ['melt'] })).toThrow(/no in-kernel fault 'melt'/);
  });
});

describe.skipIf(!ready)('injected faults on the tiny fixture (teacher-forced, layers 0..2, 5 tokens)', async () => {
  const { tinyCase, key, ownFailures } = await import('./tiny-case.ts');
  const { runDevice } = await import('../ascend/orchestrator.ts');
  type Rec = import('../model/stages.ts').StageRecord;
  // layer 2 is ratio 4: one compressed window closes at pos 3
  const tc = await tinyCase([1, 5, 9, 12, 40], 2);
  const { model, cfg, tokens, lastLayer, addonPath, teacher } = tc;
  const names = catalog();

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
    // by signature, no per-kernel table: the Sinkhorn kernel writing its comb transposed, a named buffer, a tiny scale
    ['hc_split_sinkhorn4:transpose-comb', ['hc_attn_comb']],
    ['compressor_set_rows.score:bias=0.5', ['attn_comp_score', 'index_comp_score']],
    ['router_select.weights:scale=1.001', ['router_w'], false],
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

describe.skipIf(!ready)('a fault that cannot land in the run is refused before it (exit 3, one line)', async () => {
  const { spawnSync } = await import('node:child_process');
  const { join } = await import('node:path');
  const { tinyCase } = await import('./tiny-case.ts');
  const { refuseUnlandedFaults } = await import('../ascend/orchestrator.ts');
  const { model, cfg } = await tinyCase([1], 0);
  const refused = async (spec: string, tokens: number[], lastLayer: number): Promise<string> => {
    try {
      await refuseUnlandedFaults({ model, cfg, tokens, lastLayer, inject: [parseInject(spec, catalog())], addonPath: process.env.DS4_SIM_ADDON });
    } catch (e) {
      expect((e as Ds4DiffError).exitCode).toBe(3);
      return (e as Error).message;
    }
    return '';
  };

  it('names the spec and why: layer outside the model or the run, kernel not launched, nan index beyond every output, nothing stale', async () => {
    expect(await refused('matmul_q8_0:bias=1@99999999999', [1, 5], 0)).toBe('--inject matmul_q8_0:bias=1@99999999999: layer 99999999999 is outside the model (layers 0..5, output head 6)');
    expect(await refused('compressor_update_pool:emit-pos', [1, 5, 9, 12], 0)).toMatch(/^--inject compressor_update_pool:emit-pos: compressor_update_pool is not launched by this run \(layers 0\.\.0 and the output head 6\)$/);
    expect(await refused('matmul_q8_0:bias=1@3', [1], 1)).toMatch(/matmul_q8_0 is not launched in layer 3 of this run \(it runs in layers 0,1,6; /);
    expect(await refused('rope_tail:nan=100000', [1], 0)).toMatch(/element 100000 is beyond every output of rope_tail in this run \(at most \d+ values\)/);
    expect(await refused('swiglu:stale-buffer', [1], 0)).toMatch(/swiglu never runs again at the same place at a later position/);
    // a ratio-4 window closes one token late only if a later token exists: emit-pos in a 4-token run plants nothing
    expect(await refused('compressor_update_pool:emit-pos@2', [1, 5, 9, 12], 2)).toMatch(/compressor_update_pool is not launched by this run/);
    // and what can land is accepted: the output head is layer n_layer, a stale input needs a second position
    for (const [spec, toks, last] of [['rms_norm_weight:bias=0.02@6', [1], 0], ['swiglu:stale-buffer', [1, 5], 0], ['rope_tail:nan=511', [1], 0], ['compressor_update_pool:emit-pos@2', [1, 5, 9, 12, 40], 2]] as const) {
      expect(await refused(spec, [...toks], last), spec).toBe('');
    }
  });

  it('CLI: run refuses before any work, and writes no run directory', () => {
    const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
    for (const args of [['--inject', 'matmul_q8_0:bias=1@99999999999'], ['--inject', 'compressor_update_pool:emit-pos']]) {
      const out = join(import.meta.dirname, '..', '.cache', `refused-${process.pid}`);
      const r = spawnSync(process.execPath, [CLI, 'run', '--layer', '0', '-p', 'Hello', '--out', out, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
      expect(r.status, r.stderr).toBe(3);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`--inject ${args[1].replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      expect(existsSync(out)).toBe(false);
    }
  });
});
