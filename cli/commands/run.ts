// `ds4-diff run -p TEXT`: the main job. Runs the reference and the device path on the same tokens,
// captures both — the device in two modes in the same run: free-running (it consumes its own outputs:
// accumulated error) and teacher-forced (each stage consumes the reference's inputs: its own error) —
// plus the reference at f64 (each stage's quantization noise floor), writes the run directory, prints
// the stage table and gates it (against --baseline, or the shipped baseline whose case matches).
import type { Command } from 'commander';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { gateRunDir } from '../../diff/gate.ts';
import { writeManifest, type FallbackEntry } from '../../diff/manifest.ts';
import { loadPolicy, type Policy } from '../../diff/policy.ts';
import type { StageRecord } from '../../diff/record.ts';
import { openCapture, type CaptureSink } from '../../diff/sink.ts';
import { Ds4DiffError, EXIT, badInput } from '../../model/errors.ts';
import { runReference } from '../../reference/runner.ts';
import { ModelWeights } from '../../reference/weights.ts';
import { emitRunReports, type ReportOutputs } from '../../reports/write.ts';
import { addModelPromptOptions, addRunDirOptions, collectList, loadModelAndPrompt, newManifest, progress, type ModelPromptOptions } from '../common.ts';
import { VERSION } from '../version.ts';

interface RunOptions extends ModelPromptOptions, ReportOutputs {
  backend: string;
  kernelMath: string;
  allowHostFallback?: boolean;
  disableKernel: string[];
  inject: string[];
  out?: string;
  baseline?: string;
  policy?: string;
  noiseFloor: boolean;
  teacher: boolean;
  devicePrefill?: boolean;
}

export function register(program: Command): void {
  addRunDirOptions(addModelPromptOptions(program.command('run').description('run the reference and the device path, capture every stage of both, compare and gate')))
    .option('--backend <name>', 'device backend: sim (the simulated Ascend device) or ascend (needs the CANN runtime)', 'sim')
    .option('--kernel-math <m>', 'ascend (the AscendC kernels\' approximations) or exact', 'ascend')
    .option('--allow-host-fallback', 'let primitives without a device kernel run on the host (recorded in the manifest\'s fallback ledger)')
    .option('--disable-kernel <names>', 'remove device kernels, as an unported primitive would be missing (repeatable, comma-separated)', collectList, [])
    .option('--inject <spec>', 'plant a fault in a simulator kernel: KERNEL[.BUFFER]:FAULT[=ARG][@LAYER|@A:B] (repeatable; the head is layer n_layer; faults: bias=X scale=X nan=I pairs-halves transpose-comb expert-off-by-one stale-buffer round-half-away coarse-exp emit-pos; `ds4-diff kernels` lists which a kernel takes)', (v: string, prev: string[]) => [...prev, v], [])
    .option('--device-prefill', 'run the prompt on the device as ds4-ascend\'s batched prefill (layer by layer, its prefill kernels) instead of token by token')
    .option('--no-noise-floor', 'skip the f64 reference (the per-stage quantization noise floor)')
    .option('--no-teacher', 'skip the teacher-forced device pass (no own-vs-inherited split)')
    .addHelpText('after', [
      '',
      'Exit codes: 0 pass, 1 tolerance regression, 2 host-fallback violation, 3 bad input, 125 cannot evaluate.',
      'The no-host-fallback gate is on unless --allow-host-fallback is given (DS4_ASCEND_NO_HOST_FALLBACK=1 forces it on).',
      '',
      'Examples:',
      '  ds4-diff run --layer 0 -p Hello',
      '  ds4-diff run --layers all -p Hello --kernel-math exact',
      '  ds4-diff run --layer 0 -p Hello --disable-kernel router_select --allow-host-fallback',
      '  ds4-diff run --layers all -p Hello --device-prefill',
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

  const { openDeviceSession, refuseUnlandedFaults, runDevice } = await import('../../ascend/orchestrator.ts');
  const { parseInjects } = await import('../../ascend/faults.ts');
  const inject = parseInjects(opts.inject, opts.backend);
  const run = await loadModelAndPrompt(opts);
  refuseUnlandedFaults({ model: run.model, cfg: run.cfg, tokens: run.tokens, lastLayer: run.lastLayer, inject, prefill: opts.devicePrefill });
  const dir = resolve(opts.out ?? join('runs', new Date().toISOString().replace(/[:.]/g, '-')));
  mkdirSync(dir, { recursive: true });
  const manifest = newManifest(run, opts.backend, { disabledKernels: opts.disableKernel, inject: opts.inject, allowHostFallback: !!opts.allowHostFallback, teacher: opts.teacher, noiseFloor: opts.noiseFloor, devicePrefill: !!opts.devicePrefill }, opts.kernelMath);
  manifest.noHostFallback = !opts.allowHostFallback;
  writeManifest(dir, manifest);
  const meta = (backend: string, extra: Record<string, unknown> = {}) => ({
    modelFingerprint: run.model.fingerprint,
    promptTokens: run.tokens,
    producer: { backend, version: VERSION, ...extra },
  });
  const prog = progress('run');
  const weights = new ModelWeights(run.model, run.cfg);

  // 1. reference (kept in memory too: the teacher-forced pass feeds it to the device stage by stage)
  const refSink = await openCapture(dir, 'reference', meta('reference', { precision: 'ds4' }));
  const refByKey = new Map<string, StageRecord>();
  const result = await runReference({
    model: run.model, cfg: run.cfg, weights, tokens: run.tokens, lastLayer: run.lastLayer,
    onProgress: (m) => prog.tick(`reference ${m}`),
    tap: (rec) => {
      refSink.tap(rec);
      if (opts.teacher) refByKey.set(`${rec.stage}/${rec.layer}/${rec.pos}`, rec);
    },
  });
  await refSink.close();
  manifest.files.reference = refSink.file;

  // 2. the reference at f64: its distance to the ds4-precision reference is each stage's noise floor
  if (opts.noiseFloor) {
    const f64 = await openCapture(dir, 'reference-f64', meta('reference', { precision: 'f64' }));
    await runReference({ model: run.model, cfg: run.cfg, weights, tokens: run.tokens, lastLayer: run.lastLayer, precision: 'f64', tap: f64.tap, onProgress: (m) => prog.tick(`reference f64 ${m}`) });
    await f64.close();
    manifest.files['reference-f64'] = f64.file;
  }
  writeManifest(dir, manifest);

  // 3. the device: free-running, then teacher-forced
  const passes: Array<{ side: string; teacher: boolean }> = [{ side: 'device', teacher: false }];
  if (opts.teacher) passes.push({ side: 'device-teacher', teacher: true });
  const ledger = new Map<string, FallbackEntry>();
  let violation: Ds4DiffError | undefined;
  // one device for both passes: the second reuses the weights the first uploaded
  const session = openDeviceSession(run.model, opts.backend);
  try {
    for (const pass of passes) {
      const sink: CaptureSink = await openCapture(dir, pass.side, meta(opts.backend, { kernelMath: opts.kernelMath, options: { teacherForced: pass.teacher } }));
      try {
        const dev = await runDevice({
          session, model: run.model, cfg: run.cfg, tokens: run.tokens, lastLayer: run.lastLayer,
          kernelMath: opts.kernelMath as 'ascend' | 'exact',
          prefill: opts.devicePrefill,
          allowHostFallback: !!opts.allowHostFallback,
          disabledKernels: opts.disableKernel,
          inject,
          tap: sink.tap,
          teacher: pass.teacher ? (stage: string, layer: number, pos: number) => refByKey.get(`${stage}/${layer}/${pos}`)?.values : undefined,
          onProgress: (m: string) => prog.tick(`${pass.side} ${m}`),
        });
        for (const e of dev.ledger) {
          const prev = ledger.get(e.primitive);
          if (!prev || pass.side === 'device') ledger.set(e.primitive, { ...e });
        }
      } catch (err) {
        // keep what was captured up to the failure: the dump is closed (valid, partial), never dropped
        await sink.close();
        manifest.files[pass.side] = sink.file;
        if (err instanceof Ds4DiffError && err.exitCode === EXIT.hostFallback) {
          violation = err;
          const m = /host fallback disabled: (\S+)(?: \(layer (\d+), pos (\d+), stage (\S+)\))?/.exec(err.message);
          manifest.fallbackLedger = [{ primitive: m?.[1] ?? 'unknown', calls: 0, bytesToHost: 0, bytesToDevice: 0, reason: 'host fallback disabled (no-host-fallback gate)', layer: m?.[2] ? Number(m[2]) : undefined, pos: m?.[3] ? Number(m[3]) : undefined, stage: m?.[4] }];
          manifest.complete = true;
          manifest.exitCode = EXIT.hostFallback;
          writeManifest(dir, manifest);
          break;
        }
        manifest.exitCode = err instanceof Ds4DiffError ? err.exitCode : EXIT.cannotEvaluate;
        writeManifest(dir, manifest);
        throw err;
      }
      await sink.close();
      manifest.files[pass.side] = sink.file;
    }
  } finally {
    session.close();
  }
  prog.done();
  if (violation) {
    process.stderr.write(`ds4-diff: ${violation.message}\n`);
    process.stderr.write(`ds4-diff: run directory ${dir} keeps the reference and the device stages captured before the stop\n`);
    return EXIT.hostFallback;
  }
  manifest.fallbackLedger = [...ledger.values()];
  manifest.complete = true;
  writeManifest(dir, manifest);

  // 4. compare and gate
  const { comparison, gate: g, exitCode: exit, baseline } = await gateRunDir(dir, manifest, { baseline: opts.baseline, policy, allowHostFallback: opts.allowHostFallback });
  const title = `ds4-diff run: ${run.tokens.length} tokens, layers 0..${run.lastLayer}, ${opts.backend}/${opts.kernelMath}${baseline ? `, baseline ${baseline}` : ''}`;
  emitRunReports(dir, { title, comparison, gate: g }, opts);
  if (!opts.json) {
    const top = result.top.map((t) => `${t.id}:${t.logit.toFixed(3)}`).join(' ');
    process.stdout.write(`reference top-5: ${top}\nrun directory: ${dir}\n`);
    if (exit === EXIT.regression) process.stdout.write(`which kernel: ds4-diff bisect ${dir}\n`);
  }
  manifest.exitCode = exit;
  writeManifest(dir, manifest);
  return exit;
}
