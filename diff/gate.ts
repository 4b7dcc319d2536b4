// The verdict: one judge per case (the arithmetic budgets of diff/judge.ts, tightened by a baseline, with a
// user's policy on top) and one function that turns a judged run into the exit code and the line every
// report prints. Exit codes (so `git bisect run ds4-diff gate ...` works): 0 pass, 1 regression, 2
// host-fallback violation, 3 bad input (thrown), 125 cannot evaluate. A run that silently computed on the
// host says nothing about the device kernels: 2 wins over 1.
import type { StageId } from '../model/stages.ts';
import { Ds4DiffError, EXIT, badInput } from '../model/errors.ts';
import { caseDifferences, findShippedBaseline, loadBaseline, type Baseline } from './baseline.ts';
import { compareRun, summarize, type Comparison, type Judged } from './compare.ts';
import { END_TO_END, F32_UNIT, NOISE_MARGIN, fmtNum, withBound, type DeviceBound, type Judge, type Role, type Tolerance } from './judge.ts';
import { fallbackStopOf, readManifest, recordedProblems, sidePath, type RunManifest } from './manifest.ts';
import { applyPolicy, type Policy } from './policy.ts';

export interface JudgeOptions {
  /** what the device math in use adds to each stage's own error (ascend/budgets.ts) */
  deviceBound: (stage: StageId, pos: number) => DeviceBound;
  baseline?: { file: string; b: Baseline };
  policy?: Policy;
  /** "today", for the expiry of deviations (tests) */
  now?: Date;
}

const matches = (e: { stage: string; layer?: number; pos?: number }, stage: string, layer: number, pos: number) =>
  e.stage === stage && (e.layer === undefined || e.layer === layer) && (e.pos === undefined || e.pos === pos);

/** The judge of a case: arithmetic budgets, a baseline's tightening and known deviations, a policy's rules. */
export function makeJudge(o: JudgeOptions): Judge & { warnings: string[] } {
  const warnings: string[] = [];
  const today = (o.now ?? new Date()).getTime();
  const b = o.baseline?.b;
  const from = o.baseline ? `baseline ${o.baseline.file}` : '';
  if (b) {
    for (const d of b.deviations) if (Date.parse(d.expires) < today) warnings.push(`known deviation ${d.stage}${d.layer !== undefined ? ` layer ${d.layer}` : ''} expired on ${d.expires} (${d.reason}): the arithmetic budget applies again`);
  }
  const own = new Map((b?.own ?? []).map((e) => [`${e.stage}@${e.layer}`, e.relRms]));
  const sources = [`arithmetic budgets (${NOISE_MARGIN} × the reference's rounding noise + the device math's bound)`, `end-to-end budget (KL ≤ ${END_TO_END.maxKl}, Δp ≤ ${END_TO_END.maxDeltaP}, a top-1 flip only at a near tie the KL bound can close, ≥ ${END_TO_END.nearTieLogit} logit)`];
  if (o.baseline) sources.push(`baseline ${o.baseline.file}`);
  if (o.policy) sources.push(`policy ${o.policy.file ?? ''}`.trim());
  return {
    warnings,
    sources,
    deviceBound: o.deviceBound,
    tolerance(role: Role, stage: string, layer: number, pos: number, base: Tolerance): Tolerance {
      let t = base;
      if (b && role === 'own') {
        const arith = t.bounds.find((x) => x.key === 'maxRelRms');
        const recorded = own.get(`${stage}@${layer}`);
        if (arith && recorded !== undefined) {
          const limit = Math.min(arith.limit, Math.max(b.growth * recorded, NOISE_MARGIN * F32_UNIT));
          t = withBound(t, { key: 'maxRelRms', limit, from: `${from}: ${b.growth} × recorded ${fmtNum(recorded)}` });
        }
        const dev = b.deviations.find((d) => matches(d, stage, layer, pos) && Date.parse(d.expires) >= today);
        if (dev) t = withBound(t, { key: 'maxRelRms', limit: dev.maxRelRms, from: `${from}: known deviation until ${dev.expires} (${dev.reason})` });
      }
      if (b && role !== 'own') {
        for (const e of b.inherited) {
          if (!matches(e, stage, layer, pos)) continue;
          for (const [key, limit] of Object.entries(e.bounds)) t = withBound(t, { key: key as keyof typeof e.bounds, limit: limit!, from: `${from} (free-running envelope)` });
        }
        if (role === 'end-to-end' && b.endToEnd) {
          const { kl, deltaP } = b.endToEnd;
          const cur = (key: 'maxKl' | 'maxDeltaP') => t.bounds.find((x) => x.key === key)?.limit ?? Infinity;
          if (kl !== undefined) t = withBound(t, { key: 'maxKl', limit: Math.min(cur('maxKl'), Math.max(b.growth ** 2 * kl, 1e-9)), from: `${from}: ${b.growth}² × recorded KL ${fmtNum(kl)}` });
          if (deltaP !== undefined) t = withBound(t, { key: 'maxDeltaP', limit: Math.min(cur('maxDeltaP'), Math.max(b.growth * deltaP, 1e-6)), from: `${from}: ${b.growth} × recorded Δp ${fmtNum(deltaP)}` });
        }
      }
      return applyPolicy(o.policy, role, stage, layer, pos, t);
    },
  };
}

export interface Verdict {
  exitCode: number;
  status: 'pass' | 'regression' | 'host-fallback' | 'cannot-evaluate';
  /** the verdict in plain words: every report prints it */
  line: string;
  /** why it failed, first divergence first */
  reasons: string[];
  warnings: string[];
}

const where = (r: { stage: string; layer: number; pos: number }) => `${r.stage} layer ${r.layer} pos ${r.pos}`;

/** A judged row's decisive figure in words: "relRms 2.1e-2 vs budget 1.2e-3 (17×)". */
export function judgedText(j: Judged | undefined): string {
  if (!j) return '-';
  if (j.note && j.violations.some((v) => v.key === 'dtype' || v.key === 'shape')) return j.note;
  if (j.byStats) return statsText(j);
  // the most telling violation first: a non-finite value, a flipped code or choice, then the figures
  const rank = (k: string) => (k === 'maxNonFinite' ? 0 : k === 'maxClearFlips' ? 1 : 2);
  const failing = [...j.violations].sort((a, b) => rank(a.key) - rank(b.key))[0];
  // a passing row with an own budget: its error against that budget (a free-running row's drift)
  if (!failing && j.budget !== undefined && j.metrics?.kind === 'f32') return `relRms ${fmtNum(j.metrics.relRms)} (${fmtNum(j.metrics.relRms / j.budget)}× its own budget)`;
  const w = failing ?? j.worst;
  if (!w) return j.status;
  if (w.key === 'maxNonFinite') return `${w.value} non-finite values where the reference is finite`;
  if (w.key === 'maxClearFlips') {
    const m = j.metrics;
    if (m?.kind === 'f32' && m.logits) return `top-1 token ${m.logits.argmaxB} instead of ${m.logits.argmaxA} (reference margin ${fmtNum(m.logits.flipMargin)} > near tie ${fmtNum(j.tolerance.tie ?? 0)})`;
    return `${w.value} ${m?.kind === 'i32' ? 'different choice' : 'codes flipped'} away from a near tie`;
  }
  const budget = j.tolerance.bounds.find((x) => x.key === w.key);
  const pastBy = w.key.startsWith('max') && w.limit > 0 ? ` (${fmtNum(w.value / w.limit)}×)` : '';
  return `${w.key.replace(/^max|^min/, '').replace(/^./, (c) => c.toLowerCase())} ${fmtNum(w.value)} vs ${fmtNum(w.limit)}${pastBy}${budget && j.violations.length ? ` [${budget.from}]` : ''}`;
}

/** A row judged by statistics in words: what they proved, and that it came from statistics. */
function statsText(j: Judged): string {
  const e = j.byStats!;
  if (e.identical) return 'identical values (equal hashes; statistics only)';
  const v = j.violations[0];
  if (v) return v.key === 'maxNonFinite' ? `at least ${v.value} non-finite values where the reference is finite (statistics only)` : `${v.key === 'maxAbs' ? 'maxAbs' : 'relRms'} at least ${fmtNum(v.value)} vs ${fmtNum(v.limit)} (statistics only)`;
  const lb = `relRms at least ${fmtNum(e.relRmsAtLeast)}${j.budget ? ` (${fmtNum(e.relRmsAtLeast / j.budget)}× its own budget)` : ''}`;
  return j.status === 'undecided' ? `undecided: ${lb} (statistics only)` : `${lb}, no non-finite value (statistics only)`;
}

/** The end result of a comparison in words: "logits KL 3e-4 within 1e-2, top-1 match". */
export function endToEndText(c: Comparison): string | undefined {
  const rows = c.rows.filter((r) => r.free?.role === 'end-to-end');
  if (!rows.length) return undefined;
  let kl = 0, dp = 0, flips = 0, ties = 0;
  let limit = Infinity;
  for (const r of rows) {
    const l = r.free?.metrics?.kind === 'f32' ? r.free.metrics.logits : undefined;
    if (!l) continue;
    kl = Math.max(kl, l.kl);
    dp = Math.max(dp, l.deltaP);
    if (!l.argmaxMatch) (r.free!.metrics!.nearTies ? ties++ : flips++);
    limit = Math.min(limit, r.free!.tolerance.bounds.find((b) => b.key === 'maxKl')?.limit ?? Infinity);
  }
  const top1 = flips ? `${flips} top-1 flip${flips > 1 ? 's' : ''}` : ties ? `top-1 near tie${ties > 1 ? ` ×${ties}` : ''}` : 'top-1 match';
  return `logits KL ${fmtNum(kl)} ${kl <= limit ? 'within' : 'over'} ${fmtNum(limit)}, Δp ${fmtNum(dp)}, ${top1}${rows.length > 1 ? ` over ${rows.length} positions` : ''}`;
}

/** What happened to a run besides its rows: host fallbacks, broken inputs, a producer that did not finish. */
export interface RunProblems {
  /** host fallbacks no baseline accepts, or the no-host-fallback gate stopping the run: exit 2 */
  fallbacks?: string[];
  /** evidence of a wrong result outside the rows (a dump whose size fits no stage): exit 1 */
  regressions?: string[];
  /** the producer did not finish (killed, timed out, an unimplemented primitive): what it wrote is judged,
   *  but a run whose rows pass has no verdict on the rest: exit 125 */
  unfinished?: string[];
  /** nothing the rows compare exercised a kernel (weights that hold no data): no verdict whatever the rows say: exit 125 */
  untested?: string[];
}

/**
 * The one verdict of a judged run: host fallbacks first (exit 2: a run that computed on the host says nothing
 * about the device), then own errors (a kernel wrong by itself), rows on one side only, the end result, other
 * evidence of a wrong result (exit 1), then an unfinished producer (exit 125). Every renderer prints `line`.
 */
export function verdictOf(c: Comparison, problems: RunProblems = {}, warnings: string[] = []): Verdict {
  const fallbackViolations = problems.fallbacks ?? [];
  const reasons: string[] = [...fallbackViolations];
  const own = c.firstOwnFailure;
  const missing = c.rows.filter((r) => r.missing);
  const end = c.rows.filter((r) => r.free?.role === 'end-to-end' && r.free.status === 'fail');
  const freeFails = c.rows.filter((r) => r.free?.role === 'inherited' && r.free.status === 'fail');
  if (own) reasons.push(`${where(own)} is wrong by itself: own error ${judgedText(own.own)}; ${c.counts.ownFailed} rows fail on their own`);
  if (missing.length) reasons.push(`${missing.length} ${missing.length === 1 ? 'row' : 'rows'} on one side only (first ${where(missing[0])}: no ${missing[0].missing} row)`);
  for (const r of end) reasons.push(`end result ${where(r)}: ${judgedText(r.free)}`);
  if (freeFails.length) reasons.push(`${freeFails.length} free-running rows past their envelope (first ${where(freeFails[0])}: ${judgedText(freeFails[0].free)})`);
  reasons.push(...(problems.regressions ?? []));
  const untested = problems.untested ?? [];
  const unfinished = [...untested, ...(problems.unfinished ?? [])];
  const drift = c.firstDivergence;
  const e2e = endToEndText(c);
  const regression = !c.pass || (problems.regressions ?? []).length > 0;
  // rows judged free-running only, by nothing but non-finite values: no evidence either way on their kernels
  const ownUnknown = c.rows.filter((r) => !r.own && r.free?.role === 'inherited').length;
  const freeBounded = c.rows.some((r) => r.free && (r.free.role === 'end-to-end' || r.free.tolerance.bounds.some((b) => b.key !== 'maxNonFinite')));
  // bit-identical rows need no budget
  const identical = c.counts.compared > 0 && c.rows.every((r) => (r.free?.byStats ? r.free.byStats.identical : !r.free?.metrics || (r.free.metrics.kind === 'f32' ? r.free.metrics.maxAbs === 0 : r.free.metrics.exact)));
  // rows compared by statistics that proved nothing either way: never counted as judged, always named
  const undecided = c.rows.filter((r) => r.status === 'unjudged' && (r.own?.status === 'undecided' || r.free?.status === 'undecided')).length;
  const undecidedPart = undecided ? `; ${undecided} rows compared by statistics only, undecided (capture them in full to judge them)` : '';
  if (!regression && !fallbackViolations.length && c.counts.own === 0 && !freeBounded && !identical) {
    unfinished.unshift(`no row was judged by its own error or by the end result (${c.counts.compared} free-running rows, checked only for non-finite values${c.counts.unjudged ? `; ${c.counts.unjudged} unjudged` : ''}): dump the inputs of these stages too, or the logits`);
  }
  const status: Verdict['status'] = fallbackViolations.length ? 'host-fallback' : regression ? 'regression' : unfinished.length ? 'cannot-evaluate' : 'pass';
  const exitCode = { 'host-fallback': EXIT.hostFallback, regression: EXIT.regression, 'cannot-evaluate': EXIT.cannotEvaluate, pass: EXIT.ok }[status];
  if (status !== 'cannot-evaluate') reasons.push(...unfinished);
  else reasons.unshift(...unfinished);
  let line: string;
  if (status === 'pass') {
    const worst = c.stages.filter((s) => s.ownRatio !== undefined).sort((x, y) => (y.ownRatio ?? 0) - (x.ownRatio ?? 0))[0];
    const ownPart = c.counts.own
      ? `every kernel within its own budget (${c.counts.own} rows${worst ? `, closest ${worst.stage} at ${fmtNum(worst.ownRatio!)}× its budget` : ''}${ownUnknown ? `; ${ownUnknown} rows' own error unknown` : ''}${undecidedPart})`
      : identical
        ? `all ${c.counts.compared} rows bit-identical`
        : undecided
          ? `no row's own error was judged in full (${undecided} rows compared by statistics only, undecided: capture them in full to judge them)`
          : 'no own-error side: the free-running rows and the end result were judged';
    const driftPart = drift ? `; free-running drift from ${where(drift)} is accumulation` : '';
    line = `PASS: ${ownPart}${driftPart}${e2e ? `: ${e2e}` : ''}${c.counts.nearTies ? ` (${c.counts.nearTies} near ties)` : ''}`;
  } else if (status === 'cannot-evaluate') {
    line = (c.counts.own === 0 && !freeBounded) || untested.length ? `NO VERDICT: ${unfinished[0]}` : `NO VERDICT: ${unfinished[0]}; the ${c.counts.compared} rows it wrote pass, the rest was never computed`;
  } else {
    line = `${status === 'host-fallback' ? 'FAIL (host fallback)' : 'FAIL'}: ${reasons[0]}`;
    if (status === 'regression' && !own && e2e) line += `; ${e2e}`;
  }
  return { exitCode, status, line, reasons, warnings };
}

/**
 * The host fallbacks of a run no baseline accepts (exit 2). `--allow-host-fallback` lets a run compute on the host
 * and record it in its ledger; it does not make a run that computed on the host a pass: only a baseline's
 * allowance, with an expiry, does.
 */
function fallbackViolations(b: Baseline | undefined, m: RunManifest, now: Date, warnings: string[]): string[] {
  const v: string[] = [];
  const today = now.getTime();
  const allowed = new Map((b?.fallbacks ?? []).map((f) => [f.primitive, f]));
  const used = new Set<string>();
  for (const f of m.fallbackLedger) {
    used.add(f.primitive);
    const a = allowed.get(f.primitive);
    const at = f.stage !== undefined ? ` at ${f.stage}${f.layer !== undefined ? ` layer ${f.layer}` : ''}${f.pos !== undefined ? ` pos ${f.pos}` : ''}` : '';
    const what = `host fallback '${f.primitive}' (${f.calls} calls, ${f.bytesToHost} B to host, ${f.bytesToDevice} B to device${at})`;
    if (a) {
      if (Date.parse(a.expires) < today) v.push(`${what}: its allowance expired on ${a.expires} (${a.reason})`);
    } else v.push(b ? `${what} is not accepted by the baseline` : `${what}: no baseline accepts it`);
  }
  const stop = fallbackStopOf(m);
  if (stop !== undefined) v.push(`the no-host-fallback gate stopped the run: ${stop}`);
  for (const a of b?.fallbacks ?? []) {
    if (!used.has(a.primitive) && Date.parse(a.expires) < today) warnings.push(`unused allowance for '${a.primitive}' expired on ${a.expires}; remove it from the baseline`);
  }
  return v;
}

export interface RunVerdict {
  comparison: Comparison;
  verdict: Verdict;
  judge: Judge;
  /** the baseline gated against, if any */
  baseline?: string;
}

export interface GateOptions {
  deviceBound: (stage: StageId, pos: number) => DeviceBound;
  /** a baseline file; refused (exit 3) when its case is not the run's */
  baseline?: string;
  /** look for a shipped baseline whose case is the run's when none is given (default true) */
  shipped?: boolean;
  policy?: Policy;
  now?: Date;
}

/**
 * The verdict of a finished run directory — `run`, `engine` and `gate` alike: judged against `baseline`,
 * else the shipped baseline whose case matches, else the arithmetic budgets alone; `policy` on top.
 */
export async function gateRunDir(dir: string, o: GateOptions): Promise<RunVerdict> {
  const m = readManifest(dir);
  const file = o.baseline ?? (o.shipped === false ? undefined : findShippedBaseline(m));
  const warnings: string[] = [];
  let baseline: { file: string; b: Baseline } | undefined;
  if (file) {
    const b = loadBaseline(file);
    const diffs = caseDifferences(b.case, m);
    if (diffs.length) throw badInput(`baseline ${file} is for a different case than ${dir}: ${diffs.join('; ')}`);
    if (b.case.modelFingerprint === undefined) warnings.push(`baseline has no model fingerprint; matched by model file name '${b.case.modelFile}'`);
    baseline = { file, b };
  }
  const now = o.now ?? new Date();
  const judge = makeJudge({ deviceBound: o.deviceBound, baseline, policy: o.policy, now });
  const fallbacks = fallbackViolations(baseline?.b, m, now, warnings);
  // a run stopped on the host-fallback gate before its reference ran (a generating run's device pass comes first)
  // or before its first capture is still that failure
  const comparison = fallbacks.length && !sidePath(dir, m, 'reference')
    ? summarize([], 'reference', 'device', ['the run stopped before its reference ran: nothing was compared'])
    : await compareRun(dir, judge);
  if (comparison.counts.compared === 0 && !fallbacks.length) throw new Ds4DiffError(`${dir}: no stage could be compared between reference and device; cannot evaluate`, EXIT.cannotEvaluate);
  if (!baseline) comparison.notes.push('no baseline matches this case: judged by the arithmetic budgets alone (record one with `ds4-diff baseline record`)');
  const recorded = recordedProblems(m);
  comparison.notes.push(...(recorded.notes ?? []));
  const verdict = verdictOf(comparison, { ...recorded, fallbacks }, [...warnings, ...judge.warnings]);
  return { comparison, verdict, judge, baseline: file };
}
