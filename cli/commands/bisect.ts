// `ds4-diff bisect [RUN_DIR | run options]`: which device kernel diverged (issue 6, diff/bisect.ts).
// With a run directory of the simulated device, its case (model, tokens, layers, kernel math, injected
// faults, disabled kernels) is read from the manifest and re-run; otherwise the case comes from the
// same options as `run`. Exit: 0 nothing diverged, 1 a culprit was named, 3 bad input, 125 diverged
// but no culprit could be found.
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { loadBaseline, baselinePolicy } from '../../diff/baseline.ts';
import { bisect } from '../../diff/bisect.ts';
import { readManifest } from '../../diff/manifest.ts';
import { EMPTY_POLICY, loadPolicy, type Policy } from '../../diff/policy.ts';
import type { StageRecord } from '../../diff/record.ts';
import { configFromGguf } from '../../model/config.ts';
import { badInput } from '../../model/errors.ts';
import { openGguf } from '../../model/gguf.ts';
import { runReference } from '../../reference/runner.ts';
import { ModelWeights } from '../../reference/weights.ts';
import { renderBisectJson, renderBisectMarkdown, renderBisectTerminal } from '../../reports/bisect.ts';
import { addModelPromptOptions, loadModelAndPrompt, newManifest, progress, type LoadedRun, type ModelPromptOptions } from '../common.ts';
import { findShippedBaseline } from './run.ts';

interface BisectCliOptions extends ModelPromptOptions {
  kernelMath?: string;
  inject: string[];
  disableKernel: string[];
  allowHostFallback?: boolean;
  baseline?: string | false;
  policy?: string;
  maxTrials: string;
  json?: boolean;
  markdown?: string;
}

const collect = (xs: string, prev: string[]) => [...prev, ...xs.split(',').map((s) => s.trim()).filter(Boolean)];

export function register(program: Command): void {
  addModelPromptOptions(program.command('bisect').description('find the device kernel that diverged: first divergence, own vs inherited error, kernel swap'))
    .argument('[run-dir]', 'a run directory of `ds4-diff run` (its case is re-run); without it, give run options')
    .option('--kernel-math <m>', 'ascend (the AscendC kernels\' approximations) or exact (default: the run\'s, else ascend)')
    .option('--inject <spec>', 'plant a fault in a simulator kernel: KERNEL:FAULT[=ARG] (repeatable; see `ds4-diff run --help`)', (v: string, prev: string[]) => [...prev, v], [])
    .option('--disable-kernel <names>', 'remove device kernels as in `run` (repeatable, comma-separated)', collect, [])
    .option('--allow-host-fallback', 'let disabled kernels run on the host')
    .option('--baseline <file>', 'judge rows by this baseline\'s tolerances (default: the shipped baseline matching the case, else the registry\'s)')
    .option('--no-baseline', 'judge rows by the registry\'s tolerances even when a shipped baseline matches the case')
    .option('--policy <file>', 'tolerance rules (on top of the baseline\'s or the registry\'s)')
    .option('--max-trials <n>', 'most device passes the kernel-swap search may make', '64')
    .option('--json', 'print the result as JSON (verdict object: kernel, stage, layer, pos, own_error, tolerance)')
    .option('--markdown <file>', 'also write the report as Markdown')
    .addHelpText('after', [
      '',
      'Exit codes: 0 nothing diverged, 1 a culprit kernel was named, 3 bad input, 125 diverged but no culprit found.',
      'The kernel-swap step runs kernels on the host for its trials only (said so in the report).',
      '',
      'Examples:',
      '  ds4-diff bisect --layer 0 -p Hello --inject rope_tail:pairs-halves',
      '  ds4-diff bisect runs/2026-11-23T10-00-00-000Z',
      '  ds4-diff bisect -p Hello --inject matmul_q8_0:bias=0.02 --inject moe_down_q2_q8:bias=0.02 --json',
    ].join('\n'))
    .action(async (runDir: string | undefined, opts: BisectCliOptions) => {
      process.exitCode = await bisectCommand(runDir, opts);
    });
}

interface Case {
  run: LoadedRun;
  kernelMath: 'ascend' | 'exact';
  inject: string[];
  disabledKernels: string[];
  allowHostFallback: boolean;
  source: string;
}

const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

/** The case of a run directory (re-run on the simulator), with command-line additions. */
async function caseFromRun(dir: string, opts: BisectCliOptions): Promise<Case> {
  const m = readManifest(dir);
  if (m.backend !== 'sim') throw badInput(`${dir}: bisect re-runs the case on the simulated device; this run's backend is '${m.backend}' (compare its dumps with \`ds4-diff compare\`/\`replay\` instead)`);
  const model = await openGguf(m.model.path);
  if (model.fingerprint !== m.model.fingerprint) throw badInput(`${m.model.path}: model fingerprint ${model.fingerprint} is not the run's (${m.model.fingerprint}); the file changed since the run`);
  const cfg = configFromGguf(model);
  const run: LoadedRun = { modelPath: m.model.path, model, cfg, tokens: m.promptTokens, prompt: m.prompt, lastLayer: m.layers.last, allLayers: m.layers.all };
  const o = m.options;
  return {
    run,
    kernelMath: (opts.kernelMath ?? m.kernelMath ?? 'ascend') as 'ascend' | 'exact',
    inject: [...strings(o.inject), ...opts.inject],
    disabledKernels: [...strings(o.disabledKernels), ...opts.disableKernel],
    allowHostFallback: o.allowHostFallback === true || !!opts.allowHostFallback,
    source: `run ${dir}`,
  };
}

async function bisectCommand(runDir: string | undefined, opts: BisectCliOptions): Promise<number> {
  const kc = opts.kernelMath;
  if (kc !== undefined && kc !== 'ascend' && kc !== 'exact') throw badInput(`--kernel-math must be ascend or exact, not '${kc}'`);
  if (runDir !== undefined && (opts.prompt !== undefined || opts.tokens !== undefined || opts.model !== undefined)) throw badInput('give either a run directory or -m/-p/--tokens, not both');
  const maxTrials = Number(opts.maxTrials);
  if (!Number.isInteger(maxTrials) || maxTrials < 1) throw badInput(`--max-trials: '${opts.maxTrials}' is not a positive integer`);
  const c: Case = runDir !== undefined
    ? await caseFromRun(runDir, opts)
    : { run: await loadModelAndPrompt(opts), kernelMath: (kc ?? 'ascend') as 'ascend' | 'exact', inject: opts.inject, disabledKernels: opts.disableKernel, allowHostFallback: !!opts.allowHostFallback, source: 'command line' };
  const { parseInjects } = await import('../../ascend/faults.ts');
  const { simProbe } = await import('../../ascend/probe.ts');
  const inject = parseInjects(c.inject, 'sim');

  // tolerances: an explicit baseline, else the shipped one matching the case (as `run` gates), else the registry's
  const manifest = newManifest(c.run, 'sim', {}, c.kernelMath);
  const baselineFile = opts.baseline === false ? undefined : (opts.baseline ?? findShippedBaseline(manifest));
  const extra: Policy | undefined = opts.policy ? loadPolicy(opts.policy) : undefined;
  let policy: Policy = extra ?? EMPTY_POLICY;
  let tolerances = opts.policy ? `registry defaults + ${opts.policy}` : 'registry defaults';
  if (baselineFile) {
    const b = baselinePolicy(loadBaseline(baselineFile));
    policy = { ...b, rules: [...b.rules, ...(extra?.rules ?? [])] };
    tolerances = `baseline ${baselineFile}${opts.policy ? ` + ${opts.policy}` : ''} (rows it does not list: unchecked)`;
  }

  const prog = progress('bisect');
  const reference: StageRecord[] = [];
  const { run } = c;
  await runReference({ model: run.model, cfg: run.cfg, weights: new ModelWeights(run.model, run.cfg), tokens: run.tokens, lastLayer: run.lastLayer, tap: (r) => reference.push(r), onProgress: (m) => prog.tick(`reference ${m}`) });
  const probe = simProbe({
    model: run.model, cfg: run.cfg, tokens: run.tokens, lastLayer: run.lastLayer, reference,
    kernelMath: c.kernelMath, inject, disabledKernels: c.disabledKernels, allowHostFallback: c.allowHostFallback,
  });
  const result = await bisect(reference, probe, policy, { maxTrials, onProgress: (m) => prog.tick(m) });
  prog.done();
  const title = `ds4-diff bisect: ${run.tokens.length} tokens, layers 0..${run.lastLayer}, sim/${c.kernelMath}${inject.length ? `, injected ${inject.map((f) => f.spec).join(' ')}` : ''} (${c.source})`;
  const input = { title, result, tolerances };
  if (opts.markdown) writeFileSync(opts.markdown, renderBisectMarkdown(input));
  process.stdout.write(opts.json ? renderBisectJson(input) : renderBisectTerminal(input));
  return result.exitCode;
}
