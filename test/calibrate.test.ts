// calibrate (ascend/calibrate.ts): the judge's power — faults of decreasing magnitude planted in a kernel,
// the smallest the gate fails and bisect names — and its false alarms on clean generated prompts; the CLI.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadNative } from '../ascend/native.ts';
import { generatePrompts } from '../model/prompts.ts';

const ready = loadNative(process.env.DS4_SIM_ADDON).ok;
const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
const cli = (args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, 'calibrate', ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe('generated prompts', () => {
  it('are deterministic per seed, differ between seeds and between each other', () => {
    const a = generatePrompts(20, 1);
    expect(generatePrompts(20, 1)).toEqual(a);
    expect(generatePrompts(20, 2)).not.toEqual(a);
    expect(new Set(a).size).toBe(20);
    for (const p of a) expect(p.split(' ').length).toBeGreaterThanOrEqual(2);
  });
});

describe.skipIf(!ready)('calibrate on the simulated device (tiny fixture)', async () => {
  const { calibrateKernels, cleanRuns, faultSpec, kindOf } = await import('../ascend/calibrate.ts');
  const { tinyCase } = await import('./tiny-case.ts');
  const { model, cfg } = await tinyCase([1], 0);
  const TOKENS = [1, 5, 9, 12, 40];

  it('names layer kinds and writes fault specs relative to the output scale', () => {
    expect(kindOf(cfg, cfg.nLayer)).toBe('head');
    expect(kindOf(cfg, 0)).toMatch(/^(raw|ratio4|ratio128)(\+hash)?$/);
    expect(faultSpec('swiglu', 'scale', 1e-3, 2, 5)).toBe('swiglu:scale=1.001@2');
    expect(faultSpec('swiglu', 'bias', 1e-3, 2, 5)).toBe('swiglu:bias=0.005000@2');
  });

  it('a 1 % fault in swiglu is detected and named; one far below its budget is not, and the search stops there', async () => {
    const rows = await calibrateKernels({ model, cfg, tokens: TOKENS, kernelMath: 'ascend' }, { kernels: ['swiglu'], layers: [0], magnitudes: [1e-2, 1e-7, 1e-8] });
    expect(rows.map((r) => r.fault)).toEqual(['scale', 'bias']);
    for (const r of rows) {
      expect(r).toMatchObject({ kernel: 'swiglu', layer: 0, detected: 1e-2, named: 1e-2 });
      // 1e-7 is missed (within the kernel's budget): 1e-8 is not tried
      expect(r.trials.map((t) => [t.magnitude, t.gate])).toEqual([[1e-2, 1], [1e-7, 0]]);
      expect(r.trials[0].line).toMatch(/^swiglu diverged first at layer 0/);
    }
  });

  it('a clean generated prompt through all layers passes in exact math', async () => {
    const runs = await cleanRuns({ model, cfg }, { n: 1, seed: 7, maths: ['exact'] });
    expect(runs).toHaveLength(1);
    expect(runs[0].exitCode, runs[0].line).toBe(0);
    expect(runs[0].closest!.ratio).toBeLessThan(1);
  });

  it('CLI: one kernel at one layer, JSON and the one line; bad input is one line and exit 3', () => {
    const r = cli(['--kernel', 'rms_norm_weight', '--calibrate-layers', '0', '--magnitudes', '0.01,0.001', '--clean', '0', '--json']);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.passes).toBe(true);
    expect(j.line).toMatch(/^CALIBRATED: every planted fault \(2: 1 kernels × layer kinds × scale, bias\) detected and named at 0\.01/);
    expect(j.thresholds).toEqual([{ kernel: 'rms_norm_weight', detected: 1e-3, named: 1e-3, rows: 2 }]);
    // and what would calibrate nothing: a kernel the case does not launch (CALIBRATED on no fault), nothing asked for
    for (const bad of [['--magnitudes', '2'], ['--kernel', 'nope'], ['--clean', '-1'], ['--calibrate-layers', '99'], ['--kernel', 'attention_prefill_raw'], ['--kernel', 'swiglu', '--calibrate-layers', '6'], ['--no-faults']]) {
      const b = cli(['--clean', '0', ...bad]);
      expect(b.code, bad.join(' ')).toBe(3);
      expect(b.err.trim().split('\n'), bad.join(' ')).toHaveLength(1);
    }
  });
});
