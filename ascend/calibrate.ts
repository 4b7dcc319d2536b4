// Calibration (issue 11): the tool measures its own power and its own false-alarm rate, with the same judge
// and the same bisect every command uses.
//   power        for every device kernel a clean pass launches, at the first layer of each layer kind and in
//                the head, plant a scale fault (×(1 + m)) and a bias fault (+ m × the RMS of the kernel's
//                output rows there) of decreasing relative magnitude m; record the smallest m the gate fails
//                (exit 1) and the smallest m bisect names that kernel alone for. Magnitudes are tried from
//                large to small and stop at the first the gate neither fails nor bisect names (an error
//                smaller than one already missed is assumed missed too). A miss is checked against a clean
//                pass: a fault that changed no capture at all (a scale on a row a norm follows) is
//                invisible, reported as such and not counted against the judge.
//   false alarms clean runs on prompts nobody chose (model/prompts.ts), all layers, in each kernel math: any
//                run that does not pass is a false alarm; the closest any own error came to its budget is the
//                judge's headroom.
import { makeJudge, verdictOf } from '../diff/gate.ts';
import { bisect } from '../diff/bisect.ts';
import { factsOf, type FactsMap } from '../diff/compare.ts';
import { rms, type Judge } from '../diff/judge.ts';
import { DEFAULT_SYSTEM, renderChat } from '../model/chat.ts';
import { isHashLayer, layerKind, type Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import type { GgufModel } from '../model/gguf.ts';
import { generatePrompts } from '../model/prompts.ts';
import { recordKey, type StageRecord } from '../model/stages.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { runReference } from '../reference/runner.ts';
import { ModelWeights } from '../reference/weights.ts';
import { deviceBounds, type KernelMath } from './budgets.ts';
import { Producers } from './producers.ts';
import { kernelFaults, parseInjects } from './faults.ts';
import { kernelCatalog } from './kernels.ts';
import { openDeviceSession, runDevice, type DeviceSession } from './orchestrator.ts';
import { judgeCase } from './pipeline.ts';
import { simProbe } from './probe.ts';

/** Relative fault magnitudes tried, large to small. */
export const MAGNITUDES = [1e-1, 1e-2, 1e-3, 1e-4];
/** The magnitude every launched kernel's faults must be detected and named at (issue 11's bar). */
export const REQUIRED_MAGNITUDE = 1e-2;
export const CALIBRATION_FAULTS = ['scale', 'bias'] as const;
export type CalibrationFault = (typeof CALIBRATION_FAULTS)[number];

export interface CalibrationCase {
  model: GgufModel;
  cfg: Ds4Config;
  tokens: number[];
  kernelMath: KernelMath;
  addonPath?: string;
}

export interface FaultTrial {
  magnitude: number;
  spec: string;
  /** the gate's exit code on the faulted run */
  gate: number;
  /** the kernel(s) bisect named, '+'-joined, or null */
  named: string | null;
  line: string;
  /** missed, and the fault changed no capture of the run: nothing a diff could see (e.g. a scale on a row a norm follows) */
  invisible?: boolean;
}

export interface KernelCalibration {
  kernel: string;
  layer: number;
  /** the layer's kind (raw, ratio4, ratio128, +hash for hash-routed layers) or 'head' */
  kind: string;
  fault: CalibrationFault;
  /** smallest magnitude the gate failed, null if none */
  detected: number | null;
  /** smallest magnitude bisect named this kernel alone for, null if none */
  named: number | null;
  /** the fault changed no capture at any magnitude tried: not a miss of the judge (calibrationPasses skips it) */
  invisible?: boolean;
  trials: FaultTrial[];
}

export interface CleanRun {
  prompt: string;
  tokens: number;
  kernelMath: KernelMath;
  exitCode: number;
  line: string;
  /** the largest own error of the run as a multiple of its budget, and where */
  closest?: { stage: string; ratio: number };
  kl?: number;
}

export interface Calibration {
  kernelMath: KernelMath;
  tokens: number[];
  magnitudes: number[];
  kernels: KernelCalibration[];
  clean: CleanRun[];
}

/** A layer's kind as calibrate reports it. */
export function kindOf(cfg: Ds4Config, layer: number): string {
  return layer === cfg.nLayer ? 'head' : `${layerKind(cfg, layer)}${isHashLayer(cfg, layer) ? '+hash' : ''}`;
}

/** The fault spec of magnitude m in `kernel` at `layer` (bias relative to `scale`, the RMS of its output rows there). */
export function faultSpec(kernel: string, fault: CalibrationFault, m: number, layer: number, scale: number): string {
  return fault === 'scale' ? `${kernel}:scale=${1 + m}@${layer}` : `${kernel}:bias=${(m * scale).toPrecision(4)}@${layer}`;
}

interface Launched {
  /** layer → kernels a clean pass launched to produce that layer's stages (the head at n_layer) */
  byLayer: Map<number, Set<string>>;
  /** stage → kernels (the run's producers, for the device bounds) */
  producers: Record<string, string[]>;
}

async function launched(c: CalibrationCase, session: DeviceSession): Promise<Launched> {
  const byLayer = new Map<number, Set<string>>();
  const byStage = new Producers();
  await runDevice({
    session, model: c.model, cfg: c.cfg, tokens: c.tokens, kernelMath: c.kernelMath, addonPath: c.addonPath, tap: () => undefined,
    producers: (stage, layer, pos, ks) => {
      for (const k of ks) (byLayer.get(layer) ?? byLayer.set(layer, new Set()).get(layer)!).add(k);
      byStage.note(stage, layer, pos, ks);
    },
  });
  return { byLayer, producers: byStage.table() };
}

/**
 * The (kernel, layer) pairs calibrated: at the first layer of each kind and in the head, every kernel a clean
 * pass launched there that takes both a scale and a bias fault; `kernels` and `layers` narrow it.
 */
export function calibrationTargets(cfg: Ds4Config, l: Launched, addonPath: string | undefined, only: { kernels?: string[]; layers?: number[] } = {}): Array<{ kernel: string; layer: number; kind: string }> {
  const catalog = kernelCatalog(addonPath);
  const firstOfKind = new Map<string, number>();
  for (let il = 0; il <= cfg.nLayer; il++) if (!firstOfKind.has(kindOf(cfg, il))) firstOfKind.set(kindOf(cfg, il), il);
  const layers = only.layers ?? [...firstOfKind.values()];
  const out: Array<{ kernel: string; layer: number; kind: string }> = [];
  for (const layer of layers) {
    for (const kernel of [...(l.byLayer.get(layer) ?? [])].sort()) {
      if (only.kernels && !only.kernels.includes(kernel)) continue;
      const takes = kernelFaults(catalog.get(kernel));
      if (CALIBRATION_FAULTS.every((f) => takes.includes(f))) out.push({ kernel, layer, kind: kindOf(cfg, layer) });
    }
  }
  // a kernel asked for that nothing here can measure would be calibrated by saying nothing about it
  for (const k of only.kernels ?? []) {
    if (!out.some((t) => t.kernel === k)) throw badInput(`--kernel ${k}: a clean pass of this case does not launch it at layers ${layers.join(',')} with a scale and a bias fault to plant (see ds4-diff kernels); nothing to calibrate`);
  }
  return out;
}

/** The reference and its facts through layers 0..lastLayer and the head, computed once per last layer. */
function referenceCache(c: CalibrationCase, weights: ModelWeights): (lastLayer: number) => Promise<{ reference: StageRecord[]; facts: FactsMap }> {
  const cache = new Map<number, Promise<{ reference: StageRecord[]; facts: FactsMap }>>();
  return (lastLayer) => {
    let p = cache.get(lastLayer);
    if (!p) {
      p = (async () => {
        const reference: StageRecord[] = [], noise: StageRecord[] = [], ties: StageRecord[] = [];
        await runReference({
          model: c.model, cfg: c.cfg, weights, tokens: c.tokens, lastLayer, tap: (r) => reference.push(r),
          facts: { noise: (r) => noise.push(r), ties: (r) => ties.push(r), approx: c.kernelMath === 'ascend' },
        });
        return { reference, facts: await factsOf(noise, ties) };
      })();
      cache.set(lastLayer, p);
    }
    return p;
  };
}

/** Power: each target kernel × fault, magnitudes from large to small. */
export async function calibrateKernels(
  c: CalibrationCase, o: { kernels?: string[]; layers?: number[]; magnitudes?: number[]; onTrial?: (k: KernelCalibration, t: FaultTrial) => void } = {},
): Promise<KernelCalibration[]> {
  const weights = new ModelWeights(c.model, c.cfg);
  const session = openDeviceSession(c.model, 'sim', c.addonPath);
  try {
    const l = await launched(c, session);
    const judge: Judge = makeJudge({ deviceBound: deviceBounds(c.kernelMath, l.producers) });
    const refAt = referenceCache(c, weights);
    const catalog = kernelCatalog(c.addonPath);
    // the device's captures free-running through layers 0..lastLayer, with the faults given
    const capture = async (lastLayer: number, inject: string[]) => {
      const out = new Map<string, Float32Array | Int32Array>();
      await runDevice({ session, model: c.model, cfg: c.cfg, tokens: c.tokens, lastLayer, kernelMath: c.kernelMath, addonPath: c.addonPath, inject: parseInjects(inject, 'sim', c.addonPath), tap: (r) => out.set(recordKey(r), r.values) });
      return out;
    };
    const clean = new Map<number, Map<string, Float32Array | Int32Array>>();
    const changesNothing = async (lastLayer: number, spec: string) => {
      if (!clean.has(lastLayer)) clean.set(lastLayer, await capture(lastLayer, []));
      const base = clean.get(lastLayer)!, faulted = await capture(lastLayer, [spec]);
      return faulted.size === base.size && [...faulted].every(([k, v]) => { const b = base.get(k); return !!b && b.length === v.length && v.every((x, i) => Object.is(x, b[i])); });
    };
    const out: KernelCalibration[] = [];
    for (const t of calibrationTargets(c.cfg, l, c.addonPath, o)) {
      // the head runs on layer 0's state: a head fault needs no more layers
      const lastLayer = t.layer === c.cfg.nLayer ? 0 : t.layer;
      const { reference, facts } = await refAt(lastLayer);
      const outputs = reference.filter((r) => r.layer === t.layer && r.dtype === 'f32' && catalog.get(t.kernel).stages.includes(r.stage));
      const scale = outputs.length ? outputs.reduce((a, r) => a + rms(r.values), 0) / outputs.length : 1;
      for (const fault of CALIBRATION_FAULTS) {
        const row: KernelCalibration = { ...t, fault, detected: null, named: null, trials: [] };
        for (const m of o.magnitudes ?? MAGNITUDES) {
          const spec = faultSpec(t.kernel, fault, m, t.layer, scale);
          const probe = simProbe({ model: c.model, cfg: c.cfg, tokens: c.tokens, lastLayer, reference, kernelMath: c.kernelMath, inject: parseInjects([spec], 'sim', c.addonPath), addonPath: c.addonPath, session });
          const result = await bisect(reference, facts, probe, () => judge, { maxTrials: 16 });
          probe.close();
          const gate = verdictOf(result.comparison).exitCode;
          const named = result.verdict.kernel;
          const trial: FaultTrial = { magnitude: m, spec, gate, named, line: result.verdict.line };
          row.trials.push(trial);
          o.onTrial?.(row, trial);
          if (gate === 1) row.detected = m;
          if (named === t.kernel) row.named = m;
          if (gate !== 1 && named !== t.kernel) {
            trial.invisible = await changesNothing(lastLayer, spec);
            if (trial.invisible && row.detected === null && row.named === null) row.invisible = true;
            break;
          }
        }
        out.push(row);
      }
    }
    return out;
  } finally {
    session.close();
  }
}

/** False alarms: `n` generated prompts (from `seed`) through all layers, in each kernel math, unfaulted. */
export async function cleanRuns(
  c: Omit<CalibrationCase, 'tokens' | 'kernelMath'>, o: { n: number; seed: number; maths: KernelMath[]; onRun?: (r: CleanRun) => void },
): Promise<CleanRun[]> {
  const tok = Tokenizer.fromGguf(c.model);
  const weights = new ModelWeights(c.model, c.cfg);
  const session = openDeviceSession(c.model, 'sim', c.addonPath);
  const out: CleanRun[] = [];
  try {
    for (const prompt of generatePrompts(o.n, o.seed)) {
      const tokens = renderChat(tok, prompt, { system: DEFAULT_SYSTEM }).ids;
      for (const kernelMath of o.maths) {
        const { comparison, verdict } = await judgeCase(
          { modelPath: '', model: c.model, cfg: c.cfg, tokens, lastLayer: c.cfg.nLayer - 1 },
          { kernelMath, inject: [], disabledKernels: [], allowHostFallback: false, teacher: true, backend: 'sim' },
          { weights, session },
        );
        const worst = comparison.stages.filter((s) => s.ownRatio !== undefined).sort((x, y) => y.ownRatio! - x.ownRatio!)[0];
        const logits = comparison.rows.find((r) => r.free?.role === 'end-to-end')?.free?.metrics;
        const run: CleanRun = {
          prompt, tokens: tokens.length, kernelMath, exitCode: verdict.exitCode, line: verdict.line,
          closest: worst && { stage: worst.stage, ratio: worst.ownRatio! },
          kl: logits?.kind === 'f32' ? logits.logits?.kl : undefined,
        };
        out.push(run);
        o.onRun?.(run);
      }
    }
    return out;
  } finally {
    session.close();
  }
}

/** Does a calibration meet the bar: every fault detected and named at REQUIRED_MAGNITUDE or below, no false alarm? */
export function calibrationPasses(c: Calibration): boolean {
  const ok = (m: number | null) => m !== null && m <= REQUIRED_MAGNITUDE;
  return c.kernels.every((k) => k.invisible || (ok(k.detected) && ok(k.named))) && c.clean.every((r) => r.exitCode === 0);
}
