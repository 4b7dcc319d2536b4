// Bisect (issue 6, diff/bisect.ts): the fault table — every fault class planted in one kernel of the
// simulator, bisect names that kernel and not a downstream one — plus a last-layer fault in a full-model
// run, no culprit on an unfaulted run within tolerance, the kernel-swap search finding a planted pair
// of small biases that only together break the logits, and the search logic on a synthetic probe.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadNative } from '../ascend/native.ts';
import { bisect, type BisectProbe, type ProbeRun } from '../diff/bisect.ts';
import { EMPTY_POLICY, type Policy } from '../diff/policy.ts';
import type { StageRecord } from '../diff/record.ts';

const ready = loadNative(process.env.DS4_SIM_ADDON).ok;
const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
const cli = (args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe('bisect on a synthetic probe (no device)', () => {
  // eight "kernels" each add their bias to the logits while on the device; the reference logits are 0
  const kernels = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7'];
  const rec = (stage: string, layer: number, v: number[]): StageRecord => ({ stage, layer, pos: 0, token: 1, dtype: 'f32', shape: [v.length], values: Float32Array.from(v) });
  const reference = [rec('attn_norm', 0, [1, 2, 3, 4]), rec('logits', 1, [0, 0, 0, 0])];
  function probe(bias: Record<string, number>, own: Record<string, number> = {}): BisectProbe & { calls: number } {
    const p = {
      lastLayer: 0,
      calls: 0,
      async run(o: { teacher: boolean; hostKernels?: string[] }): Promise<ProbeRun> {
        p.calls++;
        const onDevice = kernels.filter((k) => !o.hostKernels?.includes(k));
        const err = (t: Record<string, number>) => onDevice.reduce((a, k) => a + (t[k] ?? 0), 0);
        const logitShift = o.teacher ? err(own) : err(bias);
        return {
          records: [rec('attn_norm', 0, [1, 2, 3, 4]), rec('logits', 1, [logitShift, -logitShift, 0, 0])],
          producers: new Map([['attn_norm/0/0', ['k0']], ['logits/1/0', kernels]]),
          swappable: kernels,
        };
      },
    };
    return p;
  }
  // logits tolerance: maxAbs 0.1 (registry); each bias 0.06 is within it, two of them are not
  const policy: Policy = { version: 1, rules: [{ stage: 'logits', minCosine: -1 }] };

  it('finds the pair that only together break the end result, each member necessary', async () => {
    const r = await bisect(reference, probe({ k2: 0.06, k5: 0.06 }), policy);
    expect(r.verdict.method).toBe('kernel-swap');
    expect(r.verdict.kernels.sort()).toEqual(['k2', 'k5']);
    expect(r.verdict.kernel).toBe('k2+k5');
    expect(r.exitCode).toBe(1);
    expect(r.notes.join(' ')).toMatch(/host fallback was allowed for these trials only/);
    // every search trial's verdict is the truth of its kernel set: breaks iff both k2 and k5 stay on the device
    for (const t of r.trials.filter((x) => x.purpose === 'search')) expect(!t.pass).toBe(t.deviceOnly!.includes('k2') && t.deviceOnly!.includes('k5'));
  });

  it('finds a single small bias that breaks the end result alone, within the trial budget', async () => {
    const p = probe({ k6: 0.3 });
    const r = await bisect(reference, p, policy);
    // the own (teacher) error of the logits is 0 here, so this is a kernel-swap find
    expect(r.verdict).toMatchObject({ kernel: 'k6', method: 'kernel-swap', stage: 'logits' });
    expect(p.calls).toBeLessThanOrEqual(2 + 2 * Math.ceil(Math.log2(kernels.length)) + 1);
  });

  it('names nothing when the run is within tolerance, and calls accumulated error what it is', async () => {
    expect((await bisect(reference, probe({}), policy)).verdict).toMatchObject({ kernel: null, method: 'none' });
    // attn_norm differs (inherited), but no own error and the logits are fine
    const drift: BisectProbe = {
      lastLayer: 0,
      async run(o) {
        return { records: [rec('attn_norm', 0, o.teacher ? [1, 2, 3, 4] : [1, 2, 3, 4.5]), rec('logits', 1, [0, 0, 0, 0])], producers: new Map(), swappable: kernels };
      },
    };
    const r = await bisect(reference, drift, EMPTY_POLICY);
    expect(r.verdict.kernel).toBeNull();
    expect(r.verdict.line).toMatch(/^no culprit: .*attn_norm.*accumulated error/);
    expect(r.exitCode).toBe(0);
  });

  it('blames the own-error row, not the first free-running divergence that only inherits', async () => {
    const r = await bisect(reference, probe({ k0: 0.5 }, { k0: 0.5 }), policy);
    expect(r.verdict).toMatchObject({ method: 'own-error', stage: 'logits', metric: 'maxAbs', own_error: 0.5, tolerance: 0.1 });
    // eight producers: the swap that makes the logits right alone names k0
    expect(r.verdict.kernel).toBe('k0');
    expect(r.trials.filter((t) => t.purpose === 'disambiguate' && t.pass).map((t) => t.hostKernels)).toEqual([['k0']]);
  });
});

describe.skipIf(!ready)('bisect on the simulated device (tiny fixture)', async () => {
  const { tinyCase } = await import('./tiny-case.ts');
  const { runReference } = await import('../reference/runner.ts');
  const { parseInjects } = await import('../ascend/faults.ts');
  const { simProbe } = await import('../ascend/probe.ts');
  const { loadModelAndPrompt } = await import('../cli/common.ts');
  const { DEFAULT_SYSTEM } = await import('../model/chat.ts');
  const { model, cfg } = await tinyCase([1], 0);

  async function bisectCase(tokens: number[], lastLayer: number, inject: string[], o: { kernelMath?: 'ascend' | 'exact'; policy?: Policy } = {}) {
    const c = await tinyCase(tokens, lastLayer);
    const probe = simProbe({ ...c, kernelMath: o.kernelMath, inject: parseInjects(inject, 'sim', c.addonPath) });
    try {
      return { reference: c.reference, result: await bisect(c.reference, probe, o.policy ?? EMPTY_POLICY) };
    } finally {
      probe.close();
    }
  }

  // layers 0..2 (raw, raw, ratio 4 with the indexer), 5 tokens (a ratio-4 window closes at pos 3)
  const TOKENS = [1, 5, 9, 12, 40];
  // at these tokens the attention output of layer 1 pos 0 (one cached fp8/f16 row) lands on Q8_0 rounding ties
  // k + ½ with k even, where half-away and half-even round differently
  const TIE_TOKENS = [5, 48, 85, 122, 159];
  const TIGHT: Policy = { version: 1, rules: [{ stage: 'attn_low', maxAbs: 1e-3 }] };
  // fault → the kernel bisect must name → the stages its verdict may point at
  const TABLE: Array<{ spec: string; kernel: string; stages: string[]; method?: string; tokens?: number[]; kernelMath?: 'exact'; policy?: Policy }> = [
    { spec: 'matmul_q8_0:bias=0.5', kernel: 'matmul_q8_0', stages: ['q_lora'] },
    { spec: 'rms_norm_weight:scale=1.5', kernel: 'rms_norm_weight', stages: ['attn_norm'] },
    // the NaN surfaces in matmul_f16's output (hc_attn_mix); the swap shows rms_norm_plain planted it
    { spec: 'rms_norm_plain:nan=3', kernel: 'rms_norm_plain', stages: ['hc_attn_mix'], method: 'nan' },
    { spec: 'rope_tail:pairs-halves', kernel: 'rope_tail', stages: ['q_rope'] },
    { spec: 'hc_expand_split:transpose-comb', kernel: 'hc_expand_split', stages: ['after_attn_hc'] },
    { spec: 'moe_down_q2_q8:expert-off-by-one', kernel: 'moe_down_q2_q8', stages: ['moe_down'] },
    { spec: 'moe_gate_up_mid_iq2_q8:expert-off-by-one', kernel: 'moe_gate_up_mid_iq2_q8', stages: ['moe_gate', 'moe_up', 'moe_mid'] },
    { spec: 'swiglu:stale-buffer', kernel: 'swiglu', stages: ['shared_mid'] },
    // one int8 code step: visible only below the quantization step, with the device's exact arithmetic
    { spec: 'attention_output_low_q8:round-half-away', kernel: 'attention_output_low_q8', stages: ['attn_low'], tokens: TIE_TOKENS, kernelMath: 'exact', policy: TIGHT },
    { spec: 'swiglu:coarse-exp', kernel: 'swiglu', stages: ['shared_mid'] },
    { spec: 'compressor_update_pool:emit-pos', kernel: 'compressor_update_pool', stages: ['attn_comp_row', 'index_comp_row'] },
  ];

  it('the table covers every fault class', () => {
    const classes = new Set(TABLE.map((t) => t.spec.split(':')[1].replace(/=.*/, '')));
    expect([...classes].sort()).toEqual(['bias', 'coarse-exp', 'emit-pos', 'expert-off-by-one', 'nan', 'pairs-halves', 'round-half-away', 'scale', 'stale-buffer', 'transpose-comb']);
  });

  for (const row of TABLE) {
    it(`${row.spec} → ${row.kernel}`, async () => {
      const { result } = await bisectCase(row.tokens ?? TOKENS, 2, [row.spec], row);
      const v = result.verdict;
      expect(v.kernel, v.line).toBe(row.kernel);
      expect(row.stages).toContain(v.stage);
      expect(v.method).toBe(row.method ?? 'own-error');
      expect(result.exitCode).toBe(1);
      expect(v.line.startsWith(`${row.kernel} `)).toBe(true);
      if (v.method === 'own-error') expect(v.metric === 'presence' || (v.own_error !== null && v.tolerance !== null)).toBe(true);
    });
  }

  it('the round-half-away row has rounding ties to act on: the reference attn_heads_back of layer 1 pos 0 has Q8_0 codes at an even k + ½', async () => {
    const reference: StageRecord[] = [];
    await runReference({ model, cfg, tokens: TIE_TOKENS, lastLayer: 1, tap: (r) => reference.push(r) });
    const x = reference.find((r) => r.stage === 'attn_heads_back' && r.layer === 1 && r.pos === 0)!.values as Float32Array;
    // x·(1/d) of the kernel's Q8_0 blocks (d = amax/127): half-even and half-away disagree exactly at k + ½ with
    // k even, where half-away rounds up in magnitude and half-even down
    let ties = 0;
    for (let b = 0; b < x.length; b += 32) {
      let amax = 0;
      for (let i = b; i < b + 32; i++) amax = Math.max(amax, Math.abs(x[i]));
      const id = Math.fround(1 / Math.fround(amax / 127));
      for (let i = b; i < b + 32; i++) {
        const v = Math.fround(x[i] * id);
        if (Math.abs(v - Math.trunc(v)) === 0.5 && Math.trunc(v) % 2 === 0) {
          ties++;
          expect(Math.abs(Math.sign(v) * Math.floor(Math.abs(v) + 0.5))).toBeGreaterThan(Math.abs(v));
        }
      }
    }
    expect(ties).toBeGreaterThan(0);
  });

  it('finds a fault planted in the last layer in a full-model run', async () => {
    const last = cfg.nLayer - 1;
    const { result } = await bisectCase(TOKENS, last, [`matmul_q8_0:bias=0.5@${last}`]);
    expect(result.verdict).toMatchObject({ kernel: 'matmul_q8_0', layer: last, method: 'own-error' });
    // nothing in the layers before it diverges by itself
    expect(result.comparison.rows.filter((r) => r.layer < last && r.own && !r.own.pass)).toEqual([]);
  });

  describe('on the shipped Hello case (layer 0, registry tolerances)', async () => {
    const run = await loadModelAndPrompt({ prompt: 'Hello', layer: '0', system: DEFAULT_SYSTEM });
    it('names no culprit on the unfaulted run', async () => {
      const { result } = await bisectCase(run.tokens, 0, []);
      expect(result.verdict).toMatchObject({ kernel: null, method: 'none' });
      expect(result.exitCode).toBe(0);
      expect(result.trials).toEqual([]);
    });

    // each bias alone keeps the logits within tolerance (and every stage's own error within its own)
    const PAIR = ['hc_expand_split:bias=0.01', `rms_norm_weight:bias=0.02@${cfg.nLayer}`];
    it('the kernel swap finds a planted pair of small biases that only together break the logits', async () => {
      const { result } = await bisectCase(run.tokens, 0, PAIR);
      expect(result.verdict.method).toBe('kernel-swap');
      expect(result.verdict.kernels.sort()).toEqual(['hc_expand_split', 'rms_norm_weight']);
      expect(result.verdict.stage).toBe('logits');
      expect(result.comparison.rows.some((r) => r.own && !r.own.pass)).toBe(false);
      for (const spec of PAIR) {
        const alone = await bisectCase(run.tokens, 0, [spec]);
        expect(alone.result.verdict.kernel, `${spec}: ${alone.result.verdict.line}`).toBeNull();
      }
    });
  });

  it('CLI: `bisect --layer 0 -p Hello --inject rope_tail:pairs-halves` names rope_tail, in text, JSON and Markdown, and from a run directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ds4-bisect-'));
    const text = cli(['bisect', '--layer', '0', '-p', 'Hello', '--inject', 'rope_tail:pairs-halves', '--markdown', join(dir, 'bisect.md')]);
    expect(text.code).toBe(1);
    expect(text.out.split('\n')[0]).toMatch(/^rope_tail diverged first at layer 0 pos \d+ stage q_rope: own error maxAbs \S+ vs tolerance \S+; \d+ later stages inherit$/);
    expect(readFileSync(join(dir, 'bisect.md'), 'utf8')).toContain('**rope_tail diverged first');
    const json = cli(['bisect', '--layer', '0', '-p', 'Hello', '--inject', 'rope_tail:pairs-halves', '--json']);
    const v = JSON.parse(json.out).verdict;
    expect(v).toMatchObject({ kernel: 'rope_tail', stage: 'q_rope', layer: 0 });
    expect(v.own_error).toBeGreaterThan(v.tolerance);
    const runDir = join(dir, 'run');
    expect(cli(['run', '--layer', '0', '-p', 'Hello', '--inject', 'rope_tail:pairs-halves', '--no-noise-floor', '--out', runDir]).code).toBe(1);
    expect(existsSync(join(runDir, 'manifest.json'))).toBe(true);
    const again = JSON.parse(cli(['bisect', runDir, '--json']).out).verdict;
    expect(again).toEqual(v);
  });

  it('CLI: an engine\'s run directory is bisected from its dumps, own errors by replay', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'ds4-bisect-engine-')), 'run');
    const double = join(import.meta.dirname, 'ds4-engine-double.mjs');
    expect(cli(['engine', '--layer', '0', '--no-noise-floor', '--out', dir, '--', process.execPath, double, '-p', 'Hello', '--layers', '0', '--inject', 'rope_tail:pairs-halves']).code).toBe(1);
    const r = cli(['bisect', dir, '--json']);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.out);
    expect(out.verdict).toMatchObject({ kernel: 'rope_tail', method: 'replay', stage: 'q_rope', layer: 0 });
    expect(out.trials).toEqual([]);
    expect(cli(['bisect', dir, '--inject', 'swiglu:coarse-exp']).code).toBe(3);
  });

  it('CLI: bad input is one line and exit 3', () => {
    const r = cli(['bisect', '--layer', '0', '-p', 'Hello', '--inject', 'rope_tail:transpose-comb']);
    expect(r.code).toBe(3);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/transpose-comb makes no sense for rope_tail/);
    const missing = cli(['bisect', join(tmpdir(), 'no-such-run-dir')]);
    expect(missing.code).toBe(3);
    expect(missing.err).toMatch(/manifest\.json: no such file/);
  });
});
