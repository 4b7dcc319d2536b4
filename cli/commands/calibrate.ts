// `ds4-diff calibrate`: the tool's own sensitivity and false-alarm rate (ascend/calibrate.ts) — faults of
// decreasing magnitude planted in every launched kernel at every layer kind, judged and bisected; clean runs on
// generated prompts. Exit 0 when every fault is detected and named at 1e-2 and no clean run fails, 1 otherwise,
// 3 bad input, 125 without the simulator.
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { MAGNITUDES, calibrateKernels, calibrationPasses, cleanRuns, type Calibration, type CleanRun } from '../../ascend/calibrate.ts';
import type { KernelMath } from '../../ascend/budgets.ts';
import { EXIT, badInput } from '../../model/errors.ts';
import { renderCalibrationJson, renderCalibrationMarkdown, renderCalibrationTerminal } from '../../reports/calibrate.ts';
import { addModelPromptOptions, collectList, loadModelAndPrompt, progress, type ModelPromptOptions } from '../common.ts';

interface CalibrateOptions extends ModelPromptOptions {
  kernelMath: string;
  kernel: string[];
  calibrateLayers?: string;
  magnitudes?: string;
  clean: string;
  seed: string;
  faults: boolean;
  json?: boolean;
  markdown?: string;
}

const int = (name: string, v: string, min: number): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw badInput(`${name}: '${v}' is not an integer ≥ ${min}`);
  return n;
};

export function register(program: Command): void {
  addModelPromptOptions(program.command('calibrate').description('measure the judge: the smallest planted fault per kernel and layer kind that the gate fails and bisect names, and false alarms on clean generated prompts'))
    .option('--kernel-math <m>', 'ascend or exact: the device math of the fault runs', 'ascend')
    .option('--kernel <names>', 'only these kernels (repeatable, comma-separated)', collectList, [])
    .option('--calibrate-layers <list>', 'plant faults at these layers (comma-separated; the head is n_layer) instead of the first layer of each kind and the head')
    .option('--magnitudes <list>', `relative fault magnitudes, large to small (default ${MAGNITUDES.join(',')})`)
    .option('--clean <n>', 'clean runs: this many generated prompts, each in both kernel maths, all layers (0: none)', '20')
    .option('--seed <n>', 'seed of the generated prompts', '1')
    .option('--no-faults', 'only the clean runs')
    .option('--json', 'print the calibration as JSON')
    .option('--markdown <file>', 'also write it as Markdown')
    .addHelpText('after', [
      '',
      'Faults: KERNEL:scale=1+m and KERNEL:bias=m·rms (the RMS of the kernel\'s output rows at that layer), at',
      'the first layer of each layer kind and in the head; magnitudes tried from large to small, stopping at the',
      'first the gate misses and bisect does not name. Without -p/--tokens the case is -p Hello.',
      'Exit codes: 0 every fault detected and named at 1e-2 and no false alarm, 1 otherwise, 3 bad input, 125 no simulator.',
      '',
      'Examples:',
      '  ds4-diff calibrate',
      '  ds4-diff calibrate --kernel swiglu,attention_decode --clean 0',
      '  ds4-diff calibrate --no-faults --clean 40 --markdown calibration.md',
    ].join('\n'))
    .action(async (opts: CalibrateOptions) => {
      process.exitCode = await calibrateCommand(opts);
    });
}

async function calibrateCommand(opts: CalibrateOptions): Promise<number> {
  if (opts.kernelMath !== 'ascend' && opts.kernelMath !== 'exact') throw badInput(`--kernel-math must be ascend or exact, not '${opts.kernelMath}'`);
  const clean = int('--clean', opts.clean, 0);
  const seed = int('--seed', opts.seed, 0);
  if (!opts.faults && clean === 0) throw badInput('nothing to calibrate: --no-faults and --clean 0');
  const magnitudes = opts.magnitudes === undefined ? MAGNITUDES : opts.magnitudes.split(',').map((s) => {
    const m = Number(s);
    if (!(m > 0 && m < 1)) throw badInput(`--magnitudes: '${s}' is not a relative magnitude in (0, 1)`);
    return m;
  });
  const run = await loadModelAndPrompt(opts.prompt === undefined && opts.tokens === undefined ? { ...opts, prompt: 'Hello' } : opts);
  const layers = opts.calibrateLayers?.split(',').map((s) => {
    const l = int('--calibrate-layers', s.trim(), 0);
    if (l > run.cfg.nLayer) throw badInput(`--calibrate-layers: layer ${l} is past the head (n_layer = ${run.cfg.nLayer})`);
    return l;
  });
  const { kernelCatalog } = await import('../../ascend/kernels.ts');
  const catalog = kernelCatalog();
  for (const k of opts.kernel) if (!catalog.kernels.has(k)) throw badInput(`--kernel ${k}: no such kernel (see ds4-diff kernels)`);
  const kernelMath = opts.kernelMath as KernelMath;
  const c: Calibration = { kernelMath, tokens: run.tokens, magnitudes, kernels: [], clean: [] };
  const prog = progress('calibrate');
  try {
    if (opts.faults) {
      c.kernels = await calibrateKernels(
        { model: run.model, cfg: run.cfg, tokens: run.tokens, kernelMath },
        { kernels: opts.kernel.length ? opts.kernel : undefined, layers, magnitudes, onTrial: (k, t) => prog.tick(`${t.spec}: gate ${t.gate}, bisect ${t.named ?? 'none'}`) },
      );
    }
    if (clean) {
      c.clean = await cleanRuns({ model: run.model, cfg: run.cfg }, { n: clean, seed, maths: ['ascend', 'exact'], onRun: (r: CleanRun) => prog.tick(`clean ${r.kernelMath} "${r.prompt}": exit ${r.exitCode}`) });
    }
  } finally {
    prog.done();
  }
  if (opts.markdown) writeFileSync(opts.markdown, renderCalibrationMarkdown(c));
  process.stdout.write(opts.json ? renderCalibrationJson(c) : renderCalibrationTerminal(c));
  return calibrationPasses(c) ? EXIT.ok : EXIT.regression;
}
