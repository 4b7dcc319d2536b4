// The run pipeline, as a library: a case → its passes → the run directory → the judgement. `run` and
// `engine` call these steps instead of wiring passes by hand:
//   referencePass  the reference on the case's tokens with the facts the judge needs (its rounding noise and
//                  decisions, reference/facts.ts): sides `reference`, `reference-noise`, `reference-ties`;
//   devicePasses   the simulated device free-running (`device`) and teacher-forced (`device-teacher`: its
//                  own error), with the no-host-fallback gate and the ledger;
//   judgeRun       the verdict (diff/gate.ts) and the reports, written into the run directory before its
//                  manifest says complete.
// A statistics capture (diff/plan.ts) adds refineRegion between the passes and the judgement: the run judged
// as captured locates the first divergence, and a second pass over the prefix of the run that computes it
// re-captures the region around it in full on every side.
import type { FallbackEntry } from '../diff/manifest.ts';
import { Cancelled } from '../diff/cancel.ts';
import { compare, compareRun, factsOf, type Comparison } from '../diff/compare.ts';
import { replaceRows } from '../diff/dump.ts';
import { inRegion, regionAround, regionText, type CapturePlan, type Region } from '../diff/plan.ts';
import { gateRunDir, makeJudge, verdictOf, type JudgeOptions, type RunProblems, type RunVerdict, type Verdict } from '../diff/gate.ts';
import type { Policy } from '../diff/policy.ts';
import type { RunDir } from '../diff/rundir.ts';
import { openCapture, type CaptureSink } from '../diff/sink.ts';
import type { Ds4Config } from '../model/config.ts';
import { Ds4DiffError, EXIT } from '../model/errors.ts';
import type { GgufModel } from '../model/gguf.ts';
import { join } from 'node:path';
import { recordKey, stageKey, type StageRecord, type Tap } from '../model/stages.ts';
import type { CaptureFilter } from '../reference/capture.ts';
import { runReference, type ReferenceResult } from '../reference/runner.ts';
import { ModelWeights } from '../reference/weights.ts';
import { emitRunReports, type ReportOutputs } from '../reports/write.ts';
import { deviceBounds, runDeviceBounds, type KernelMath } from './budgets.ts';
import type { Injection } from './faults.ts';
import type { DeviceSession } from './orchestrator.ts';

/** What a run is about: the model, the tokens, the layers. */
export interface RunCase {
  modelPath: string;
  model: GgufModel;
  cfg: Ds4Config;
  tokens: number[];
  lastLayer: number;
  /** head positions (default: the last token) */
  headPositions?: number[];
}

const meta = (c: RunCase, version: string, backend: string, extra: Record<string, unknown> = {}) => ({
  modelFingerprint: c.model.fingerprint,
  promptTokens: c.tokens,
  producer: { backend, version, ...extra },
});

/**
 * The reference pass into the run directory: `reference` and its facts (`reference-noise`, `reference-ties`).
 * `keep` (default: everything) selects the rows captured, e.g. where an engine dumped.
 */
export async function referencePass(rd: RunDir, c: RunCase, o: { version: string; weights?: ModelWeights; filter?: CaptureFilter; keep?: (r: StageRecord) => boolean; plan?: CapturePlan; onProgress?: (m: string) => void }): Promise<{ result: ReferenceResult; records: Map<string, StageRecord> }> {
  const sinks = {
    reference: await openCapture(rd.dir, 'reference', meta(c, o.version, 'reference', { precision: 'ds4' }), o.plan),
    noise: await openCapture(rd.dir, 'reference-noise', meta(c, o.version, 'reference', { facts: 'noise' }), o.plan),
    ties: await openCapture(rd.dir, 'reference-ties', meta(c, o.version, 'reference', { facts: 'ties' }), o.plan),
  };
  const records = new Map<string, StageRecord>();
  const keep = o.keep ?? (() => true);
  const kept = (sink: CaptureSink, into?: Map<string, StageRecord>): Tap => (r) => {
    if (!keep(r)) return;
    sink.tap(r);
    into?.set(recordKey(r), r);
  };
  const result = await runReference({
    model: c.model, cfg: c.cfg, weights: o.weights ?? new ModelWeights(c.model, c.cfg), tokens: c.tokens, lastLayer: c.lastLayer,
    headPositions: c.headPositions, filter: o.filter,
    tap: kept(sinks.reference, records),
    facts: { noise: kept(sinks.noise), ties: kept(sinks.ties) },
    onProgress: o.onProgress,
  });
  for (const [side, sink] of [['reference', sinks.reference], ['reference-noise', sinks.noise], ['reference-ties', sinks.ties]] as const) {
    await sink.close();
    rd.manifest.files[side] = sink.file;
  }
  rd.save();
  return { result, records };
}

export interface DeviceCase {
  kernelMath: KernelMath;
  inject: Injection[];
  disabledKernels: string[];
  allowHostFallback: boolean;
  /** also the teacher-forced pass (the own error of every stage) */
  teacher: boolean;
  backend: string;
  /** the prompt as ds4-ascend's batched prefill (runDevice `prefill`) */
  prefill?: boolean;
}

/** The kernels device passes launched for each stage (what a stage's device bound sums over). */
class Producers {
  private readonly at = new Map<string, Set<string>>();
  note = (stage: string, _layer: number, _pos: number, kernels: readonly string[]): void => {
    const s = this.at.get(stage) ?? new Set<string>();
    for (const k of kernels) s.add(k);
    this.at.set(stage, s);
  };
  table(): Record<string, string[]> {
    return Object.fromEntries([...this.at].map(([s, ks]) => [s, [...ks].sort()]));
  }
}

/**
 * The device passes into the run directory: `device` (free-running), then `device-teacher` (each stage fed
 * the reference's inputs). A primitive the gate refuses stops the pass with exit 2; what was captured is kept.
 */
export async function devicePasses(rd: RunDir, c: RunCase, d: DeviceCase, reference: Map<string, StageRecord>, o: { version: string; plan?: CapturePlan; onProgress?: (m: string) => void }): Promise<{ violation?: Ds4DiffError }> {
  const { openDeviceSession, runDevice } = await import('./orchestrator.ts');
  const passes: Array<{ side: string; teacher: boolean }> = [{ side: 'device', teacher: false }];
  if (d.teacher) passes.push({ side: 'device-teacher', teacher: true });
  const ledger = new Map<string, FallbackEntry>();
  const producers = new Producers();
  // one device for both passes: the second reuses the weights the first uploaded
  const session = openDeviceSession(c.model, d.backend);
  try {
    for (const pass of passes) {
      const sink = await openCapture(rd.dir, pass.side, meta(c, o.version, d.backend, { kernelMath: d.kernelMath, options: { teacherForced: pass.teacher } }), o.plan);
      try {
        const dev = await runDevice({
          session, model: c.model, cfg: c.cfg, tokens: c.tokens, lastLayer: c.lastLayer,
          kernelMath: d.kernelMath, allowHostFallback: d.allowHostFallback, disabledKernels: d.disabledKernels, inject: d.inject, prefill: d.prefill,
          tap: sink.tap, producers: producers.note,
          teacher: pass.teacher ? (stage, layer, pos) => reference.get(stageKey(stage, layer, pos))?.values : undefined,
          onProgress: (m) => o.onProgress?.(`${pass.side} ${m}`),
        });
        for (const e of dev.ledger) if (!ledger.has(e.primitive) || pass.side === 'device') ledger.set(e.primitive, { ...e });
      } catch (err) {
        // a signal: the sink is already aborted (no partial dump), the run directory stays incomplete
        if (err instanceof Cancelled) throw err;
        // keep what was captured up to the failure: the dump is closed (valid, partial), never dropped
        await sink.close();
        rd.manifest.files[pass.side] = sink.file;
        if (err instanceof Ds4DiffError && err.exitCode === EXIT.hostFallback) {
          const m = /host fallback disabled: (\S+)(?: \(layer (\d+), pos (\d+), stage (\S+)\))?/.exec(err.message);
          rd.manifest.fallbackLedger = [{ primitive: m?.[1] ?? 'unknown', calls: 0, bytesToHost: 0, bytesToDevice: 0, reason: 'host fallback disabled (no-host-fallback gate)', layer: m?.[2] ? Number(m[2]) : undefined, pos: m?.[3] ? Number(m[3]) : undefined, stage: m?.[4] }];
          rd.save();
          return { violation: err };
        }
        throw err;
      }
      await sink.close();
      rd.manifest.files[pass.side] = sink.file;
    }
  } finally {
    session.close();
  }
  rd.manifest.fallbackLedger = [...ledger.values()];
  rd.manifest.producers = producers.table();
  rd.save();
  return {};
}

/**
 * A statistics capture's second pass: the run as captured is judged to find the first row that diverged (the first
 * own failure, else the first failing row, else the first free-running row past its own budget), and the region
 * around it (diff/plan.ts regionAround) is re-captured in full on every side — the reference with its facts, the
 * device free-running and teacher-forced — by re-running only the tokens and layers that compute it (rows at a
 * position depend on nothing later), then written into the dumps in place of their statistics. Returns the region,
 * or nothing when no row diverged. A re-captured row whose values do not hash to the first pass's statistics is
 * noted (a producer that is not deterministic).
 */
export async function refineRegion(rd: RunDir, c: RunCase, d: DeviceCase, plan: CapturePlan, o: { version: string; weights?: ModelWeights; onProgress?: (m: string) => void }): Promise<{ region?: Region; notes: string[] }> {
  const located = await compareRun(rd.dir, makeJudge({ deviceBound: runDeviceBounds(rd.manifest) }));
  const row = located.firstOwnFailure ?? located.firstFailure ?? located.firstDivergence;
  if (!row) return { notes: [] };
  const region = regionAround(row, c.cfg, c.lastLayer);
  const inside = (r: { stage: string; layer: number; pos: number }) => inRegion(region, c.cfg, r.stage, r.layer, r.pos);
  const withHead = region.layers.includes(c.cfg.nLayer);
  // the prefix that computes the region: its tokens, its layers (all of them when the head is in it)
  const prefix: RunCase = {
    ...c,
    tokens: c.tokens.slice(0, region.pos[1] + 1),
    lastLayer: withHead ? c.lastLayer : Math.max(...region.layers),
    headPositions: withHead ? (c.headPositions ?? [c.tokens.length - 1]).filter((p) => p <= region.pos[1]) : undefined,
  };
  if (prefix.headPositions?.length === 0) prefix.headPositions = undefined;
  const sides: Record<string, Map<string, StageRecord>> = { reference: new Map(), 'reference-noise': new Map(), 'reference-ties': new Map(), device: new Map(), 'device-teacher': new Map() };
  const into = (side: string): Tap => (r) => {
    if (inside(r)) sides[side].set(recordKey(r), r);
  };
  const all = new Map<string, StageRecord>();
  await runReference({
    model: prefix.model, cfg: prefix.cfg, weights: o.weights ?? new ModelWeights(prefix.model, prefix.cfg), tokens: prefix.tokens, lastLayer: prefix.lastLayer, headPositions: prefix.headPositions,
    tap: (r) => (all.set(recordKey(r), r), into('reference')(r)),
    facts: { noise: into('reference-noise'), ties: into('reference-ties') },
    onProgress: (m) => o.onProgress?.(`region reference ${m}`),
  });
  const { runDevice } = await import('./orchestrator.ts');
  for (const teacher of d.teacher ? [false, true] : [false]) {
    const side = teacher ? 'device-teacher' : 'device';
    await runDevice({
      model: prefix.model, cfg: prefix.cfg, tokens: prefix.tokens, lastLayer: prefix.lastLayer, kernelMath: d.kernelMath, allowHostFallback: d.allowHostFallback,
      disabledKernels: d.disabledKernels, inject: d.inject, prefill: d.prefill, backend: d.backend, filter: (s, l, p) => inside({ stage: s, layer: l, pos: p }), tap: into(side),
      teacher: teacher ? (s, l, p) => all.get(stageKey(s, l, p))?.values : undefined,
      onProgress: (m) => o.onProgress?.(`region ${side} ${m}`),
    });
  }
  const notes: string[] = [];
  const capture = { mode: plan.mode, full: [...(plan.meta.full ?? []), regionText(region)] };
  for (const [side, rows] of Object.entries(sides)) {
    const file = rd.manifest.files[side];
    if (!file) continue;
    const { changed } = await replaceRows(join(rd.dir, file), rows, capture);
    if (changed.length) notes.push(`${side}: ${changed.length} rows re-captured in full differ from the first pass's statistics (first ${changed[0]}): the producer is not deterministic`);
  }
  rd.manifest.capture = { ...capture, region };
  rd.save();
  return { region, notes };
}

/** The verdict of the run directory and its reports, written before the manifest says complete. */
export async function judgeRun(rd: RunDir, o: { title: (baseline?: string) => string; baseline?: string | false; policy?: Policy; allowHostFallback?: boolean; problems?: Omit<RunProblems, 'fallbacks'>; notes?: string[]; reports: ReportOutputs }): Promise<RunVerdict> {
  rd.save();
  const v = await gateRunDir(rd.dir, { deviceBound: runDeviceBounds(rd.manifest), baseline: o.baseline || undefined, shipped: o.baseline !== false, policy: o.policy, allowHostFallback: o.allowHostFallback, problems: o.problems });
  v.comparison.notes.unshift(...(o.notes ?? []));
  emitRunReports(rd.dir, { title: o.title(v.baseline), comparison: v.comparison, verdict: v.verdict, sources: v.judge.sources, manifest: rd.manifest }, o.reports);
  return v;
}

/** A case judged in memory, without a run directory (calibrate's many runs): the same passes, the same judge. */
export async function judgeCase(c: RunCase, d: DeviceCase, o: { judge?: Omit<JudgeOptions, 'deviceBound'>; weights?: ModelWeights; session?: DeviceSession }): Promise<{ comparison: Comparison; verdict: Verdict }> {
  const { runDevice } = await import('./orchestrator.ts');
  const reference: StageRecord[] = [], noise: StageRecord[] = [], ties: StageRecord[] = [];
  await runReference({
    model: c.model, cfg: c.cfg, weights: o.weights, tokens: c.tokens, lastLayer: c.lastLayer, headPositions: c.headPositions,
    tap: (r) => reference.push(r), facts: { noise: (r) => noise.push(r), ties: (r) => ties.push(r) },
  });
  const byKey = new Map(reference.map((r) => [recordKey(r), r]));
  const producers = new Producers();
  const pass = async (teacher: boolean): Promise<StageRecord[]> => {
    const out: StageRecord[] = [];
    await runDevice({
      session: o.session, model: c.model, cfg: c.cfg, tokens: c.tokens, lastLayer: c.lastLayer, kernelMath: d.kernelMath, inject: d.inject, prefill: d.prefill,
      disabledKernels: d.disabledKernels, allowHostFallback: d.allowHostFallback, tap: (r) => out.push(r), producers: producers.note,
      teacher: teacher ? (s, l, p) => byKey.get(stageKey(s, l, p))?.values : undefined,
    });
    return out;
  };
  const free = await pass(false);
  const own = d.teacher ? await pass(true) : undefined;
  const judge = makeJudge({ ...o.judge, deviceBound: deviceBounds(d.kernelMath, producers.table()) });
  const comparison = await compare({ reference, free, own, facts: await factsOf(noise, ties), labels: { a: 'reference', b: 'device' } }, judge);
  return { comparison, verdict: verdictOf(comparison) };
}
