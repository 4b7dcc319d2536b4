// `ds4-diff run -p TEXT`: the main job. Runs the reference (with the facts its judge needs: each stage's
// own rounding noise and decisions) and the simulated device on the same tokens — free-running (it consumes
// its own outputs: accumulated error) and teacher-forced (each stage consumes the reference's inputs: its
// own error) — writes the run directory, judges it (ascend/pipeline.ts, diff/gate.ts) and prints the report.
import type { Command } from 'commander';
import { capturePlan, captureMode, parseFullSpecs } from '../../diff/plan.ts';
import { loadPolicy, type Policy } from '../../diff/policy.ts';
import { withRunDir } from '../../diff/rundir.ts';
import type { RunCase } from '../../ascend/pipeline.ts';
import { Ds4DiffError, EXIT, badInput } from '../../model/errors.ts';
import type { ReferenceResult } from '../../reference/runner.ts';
import { ModelWeights } from '../../reference/weights.ts';
import { checkReportPaths, type ReportOutputs } from '../../reports/write.ts';
import { addModelPromptOptions, addRunDirOptions, collectList, loadModelAndPrompt, newManifest, progress, tokenPieces, type ModelPromptOptions } from '../common.ts';
import { VERSION } from '../version.ts';

interface RunOptions extends ModelPromptOptions, ReportOutputs {
  backend: string;
  kernelMath: string;
  allowHostFallback?: boolean;
  disableKernel: string[];
  inject: string[];
  out?: string;
  force?: boolean;
  baseline?: string | false;
  policy?: string;
  teacher: boolean;
  devicePrefill?: boolean;
  capture: string;
  full: string[];
  generate?: string;
}

export function register(program: Command): void {
  addRunDirOptions(addModelPromptOptions(program.command('run').description('run the reference and the device path, capture every stage of both, compare and gate')))
    .option('--backend <name>', 'device backend: sim (the simulated Ascend device) or ascend (needs the CANN runtime)', 'sim')
    .option('--kernel-math <m>', 'ascend (the AscendC kernels\' approximations) or exact', 'ascend')
    .option('--allow-host-fallback', 'let primitives without a device kernel run on the host (recorded in the manifest\'s fallback ledger)')
    .option('--disable-kernel <names>', 'remove device kernels, as an unported primitive would be missing (repeatable, comma-separated)', collectList, [])
    .option('--inject <spec>', 'plant a fault in a simulator kernel: KERNEL[.BUFFER]:FAULT[=ARG][@LAYER|@A:B] (repeatable; the head is layer n_layer; faults: bias=X scale=X nan=I pairs-halves transpose-comb expert-off-by-one stale-buffer round-half-away coarse-exp emit-pos; `ds4-diff kernels` lists which a kernel takes)', (v: string, prev: string[]) => [...prev, v], [])
    .option('--device-prefill', 'run the prompt on the device as ds4-ascend\'s batched prefill (layer by layer, its prefill kernels) instead of token by token')
    .option('--no-teacher', 'skip the teacher-forced device pass: no own errors, only the end result is judged')
    .option('--generate <n>', 'after the prompt, let the device generate N tokens greedily; the reference follows the device\'s tokens and every position is judged, the end result by KL / same top-1 / Δp over them')
    .option('--capture <mode>', 'full (every row\'s values), stats (per-row statistics; in full: the logits, ids and their scores, --full rows and, by a second pass, the region around the first divergence) or auto (stats when one side\'s full dump would pass 32 MiB: a real-dims model through all layers)', 'auto')
    .option('--full <spec>', 'with a stats capture, also keep these rows in full: STAGE[@LAYERS], globs over stage names (repeatable, e.g. q_rope@0, \'attn_*@0:3\')', (v: string, prev: string[]) => [...prev, v], [])
    .addHelpText('after', [
      '',
      'Exit codes: 0 pass, 1 regression (a stage wrong by itself, a row on one side only, the end result out of its budget),',
      '2 host-fallback violation, 3 bad input, 125 cannot evaluate.',
      'The no-host-fallback gate is on unless --allow-host-fallback is given (DS4_ASCEND_NO_HOST_FALLBACK=1 forces it on).',
      '',
      'Examples:',
      '  ds4-diff run --layer 0 -p Hello',
      '  ds4-diff run --layers all -p Hello --kernel-math exact',
      '  ds4-diff run --layer 0 -p Hello --disable-kernel router_select --allow-host-fallback',
      '  ds4-diff run --layers all -p Hello -m flash.gguf --capture stats --full q_rope@0',
      '  ds4-diff run --layers all -p Hello --generate 8',
    ].join('\n'))
    .action(async (opts: RunOptions) => {
      process.exitCode = await runCommand(opts);
    });
}

async function runCommand(opts: RunOptions): Promise<number> {
  if (opts.backend === 'ascend') {
    throw badInput('--backend ascend needs the Huawei CANN runtime (AscendCL) on an Atlas host; it is not available here. Run ds4-ascend there with `ds4-diff engine` and compare its dumps, or use --backend sim');
  }
  if (opts.backend !== 'sim') throw badInput(`--backend must be sim or ascend, not '${opts.backend}'`);
  if (opts.kernelMath !== 'ascend' && opts.kernelMath !== 'exact') throw badInput(`--kernel-math must be ascend or exact, not '${opts.kernelMath}'`);
  const envGate = process.env.DS4_ASCEND_NO_HOST_FALLBACK;
  const forced = envGate !== undefined && envGate !== '' && envGate !== '0';
  if (forced && opts.allowHostFallback) throw badInput('--allow-host-fallback contradicts DS4_ASCEND_NO_HOST_FALLBACK=1 in the environment');
  const policy: Policy | undefined = opts.policy ? loadPolicy(opts.policy) : undefined;
  checkReportPaths(opts);

  const { devicePasses, judgeRun, referencePass, refineRegion } = await import('../../ascend/pipeline.ts');
  const { GENERATE_AFTER_PREFILL, refuseUnlandedFaults } = await import('../../ascend/orchestrator.ts');
  const { parseInjects } = await import('../../ascend/faults.ts');
  const inject = parseInjects(opts.inject, opts.backend);
  const run = await loadModelAndPrompt(opts);
  const generate = parseGenerate(opts.generate);
  if (generate && opts.devicePrefill) throw badInput(`--generate with --device-prefill: ${GENERATE_AFTER_PREFILL}`);
  await refuseUnlandedFaults({ model: run.model, cfg: run.cfg, tokens: run.tokens, lastLayer: run.lastLayer, inject, prefill: opts.devicePrefill, generate });
  parseFullSpecs(opts.full);
  // the positions judged: the prompt and every generated token but the last; the head at every generating step
  const T = run.tokens.length;
  const heads = generate ? Array.from({ length: generate }, (_, k) => T - 1 + k) : [T - 1];
  const plan = capturePlan(captureMode(opts.capture, run.cfg, run.lastLayer, T + Math.max(0, generate - 1), heads), run.cfg, opts.full);
  const manifest = newManifest(run, opts.backend, { disabledKernels: opts.disableKernel, inject: opts.inject, allowHostFallback: !!opts.allowHostFallback, teacher: opts.teacher, devicePrefill: !!opts.devicePrefill }, opts.kernelMath);
  manifest.noHostFallback = !opts.allowHostFallback;
  manifest.capture = plan.meta;
  return withRunDir({ out: opts.out, force: opts.force, manifest }, async (rd) => {
    const prog = progress('run');
    const weights = new ModelWeights(run.model, run.cfg);
    const device = {
      kernelMath: opts.kernelMath as 'ascend' | 'exact', inject, disabledKernels: opts.disableKernel,
      allowHostFallback: !!opts.allowHostFallback, teacher: opts.teacher, backend: opts.backend, prefill: !!opts.devicePrefill, generate: generate || undefined,
    };
    const passes = { version: VERSION, plan, onProgress: prog.tick };
    let judged: RunCase = run;
    let violation: Ds4DiffError | undefined;
    let result: ReferenceResult | undefined;
    if (generate) {
      // the device generates first; the reference and the teacher-forced pass then follow its tokens
      const free = await devicePasses(rd, run, device, new Map(), { ...passes, sides: ['device'] });
      violation = free.violation;
      if (!violation) {
        const tokens = free.tokens!;
        rd.manifest.generated = tokens.slice(T);
        rd.manifest.tokenPieces = tokenPieces(run.model, tokens);
        rd.save();
        judged = { ...run, tokens: tokens.slice(0, T + generate - 1), generated: generate - 1, headPositions: heads };
        const ref = await referencePass(rd, judged, { version: VERSION, weights, plan, onProgress: (m) => prog.tick(`reference ${m}`) });
        result = ref.result;
        if (opts.teacher) violation = (await devicePasses(rd, judged, device, ref.records, { ...passes, sides: ['device-teacher'] })).violation;
      }
    } else {
      const ref = await referencePass(rd, run, { version: VERSION, weights, plan, onProgress: (m) => prog.tick(`reference ${m}`) });
      result = ref.result;
      violation = (await devicePasses(rd, run, device, ref.records, passes)).violation;
      ref.records.clear();
    }
    const notes: string[] = [];
    if (!violation && plan.mode === 'stats') notes.push(...(await refineRegion(rd, judged, device, plan, { version: VERSION, weights, onProgress: prog.tick })).notes);
    prog.done();
    if (violation) {
      process.stderr.write(`ds4-diff: ${violation.message}\n`);
      process.stderr.write(`ds4-diff: run directory ${rd.dir} keeps the stages captured before the stop\n`);
      // judged and reported like any run (what was captured, the stop a host-fallback failure whatever a baseline accepts)
      rd.manifest.fallbackStop = violation.message;
    }
    const { verdict } = await judgeRun(rd, {
      title: (baseline) => `ds4-diff run: ${T} tokens${generate ? ` + ${generate} generated` : ''}, layers 0..${run.lastLayer}, ${opts.backend}/${opts.kernelMath}${baseline ? `, baseline ${baseline}` : ''}`,
      baseline: opts.baseline, policy, reports: opts, notes,
    });
    if (!opts.json) {
      if (result) process.stdout.write(`reference top-5${generate ? ' (last step)' : ''}: ${result.top.map((t) => `${t.id}:${t.logit.toFixed(3)}`).join(' ')}\n`);
      process.stdout.write(`run directory: ${rd.dir}\n`);
      if (verdict.exitCode === EXIT.regression) process.stdout.write(`which kernel: ds4-diff bisect ${rd.dir}\n`);
    }
    return rd.finish(verdict.exitCode);
  });
}

/** `--generate N`: how many tokens the device generates after the prompt (0 when not given). */
function parseGenerate(text: string | undefined): number {
  if (text === undefined) return 0;
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > MAX_GENERATE) throw badInput(`--generate: '${text}' is not a number of tokens (1..${MAX_GENERATE})`);
  return Number(text);
}

// every generated position is captured on every side: a bound on what one run may be asked to hold
const MAX_GENERATE = 4096;
