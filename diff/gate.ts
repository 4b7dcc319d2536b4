// The CI gate: a run directory against a baseline. Exit codes (so `git bisect run ds4-diff gate ...`
// works): 0 pass, 1 tolerance regression, 2 host-fallback violation, 3 bad input (thrown), 125 cannot
// evaluate. When both a fallback violation and a regression occur, 2 wins: a run that silently computed
// on the host says nothing about the device kernels.
//
// Tolerances: each baseline entry (stage, layer) allows ≤ growth.factor × its recorded maxAbs / NMSE /
// (1 - cosine), within the floor and cap; i32 stages recorded exact must stay exact; a logits top-1 flip
// fails unless it is a near tie; a NaN/Inf where the other side is finite always fails; an entry the run
// no longer produces fails. Rows the baseline does not list are only held to `--policy` rules if given.
import { Ds4DiffError, EXIT, badInput } from '../model/errors.ts';
import { allowedFor, baselinePolicy, caseDifferences, entryCovers, findShippedBaseline, loadBaseline, type Baseline, type BaselineEntry } from './baseline.ts';
import { compareRun, summarize, type CompareRow, type Comparison } from './compare.ts';
import { readManifest, type RunManifest } from './manifest.ts';
import { EMPTY_POLICY, thresholdsFor, checkThresholds, worstMetric, type Policy } from './policy.ts';

export interface BaselineCheck {
  stage: string;
  layer: number;
  pos?: number;
  recordedMaxAbs?: number;
  allowedMaxAbs?: number;
  measuredMaxAbs?: number;
  /** measured maxAbs / the reference's noise floor for this stage */
  noiseRatio?: number;
  pass: boolean;
  note?: string;
}

export interface GateResult {
  exitCode: number;
  verdict: 'pass' | 'regression' | 'host-fallback';
  reasons: string[];
  warnings: string[];
  comparison: Comparison;
  checks: BaselineCheck[];
  fallbackViolations: string[];
  baseline: string;
  runDir: string;
}

export interface GateOptions {
  /** extra policy rules (registry defaults included) for rows the baseline does not list */
  policy?: Policy;
  /** "today" for allowance expiry (tests) */
  now?: Date;
}

function fallbackViolations(b: Baseline, m: RunManifest, now: Date, warnings: string[]): string[] {
  const v: string[] = [];
  const today = now.getTime();
  const allowed = new Map(b.fallbacks.map((f) => [f.primitive, f]));
  const used = new Set<string>();
  for (const f of m.fallbackLedger) {
    used.add(f.primitive);
    const a = allowed.get(f.primitive);
    const where = f.stage !== undefined ? ` at ${f.stage}${f.layer !== undefined ? ` layer ${f.layer}` : ''}${f.pos !== undefined ? ` pos ${f.pos}` : ''}` : '';
    const what = `host fallback '${f.primitive}' (${f.calls} calls, ${f.bytesToHost} B to host, ${f.bytesToDevice} B to device${where})`;
    if (!a) v.push(`${what} is not accepted by the baseline`);
    else if (Date.parse(a.expires) < today) v.push(`${what}: its allowance expired on ${a.expires} (${a.reason})`);
  }
  if (m.exitCode === EXIT.hostFallback) v.push('the run itself failed the no-host-fallback gate (manifest exitCode 2)');
  for (const a of b.fallbacks) {
    if (!used.has(a.primitive) && Date.parse(a.expires) < today) warnings.push(`unused allowance for '${a.primitive}' expired on ${a.expires}; remove it from the baseline`);
  }
  return v;
}

function pushTo<T>(m: Map<string, T[]>, k: string, v: T): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

export async function gate(runDir: string, baselinePath: string, opts: GateOptions = {}): Promise<GateResult> {
  const b = loadBaseline(baselinePath);
  const m = readManifest(runDir);
  const diffs = caseDifferences(b.case, m);
  if (diffs.length) throw badInput(`baseline ${baselinePath} is for a different case than ${runDir}: ${diffs.join('; ')}`);
  const now = opts.now ?? new Date();
  const warnings: string[] = [];
  if (b.case.modelFingerprint === undefined) warnings.push(`baseline has no model fingerprint; matched by model file name '${b.case.modelFile}'`);

  const policy = baselinePolicy(b);
  const entriesByStageLayer = new Map<string, BaselineEntry[]>();
  for (const e of b.entries) pushTo(entriesByStageLayer, `${e.stage}@${e.layer}`, e);
  const covered = (r: CompareRow) => (entriesByStageLayer.get(`${r.stage}@${r.layer}`) ?? []).some((e) => entryCovers(e, r));
  let comparison = await compareRun(runDir, policy);
  if (opts.policy) {
    // rows the baseline does not list: the user's policy (with registry defaults)
    for (const r of comparison.rows) {
      if (!r.metrics || covered(r)) continue;
      r.thresholds = thresholdsFor(opts.policy, r.stage, r.layer, r.pos);
      r.violations = checkThresholds(r.metrics, r.thresholds);
      r.worst = worstMetric(r.metrics, r.thresholds);
      r.status = r.violations.length ? 'fail' : 'pass';
    }
    comparison = summarize(comparison.rows, comparison.a, comparison.b, comparison.notes);
  }

  const rowsByStageLayer = new Map<string, CompareRow[]>();
  for (const r of comparison.rows) pushTo(rowsByStageLayer, `${r.stage}@${r.layer}`, r);
  const checks: BaselineCheck[] = b.entries.map((e) => {
    const rows = (rowsByStageLayer.get(`${e.stage}@${e.layer}`) ?? []).filter((r) => entryCovers(e, r) && r.metrics);
    const allowed = allowedFor(e, b.growth);
    const check: BaselineCheck = { stage: e.stage, layer: e.layer, pos: e.pos, recordedMaxAbs: e.metrics.maxAbs, allowedMaxAbs: allowed.maxAbs, pass: true };
    if (!rows.length) return { ...check, pass: false, note: 'missing from the run' };
    let measured = -Infinity;
    for (const r of rows) if (r.metrics?.kind === 'f32') measured = Math.max(measured, r.metrics.maxAbs);
    if (measured > -Infinity) check.measuredMaxAbs = measured;
    if (e.noiseFloor && measured > -Infinity) check.noiseRatio = e.noiseFloor.maxAbs > 0 ? measured / e.noiseFloor.maxAbs : measured > 0 ? Infinity : 0;
    const failing = rows.filter((r) => r.status === 'fail');
    if (failing.length) {
      check.pass = false;
      check.note = failing[0].violations.map((v) => v.threshold).join(', ');
    }
    if (b.growth.maxNoiseRatio !== undefined && check.noiseRatio !== undefined && check.noiseRatio > b.growth.maxNoiseRatio) {
      check.pass = false;
      check.note = `${check.noiseRatio.toPrecision(3)}x the reference noise floor (allowed ${b.growth.maxNoiseRatio}x)`;
    }
    return check;
  });

  if (comparison.counts.compared === 0) {
    throw new Ds4DiffError(`${runDir}: no stage could be compared between reference and device; cannot evaluate`, EXIT.cannotEvaluate);
  }
  const fallbacks = fallbackViolations(b, m, now, warnings);
  const failedChecks = checks.filter((c) => !c.pass);
  const reasons: string[] = [];
  reasons.push(...fallbacks);
  for (const c of failedChecks) reasons.push(`${c.stage} layer ${c.layer}${c.pos !== undefined ? ` pos ${c.pos}` : ''}: ${c.note ?? 'beyond the baseline'}`);
  const ungatedFails = comparison.rows.filter((r) => r.status === 'fail' && !covered(r));
  for (const r of ungatedFails) reasons.push(`${r.stage} layer ${r.layer} pos ${r.pos}: ${r.violations.map((v) => v.threshold).join(', ')}`);
  if (comparison.firstDivergence) reasons.unshift(`first divergence: ${comparison.firstDivergence.stage} layer ${comparison.firstDivergence.layer} pos ${comparison.firstDivergence.pos}`);

  const regression = failedChecks.length > 0 || comparison.counts.failed > 0;
  const exitCode = fallbacks.length ? EXIT.hostFallback : regression ? EXIT.regression : EXIT.ok;
  const verdict = exitCode === EXIT.hostFallback ? 'host-fallback' : exitCode === EXIT.regression ? 'regression' : 'pass';
  return { exitCode, verdict, reasons, warnings, comparison, checks, fallbackViolations: fallbacks, baseline: baselinePath, runDir };
}

export interface RunVerdict {
  comparison: Comparison;
  gate?: GateResult;
  exitCode: number;
  /** the baseline gated against, if any */
  baseline?: string;
}

/**
 * The verdict of a finished run directory, as `run` and `engine` give it: against `baseline`, else the
 * shipped baseline whose case matches, else the registry's default tolerances (+ `policy`), where any
 * host fallback in the ledger fails (exit 2) unless the run allowed it.
 */
export async function gateRunDir(dir: string, m: RunManifest, o: { baseline?: string; policy?: Policy; allowHostFallback?: boolean } = {}): Promise<RunVerdict> {
  const baseline = o.baseline ?? findShippedBaseline(m);
  if (baseline) {
    const g = await gate(dir, baseline, { policy: o.policy });
    return { comparison: g.comparison, gate: g, exitCode: g.exitCode, baseline };
  }
  const comparison = await compareRun(dir, o.policy ?? EMPTY_POLICY);
  comparison.notes.push('no baseline matches this case: gated on the registry\'s default tolerances (record one with `ds4-diff baseline record`)');
  const exitCode = m.fallbackLedger.length && !o.allowHostFallback ? EXIT.hostFallback : comparison.pass ? EXIT.ok : EXIT.regression;
  return { comparison, exitCode };
}
