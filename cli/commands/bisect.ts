// `ds4-diff bisect [RUN_DIR | run options]`: which device kernel diverged (issue 6, diff/bisect.ts).
// With a run directory of the simulated device, its case (model, tokens, layers, kernel math, injected
// faults, disabled kernels) is read from the manifest and re-run; otherwise the case comes from the
// same options as `run`. Exit: 0 nothing diverged, 1 a culprit was named, 3 bad input, 125 diverged
// but no culprit could be found.
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { runDeviceBounds } from '../../ascend/budgets.ts';
import { caseDifferences, findShippedBaseline, loadBaseline, type Baseline } from '../../diff/baseline.ts';
import { bisect, bisectFromReplay } from '../../diff/bisect.ts';
import { compareRun, factsOf } from '../../diff/compare.ts';
import { makeJudge, verdictOf } from '../../diff/gate.ts';
import type { Judge } from '../../diff/judge.ts';
import { readManifest, recordedProblems, sidePath, type RunManifest } from '../../diff/manifest.ts';
import { loadPolicy } from '../../diff/policy.ts';
import type { StageRecord } from '../../model/stages.ts';
import { badInput } from '../../model/errors.ts';
import { runReference } from '../../reference/runner.ts';
import { ModelWeights } from '../../reference/weights.ts';
import { renderBisectJson, renderBisectMarkdown, renderBisectTerminal, type BisectReportInput } from '../../reports/bisect.ts';
import { renderHtml } from '../../reports/html.ts';
import { checkReportPaths } from '../../reports/write.ts';
import { addModelPromptOptions, collectList, loadModel, loadModelAndPrompt, newManifest, progress, type LoadedRun, type ModelPromptOptions } from '../common.ts';

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
  html?: string;
}

export function register(program: Command): void {
  addModelPromptOptions(program.command('bisect').description('find the device kernel that diverged: first divergence, own vs inherited error, kernel swap'))
    .argument('[run-dir]', 'a run directory of `ds4-diff run` (its case is re-run); without it, give run options')
    .option('--kernel-math <m>', 'ascend (the AscendC kernels\' approximations) or exact (default: the run\'s, else ascend)')
    .option('--inject <spec>', 'plant a fault in a simulator kernel: KERNEL:FAULT[=ARG] (repeatable; see `ds4-diff run --help`)', (v: string, prev: string[]) => [...prev, v], [])
    .option('--disable-kernel <names>', 'remove device kernels as in `run` (repeatable, comma-separated)', collectList, [])
    .option('--allow-host-fallback', 'let disabled kernels run on the host')
    .option('--baseline <file>', 'a baseline of the case: tightens the budgets (default: the shipped baseline matching the case)')
    .option('--no-baseline', 'judge by the arithmetic budgets alone even when a shipped baseline matches the case')
    .option('--policy <file>', 'your bounds on chosen rows, on top of the judge\'s')
    .option('--max-trials <n>', 'most device passes the kernel-swap search may make', '64')
    .option('--json', 'print the result as JSON (verdict object: kernel, stage, layer, pos, own_error, tolerance)')
    .option('--markdown <file>', 'also write the report as Markdown')
    .option('--html <file>', 'also write the HTML report of the comparison (heatmaps, plots, the case) with the bisect verdict')
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
  /** the prompt as ds4-ascend's batched prefill (`run --device-prefill`) */
  prefill: boolean;
  /** where the head runs (`run --generate`: at the prompt's end and every decode step; default the last token) */
  headPositions?: number[];
  source: string;
}

const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

/** The case of a run directory (re-run on the simulator), with command-line additions. */
async function caseFromRun(dir: string, m: RunManifest, opts: BisectCliOptions): Promise<Case> {
  const o = m.options;
  const run = await runOfManifest(m, opts.model);
  // a generating run judged the tokens its device generated (all but the last), the head at every step
  const generated = m.generated ?? [];
  const T = run.tokens.length;
  return {
    run: generated.length ? { ...run, tokens: [...run.tokens, ...generated.slice(0, -1)] } : run,
    headPositions: generated.length ? generated.map((_, k) => T - 1 + k) : undefined,
    kernelMath: (opts.kernelMath ?? m.kernelMath ?? 'ascend') as 'ascend' | 'exact',
    inject: [...strings(o.inject), ...opts.inject],
    disabledKernels: [...strings(o.disabledKernels), ...opts.disableKernel],
    allowHostFallback: o.allowHostFallback === true || !!opts.allowHostFallback,
    prefill: o.devicePrefill === true,
    source: `run ${dir}`,
  };
}

/** The model, tokens and layers of a run, checking the model file is still the one the run used. */
async function runOfManifest(m: RunManifest, modelPath = m.model.path): Promise<LoadedRun> {
  const { model, cfg } = await loadModel(modelPath);
  if (model.fingerprint !== m.model.fingerprint) throw badInput(`${modelPath}: model fingerprint ${model.fingerprint} is not the run's (${m.model.fingerprint}); not the model the run used`);
  return { modelPath, model, cfg, tokens: m.promptTokens, prompt: m.prompt, lastLayer: m.layers.last, allLayers: m.layers.all };
}

/**
 * The judge of a case, as `run` and `gate` build it: arithmetic budgets, the baseline (explicit or shipped), the policy.
 * `judgeOf` makes it with the device bounds of the kernels launched per stage (bisect's own device pass; by default
 * the manifest's, or every kernel that declares the stage); the baseline and policy are read at once.
 */
function judgeFor(m: RunManifest, opts: BisectCliOptions): { judge: Judge; judgeOf: (producers?: Record<string, string[]>) => Judge; text: string } {
  const file = opts.baseline === false ? undefined : (opts.baseline ?? findShippedBaseline(m));
  let baseline: { file: string; b: Baseline } | undefined;
  if (file) {
    const b = loadBaseline(file);
    const diffs = caseDifferences(b.case, m);
    if (diffs.length) throw badInput(`baseline ${file} is for a different case: ${diffs.join('; ')}`);
    baseline = { file, b };
  }
  const policy = opts.policy ? loadPolicy(opts.policy) : undefined;
  const judgeOf = (producers = m.producers) => makeJudge({ deviceBound: runDeviceBounds({ ...m, producers }), baseline, policy });
  const judge = judgeOf();
  for (const w of judge.warnings) process.stderr.write(`ds4-diff: warning: ${w}\n`);
  return { judge, judgeOf, text: judge.sources.join('; ') };
}

/** An engine's run directory: its dumps as they are, own errors from the replay it holds (no device to re-run). */
async function bisectEngineRun(dir: string, m: RunManifest, opts: BisectCliOptions): Promise<number> {
  if (opts.inject.length || opts.disableKernel.length || opts.kernelMath) throw badInput(`${dir}: --inject, --disable-kernel and --kernel-math need the simulator; this run's backend is '${m.backend}'`);
  if (!sidePath(dir, m, 'replay')) throw badInput(`${dir}: the run holds no replay of the engine's dump (its replay failed: see the manifest's notes); without own errors there is no culprit to name`);
  const run = await runOfManifest(m, opts.model);
  const { judge, text } = judgeFor(m, opts);
  const recorded = recordedProblems(m);
  const result = bisectFromReplay(await compareRun(dir, judge), {}, [...(recorded.regressions ?? []), ...(recorded.unfinished ?? []), ...(recorded.untested ?? [])]);
  return report({ title: `ds4-diff bisect: ${m.backend} run ${dir}, ${run.tokens.length} tokens, layers 0..${run.lastLayer}`, result, tolerances: text }, opts, m);
}

function report(input: BisectReportInput, opts: BisectCliOptions, manifest: RunManifest): number {
  if (opts.markdown) writeFileSync(opts.markdown, renderBisectMarkdown(input));
  const c = input.result.comparison;
  if (opts.html) writeFileSync(opts.html, renderHtml({ title: input.title, comparison: c, verdict: verdictOf(c, recordedProblems(manifest)), sources: [input.tolerances], bisect: input.result.verdict, manifest }));
  process.stdout.write(opts.json ? renderBisectJson(input) : renderBisectTerminal(input));
  return input.result.exitCode;
}

async function bisectCommand(runDir: string | undefined, opts: BisectCliOptions): Promise<number> {
  const kc = opts.kernelMath;
  if (kc !== undefined && kc !== 'ascend' && kc !== 'exact') throw badInput(`--kernel-math must be ascend or exact, not '${kc}'`);
  if (runDir !== undefined && (opts.prompt !== undefined || opts.tokens !== undefined)) throw badInput('give either a run directory or -p/--tokens, not both (-m with a run directory names where its model is now)');
  checkReportPaths(opts);
  const maxTrials = Number(opts.maxTrials);
  if (!Number.isInteger(maxTrials) || maxTrials < 1) throw badInput(`--max-trials: '${opts.maxTrials}' is not a positive integer`);
  let c: Case;
  let manifest: RunManifest | undefined;
  if (runDir !== undefined) {
    const m = readManifest(runDir);
    if (m.backend !== 'sim') return bisectEngineRun(runDir, m, opts);
    c = await caseFromRun(runDir, m, opts);
    manifest = m;
  } else {
    c = { run: await loadModelAndPrompt(opts), kernelMath: (kc ?? 'ascend') as 'ascend' | 'exact', inject: opts.inject, disabledKernels: opts.disableKernel, allowHostFallback: !!opts.allowHostFallback, prefill: false, source: 'command line' };
  }
  const { parseInjects } = await import('../../ascend/faults.ts');
  const { simProbe } = await import('../../ascend/probe.ts');
  const { refuseUnlandedFaults } = await import('../../ascend/orchestrator.ts');
  const inject = parseInjects(c.inject, 'sim');
  await refuseUnlandedFaults({ model: c.run.model, cfg: c.run.cfg, tokens: c.run.tokens, lastLayer: c.run.lastLayer, inject, prefill: c.prefill });
  // a run's case as its manifest says it (a generating run's prompt and generated tokens apart), for baseline matching
  const caseManifest = { ...newManifest(c.run, 'sim', { inject: c.inject, disabledKernels: c.disabledKernels, allowHostFallback: c.allowHostFallback, devicePrefill: c.prefill }, c.kernelMath), ...(manifest && { promptTokens: manifest.promptTokens, generated: manifest.generated }) };
  manifest ??= caseManifest;
  const { judgeOf, text: tolerances } = judgeFor(caseManifest, opts);

  const prog = progress('bisect');
  const reference: StageRecord[] = [];
  const noise: StageRecord[] = [];
  const ties: StageRecord[] = [];
  const { run } = c;
  await runReference({
    model: run.model, cfg: run.cfg, weights: new ModelWeights(run.model, run.cfg), tokens: run.tokens, lastLayer: run.lastLayer, headPositions: c.headPositions,
    tap: (r) => reference.push(r), facts: { noise: (r) => noise.push(r), ties: (r) => ties.push(r), approx: c.kernelMath === 'ascend' }, onProgress: (m) => prog.tick(`reference ${m}`),
  });
  const facts = await factsOf(noise, ties);
  const probe = simProbe({
    model: run.model, cfg: run.cfg, tokens: run.tokens, lastLayer: run.lastLayer, reference,
    kernelMath: c.kernelMath, inject, disabledKernels: c.disabledKernels, allowHostFallback: c.allowHostFallback, prefill: c.prefill, headPositions: c.headPositions,
  });
  let result;
  try {
    result = await bisect(reference, facts, probe, judgeOf, { maxTrials, onProgress: (m) => prog.tick(m) });
  } finally {
    probe.close();
  }
  prog.done();
  const title = `ds4-diff bisect: ${run.tokens.length} tokens, layers 0..${run.lastLayer}, sim/${c.kernelMath}${c.prefill ? ', device prefill' : ''}${inject.length ? `, injected ${inject.map((f) => f.spec).join(' ')}` : ''} (${c.source})`;
  return report({ title, result, tolerances }, opts, manifest);
}
