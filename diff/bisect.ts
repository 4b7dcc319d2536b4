// Bisect (issue 6): which device kernel diverged. Three steps, each only when the previous one does
// not settle it:
//   1. first divergence — the free-running device against the reference, rows in graph order across
//      layers and positions: the first (stage, layer, pos) whose error exceeds its tolerance;
//   2. own vs inherited — the teacher-forced pass (every stage fed the reference's inputs) gives each
//      row the error its own kernels made; the culprit is the first row whose OWN error exceeds its
//      tolerance, and its kernels are the launches that produced it. When several kernels produce that
//      row (e.g. rms_norm_plain + matmul_f16 for hc_attn_mix), each is swapped alone for its host
//      implementation and the one whose swap makes the row right is named;
//   3. kernel swap — no row is wrong by itself (small errors that only add up downstream): search the
//      set of launched kernels replaced by host implementations for a minimal set that brings the
//      whole run back within tolerance (host fallback allowed for these trials only).
// A row present on one side only (a compressor emitting at the wrong position) counts as diverged;
// a NaN stops a device pass at the capture that holds it, which is then that pass's divergence.
// The device is reached through a BisectProbe, so this file knows nothing of how kernels run. An
// engine's run (no device to re-run) is bisected from its dumps: own errors by replay (bisectFromReplay).
import { EXIT } from '../model/errors.ts';
import { graphOrderKey, recordKey, resolveStage, type StageRecord } from '../model/stages.ts';
import { compare, type CompareRow, type Comparison, type FactsMap, type Judged } from './compare.ts';
import { fmtNum, type Judge, type Violation } from './judge.ts';
import type { Metrics } from './metrics.ts';

/** A capture that held NaN (the pass stopped there). */
export interface NanStop {
  stage: string;
  layer: number;
  pos: number;
  element: number;
  kernels: readonly string[];
  message: string;
}

export interface ProbeRun {
  records: StageRecord[];
  /** `stage/layer/pos` → the kernels launched to produce that capture */
  producers: Map<string, readonly string[]>;
  /** kernels launched that have a host implementation (candidates for a swap), in first-launch order */
  swappable: string[];
  /** stage → the kernels launched for it (what the judge's device bound of the stage sums over, as `run` records them) */
  stageProducers?: Record<string, string[]>;
  nan?: NanStop;
}

export interface BisectProbe {
  /** One device pass: teacher-forced or free-running, with `hostKernels` replaced by host implementations, layers 0..lastLayer (default: the case's). */
  run(o: { teacher: boolean; hostKernels?: string[]; lastLayer?: number }): Promise<ProbeRun>;
  /** the case's last layer (the head follows it) */
  lastLayer: number;
}

export type BisectMethod = 'none' | 'own-error' | 'nan' | 'kernel-swap' | 'replay' | 'unresolved';

export interface BisectVerdict {
  /** the guilty kernel; several joined with '+' (a set found by kernel swap); null when nothing diverged or nothing was found */
  kernel: string | null;
  kernels: string[];
  method: BisectMethod;
  stage: string | null;
  layer: number | null;
  pos: number | null;
  /** the violated metric of the culprit row and its value (its own error) and limit */
  metric: string | null;
  own_error: number | null;
  tolerance: number | null;
  /** later (stage, layer) pairs that fail free-running but pass their own check */
  inherited: number;
  /** the culprit swapped for its host implementation brings the free-running run back within tolerance */
  confirmed: boolean | null;
  line: string;
}

export interface EvidenceRow {
  role: 'first divergence' | 'culprit' | 'first divergence, culprit' | 'inherits' | 'own failure';
  stage: string;
  layer: number;
  pos: number;
  kernels: string[];
  inherited?: Metrics;
  inheritedWorst?: Violation;
  own?: Metrics;
  ownWorst?: Violation;
  note?: string;
}

export interface SwapTrial {
  purpose: 'disambiguate' | 'confirm' | 'search';
  hostKernels: string[];
  /** search trials: the only kernels left on the device */
  deviceOnly?: string[];
  pass: boolean;
  /** what failed (first failing row), when it did */
  detail?: string;
}

export interface BisectResult {
  verdict: BisectVerdict;
  exitCode: number;
  firstDivergence?: { stage: string; layer: number; pos: number };
  evidence: EvidenceRow[];
  trials: SwapTrial[];
  comparison: Comparison;
  notes: string[];
  /** device passes made (0 when bisecting dumps by replay) */
  devicePasses: number;
}

export interface BisectOptions {
  onProgress?: (msg: string) => void;
  /** most device passes the kernel-swap search may make (default 64) */
  maxTrials?: number;
  /** evidence rows listed after the culprit (default 12) */
  maxEvidence?: number;
}

const rowKey = recordKey;

function before(x: { stage: string; layer: number; pos: number }, y: { stage: string; layer: number; pos: number }): boolean {
  const kx = graphOrderKey(x.stage, x.layer, x.pos), ky = graphOrderKey(y.stage, y.layer, y.pos);
  for (let i = 0; i < 4; i++) if (kx[i] !== ky[i]) return kx[i] < ky[i];
  return false;
}

/** The judged side of a row in a pass: own for the teacher-forced pass, free for the free-running one. */
const sideOf = (r: CompareRow, teacher: boolean): Judged | undefined => (teacher ? r.own : r.free);

/**
 * Has a row diverged in a pass? Free-running: past its own budget (drift), a failing end result or a
 * row on one side only; teacher-forced: its own error fails or it is on one side only. Rows of a pass that
 * stopped (NaN) are missing after the stop for that reason, not diverged.
 */
function diverged(r: CompareRow, teacher: boolean, stop?: NanStop): boolean {
  if (r.missing) return !(stop && !before(r, stop));
  const j = sideOf(r, teacher);
  if (!j) return false;
  if (j.status === 'fail') return true;
  return !teacher && j.budget !== undefined && j.metrics?.kind === 'f32' && j.metrics.relRms > j.budget;
}

interface Pass {
  run: ProbeRun;
  cmp: Comparison;
  teacher: boolean;
  /** first diverged row, or the NaN stop when nothing diverged before it */
  first?: { stage: string; layer: number; pos: number; row?: CompareRow; nan?: NanStop };
}

async function measure(reference: StageRecord[], facts: FactsMap, run: ProbeRun, teacher: boolean, judge: Judge): Promise<Pass> {
  const cmp = await compare({ reference, [teacher ? 'own' : 'free']: run.records, facts, labels: { a: 'reference', b: 'device' } }, judge);
  const row = cmp.rows.find((r) => diverged(r, teacher, run.nan));
  const nan = run.nan;
  if (row && (!nan || before(row, nan))) return { run, cmp, teacher, first: { stage: row.stage, layer: row.layer, pos: row.pos, row } };
  if (nan) return { run, cmp, teacher, first: { stage: nan.stage, layer: nan.layer, pos: nan.pos, nan } };
  return { run, cmp, teacher };
}

/** What decides a row in a pass, as metric, value and limit (a drift past the own budget when nothing fails). */
function describe(r: CompareRow | undefined, teacher: boolean, nan?: NanStop): { metric: string; value: number; limit: number } | undefined {
  if (nan && (!r || rowKey(r) === rowKey(nan))) return { metric: 'NaN', value: NaN, limit: 0 };
  if (!r) return undefined;
  if (r.missing) return { metric: 'presence', value: r.missing === 'reference' ? 1 : 0, limit: r.missing === 'reference' ? 0 : 1 };
  const j = sideOf(r, teacher);
  const v = j?.violations[0];
  if (v) return { metric: v.key, value: v.value, limit: v.limit };
  if (j?.budget !== undefined && j.metrics?.kind === 'f32') return { metric: 'maxRelRms', value: j.metrics.relRms, limit: j.budget };
  return undefined;
}

function metricPhrase(d: { metric: string; value: number; limit: number }): string {
  if (d.metric === 'NaN') return 'NaN';
  if (d.metric === 'maxRelRms') return `relative RMS ${fmtNum(d.value)} vs budget ${fmtNum(d.limit)} (${fmtNum(d.value / d.limit)}×)`;
  if (d.metric === 'maxClearFlips') return `${d.value} codes or choices flipped away from a near tie`;
  if (d.metric === 'maxNonFinite') return `${d.value} non-finite values where the reference is finite`;
  if (d.metric === 'presence') return d.value ? 'a row the reference does not produce' : 'no row where the reference has one';
  if (d.metric === 'dtype' || d.metric === 'shape') return `${d.metric} mismatch`;
  return `${d.metric.replace(/^max|^min/, '')} ${fmtNum(d.value)} vs ${fmtNum(d.limit)}`;
}

/** Producers of a row; a row the device never captured borrows its stage's producers at other positions. */
function producersOf(run: ProbeRun, r: { stage: string; layer: number; pos: number }): string[] {
  const own = run.producers.get(rowKey(r));
  if (own?.length) return [...own];
  const union = new Set<string>();
  for (const [k, ks] of run.producers) {
    const [s, l] = k.split('/');
    if (s === r.stage && Number(l) === r.layer) for (const x of ks) union.add(x);
  }
  if (union.size) return [...union];
  const fam = resolveStage(r.stage)?.kernel;
  return fam ? [fam] : [];
}

/** The row of a comparison at `at`, and whether it passed in the pass's role (NaN at or before it counts as a failure). */
function rowPasses(p: Pass, at: { stage: string; layer: number; pos: number }): boolean {
  if (p.run.nan && !before(at, p.run.nan)) return false;
  const r = p.cmp.rows.find((x) => rowKey(x) === rowKey(at));
  return !!r && !diverged(r, p.teacher);
}

/** The end result of a pass: its logits rows (the head runs after the last layer). */
function endRows(p: Pass): CompareRow[] {
  return p.cmp.rows.filter((r) => r.free?.role === 'end-to-end');
}

function endPasses(p: Pass): boolean {
  const e = endRows(p);
  return !p.run.nan && e.length > 0 && e.every((r) => r.status === 'pass');
}

function endText(p: Pass): string {
  if (p.run.nan) return p.run.nan.message;
  const e = endRows(p).find((r) => r.status !== 'pass') ?? endRows(p)[0];
  if (!e) return 'no logits row';
  const d = describe(e, false);
  return `${e.stage} layer ${e.layer} pos ${e.pos}${d ? `: ${metricPhrase(d)}` : ''}`;
}

function firstFailText(p: Pass): string | undefined {
  if (!p.first) return undefined;
  const d = describe(p.first.row, p.teacher, p.first.nan);
  return `${p.first.stage} layer ${p.first.layer} pos ${p.first.pos}${d ? `: ${metricPhrase(d)}` : ''}`;
}

/**
 * A minimal subset M of `cands` with pass(base ∪ M), given pass(base ∪ cands) and not pass(base), for a
 * monotone pass (here: "breaks the end result" of the kernels left on the device):
 * split in halves; a half that passes alone is searched alone, otherwise each half is minimised with
 * the other's minimum in place (QuickXplain-style; O(k log n) trials for k guilty of n).
 */
async function minimalSet(base: string[], cands: string[], pass: (s: string[]) => Promise<boolean>): Promise<string[]> {
  if (cands.length <= 1) return cands;
  const half = cands.length >> 1;
  const a = cands.slice(0, half), b = cands.slice(half);
  if (await pass([...base, ...a])) return minimalSet(base, a, pass);
  if (await pass([...base, ...b])) return minimalSet(base, b, pass);
  const ma = await minimalSet([...base, ...b], a, pass);
  const mb = await minimalSet([...base, ...ma], b, pass);
  return [...ma, ...mb];
}

function emptyVerdict(line: string, method: BisectMethod): BisectVerdict {
  return { kernel: null, kernels: [], method, stage: null, layer: null, pos: null, metric: null, own_error: null, tolerance: null, inherited: 0, confirmed: null, line };
}

/**
 * `judgeOf` makes the judge from the kernels the case's device pass launched per stage (its device bounds sum
 * over them, as `run`'s judge does over the ones its manifest records), so bisect holds a row to the budget
 * `run` held it to.
 */
export async function bisect(reference: StageRecord[], facts: FactsMap, device: BisectProbe, judgeOf: (stageProducers?: Record<string, string[]>) => Judge, opts: BisectOptions = {}): Promise<BisectResult> {
  const say = opts.onProgress ?? (() => {});
  let devicePasses = 0;
  const probe: BisectProbe = { lastLayer: device.lastLayer, run: (o) => (devicePasses++, device.run(o)) };
  const notes: string[] = [];
  const trials: SwapTrial[] = [];

  // 1. first divergence
  say('free-running pass');
  const freeRun = await probe.run({ teacher: false });
  const judge = judgeOf(freeRun.stageProducers);
  const free = await measure(reference, facts, freeRun, false, judge);
  if (!free.first) {
    return {
      verdict: emptyVerdict(`no divergence: all ${free.cmp.counts.compared} free-running rows are within their own budgets; no kernel to blame`, 'none'),
      exitCode: EXIT.ok, evidence: [], trials, comparison: free.cmp, notes, devicePasses,
    };
  }
  const firstDivergence = { stage: free.first.stage, layer: free.first.layer, pos: free.first.pos };

  // 2. own vs inherited: the teacher-forced pass
  say('teacher-forced pass');
  const own = await measure(reference, facts, await probe.run({ teacher: true }), true, judge);
  const comparison = await compare({ reference, free: free.run.records, own: own.run.records, facts, labels: { a: 'reference', b: 'device' } }, judge);
  const swapPass = (teacher: boolean, lastLayer?: number) => async (hostKernels: string[]): Promise<Pass> =>
    measure(reference, facts, await probe.run({ teacher, hostKernels, lastLayer }), teacher, judge);

  let verdict: BisectVerdict;
  let culpritAt: { stage: string; layer: number; pos: number } | undefined;
  if (own.first) {
    const at = own.first;
    culpritAt = at;
    let kernels = at.nan ? [...at.nan.kernels] : producersOf(own.run, at);
    if (kernels.length > 1) {
      // several launches produce the row: the guilty one is the one whose host swap makes it right
      const lastLayer = resolveStage(at.stage)?.scope === 'head' ? undefined : Math.min(at.layer, probe.lastLayer);
      const fixers: string[] = [];
      for (const k of kernels) {
        say(`teacher-forced pass with ${k} on the host`);
        const p = await swapPass(true, lastLayer)([k]);
        const ok = rowPasses(p, at);
        trials.push({ purpose: 'disambiguate', hostKernels: [k], pass: ok, detail: ok ? undefined : firstFailText(p) });
        if (ok) fixers.push(k);
      }
      if (fixers.length) kernels = fixers;
      else notes.push(`no single one of ${kernels.join(', ')} makes ${at.stage} right when swapped for its host implementation; all are listed`);
    }
    // confirm: with the culprit on the host, is the end result (the logits) within tolerance?
    say(`free-running pass with ${kernels.join('+')} on the host`);
    const conf = await swapPass(false)(kernels);
    const confirmed = endPasses(conf);
    trials.push({ purpose: 'confirm', hostKernels: kernels, pass: confirmed, detail: confirmed ? undefined : endText(conf) });
    if (!confirmed) notes.push(`with ${kernels.join('+')} on the host the end result is still out of tolerance (${endText(conf)}): other error remains (accumulated noise or a second faulty kernel); fix ${kernels.join('+')} and bisect again`);
    const d = describe(at.row, true, at.nan)!;
    const inherited = new Set<string>();
    for (const r of comparison.rows) {
      if (!before(at, r)) continue;
      if (diverged(r, false, free.run.nan) && (!r.own || r.own.status === 'pass')) inherited.add(`${r.stage}@${r.layer}`);
    }
    const name = kernels.join('+');
    const line = at.nan
      ? `${name} produced NaN first at layer ${at.layer} pos ${at.pos} stage ${at.stage} (element ${at.nan.element}); ${inherited.size} later stages inherit`
      : `${name} diverged first at layer ${at.layer} pos ${at.pos} stage ${at.stage}: own error ${metricPhrase(d)}; ${inherited.size} later stages inherit`;
    verdict = {
      kernel: name, kernels, method: at.nan ? 'nan' : 'own-error', stage: at.stage, layer: at.layer, pos: at.pos,
      metric: d.metric, own_error: d.value, tolerance: d.limit, inherited: inherited.size, confirmed, line,
    };
  } else {
    // 3. kernel swap: no row is wrong by itself; is the end result?
    const at = free.first;
    const d = describe(at.row, false, at.nan);
    const where = `layer ${at.layer} pos ${at.pos} stage ${at.stage}${d ? ` (${metricPhrase(d)})` : ''}`;
    if (endPasses(free)) {
      verdict = emptyVerdict(`no culprit: free-running drift first passes a row's own budget at ${where}, but every stage is within its own budget and the end result (logits) is within its budget — accumulated error, no kernel to blame`, 'none');
    } else {
      notes.push('kernel swap: every stage is within its own budget, so device kernels were replaced by their host implementations to find a minimal set of device kernels that, with every other kernel on the host, still breaks the end result (logits) — host fallback was allowed for these trials only');
      const cands = own.run.swappable.length ? own.run.swappable : free.run.swappable;
      const max = opts.maxTrials ?? 64;
      const cache = new Map<string, boolean>();
      let made = 0;
      // breaks(D): with only the kernels D on the device (the rest on the host), the end result fails
      const breaks = async (device: string[]): Promise<boolean> => {
        const onDevice = cands.filter((k) => device.includes(k));
        const key = onDevice.join(',');
        const hit = cache.get(key);
        if (hit !== undefined) return hit;
        if (made++ >= max) throw new BisectLimit();
        say(`kernel swap trial ${made}: ${onDevice.length} kernels on the device`);
        const p = await swapPass(false)(cands.filter((k) => !onDevice.includes(k)));
        const bad = !endPasses(p);
        trials.push({ purpose: 'search', hostKernels: cands.filter((k) => !onDevice.includes(k)), deviceOnly: onDevice, pass: !bad, detail: bad ? endText(p) : undefined });
        cache.set(key, bad);
        return bad;
      };
      cache.set(cands.join(','), true); // the free-running pass itself
      try {
        if (await breaks([])) {
          verdict = emptyVerdict(`unresolved: the run first diverges at ${where}, every stage is within its own budget, and even with every kernel on the host the end result is not within its budget`, 'unresolved');
        } else {
          const m = await minimalSet([], cands, breaks);
          const name = m.join('+');
          const e = endRows(free).find((r) => r.status !== 'pass');
          const ed = e ? describe(e, false) : undefined;
          verdict = {
            kernel: name, kernels: m, method: 'kernel-swap', stage: e?.stage ?? at.stage, layer: e?.layer ?? at.layer, pos: e?.pos ?? at.pos,
            metric: ed?.metric ?? null, own_error: null, tolerance: ed?.limit ?? null,
            inherited: 0, confirmed: true,
            line: `${name} ${m.length > 1 ? 'together break' : 'breaks'} the end result (kernel swap): ${e ? `${e.stage} ${ed ? metricPhrase(ed) : 'diverges'}` : 'the end result diverges'} with only ${m.length === 1 ? 'that kernel' : `those ${m.length} kernels`} on the device${m.length > 1 ? ', within its budget once any one of them is on the host' : ''}; every stage is within its own budget (first divergence: ${where})`,
          };
        }
      } catch (err) {
        if (!(err instanceof BisectLimit)) throw err;
        verdict = emptyVerdict(`unresolved: the kernel-swap search hit its limit of ${max} trials (--max-trials)`, 'unresolved');
      }
    }
  }

  const evidence = evidenceRows(comparison, firstDivergence, culpritAt, free, own, opts.maxEvidence ?? 12);
  const exitCode = verdict.kernel ? EXIT.regression : verdict.method === 'none' ? EXIT.ok : EXIT.cannotEvaluate;
  return { verdict, exitCode, firstDivergence, evidence, trials, comparison, notes, devicePasses };
}

class BisectLimit extends Error {}

/** The violation that decides a judged row, for the evidence table. */
const decisive = (j: Judged | undefined): Violation | undefined => j?.violations[0] ?? j?.worst;

function evidenceRows(c: Comparison, first: { stage: string; layer: number; pos: number }, culprit: { stage: string; layer: number; pos: number } | undefined, free: Pass, own: Pass, max: number): EvidenceRow[] {
  const out: EvidenceRow[] = [];
  const ownByKey = new Map(own.cmp.rows.map((r) => [rowKey(r), r]));
  const start = culprit && before(culprit, first) ? culprit : first;
  let after = 0;
  for (const r of c.rows) {
    if (before(r, start)) continue;
    const isFirst = rowKey(r) === rowKey(first), isCulprit = !!culprit && rowKey(r) === rowKey(culprit);
    const freeBad = diverged(r, false, free.run.nan);
    const ownRow = ownByKey.get(rowKey(r));
    const ownBad = !!ownRow && diverged(ownRow, true, own.run.nan);
    if (!isFirst && !isCulprit && !freeBad && !ownBad) continue;
    // drift before the culprit is accumulated error: nothing there inherits the culprit's
    if (culprit && !isFirst && !isCulprit && before(r, culprit)) continue;
    if (!isFirst && !isCulprit && ++after > max) break;
    const role: EvidenceRow['role'] = isFirst && isCulprit ? 'first divergence, culprit' : isCulprit ? 'culprit' : isFirst ? 'first divergence' : ownBad ? 'own failure' : 'inherits';
    out.push({
      role, stage: r.stage, layer: r.layer, pos: r.pos, kernels: producersOf(own.run, r),
      inherited: r.free?.metrics, inheritedWorst: decisive(r.free),
      own: ownRow?.own?.metrics, ownWorst: decisive(ownRow?.own),
      note: r.missing === 'reference' ? 'only on the device' : r.missing === 'candidate' ? 'device has no row' : (r.free?.note ?? r.own?.note),
    });
  }
  // a NaN stop is a row of its own: the comparison has no record there
  for (const p of [own, free]) {
    const n = p.run.nan;
    if (n && !out.some((e) => rowKey(e) === rowKey(n))) {
      out.push({ role: p === own ? 'culprit' : 'first divergence', stage: n.stage, layer: n.layer, pos: n.pos, kernels: [...n.kernels], note: `NaN at element ${n.element} (${p === own ? 'teacher-forced' : 'free-running'} pass stopped)` });
    }
  }
  return out;
}

/**
 * Bisect without a device to re-run (an engine's run directory): its comparison already holds each row's
 * own error from replaying the engine's dump through the reference (diff/replay.ts); the culprit is named by
 * the registry's kernel family of the first row wrong by itself. No kernel swap: that needs kernels the
 * workbench can run.
 */
export function bisectFromReplay(comparison: Comparison, opts: BisectOptions = {}, problems: string[] = []): BisectResult {
  const notes = ['own errors from `replay` of the engine\'s dump (each stage recomputed by the reference from the dumped inputs); kernels named by the registry\'s kernel family; no kernel swap without a device to re-run'];
  const first = comparison.rows.find((r) => diverged(r, false));
  const culprit = comparison.rows.find((r) => r.own?.status === 'fail');
  if (comparison.counts.unjudged) notes.push(`${comparison.counts.unjudged} dumped rows could not be replayed (inputs not dumped): their own error is unknown`);
  const empty: ProbeRun = { records: [], producers: new Map(), swappable: [] };
  const freePass: Pass = { run: empty, cmp: comparison, teacher: false, first: first && { stage: first.stage, layer: first.layer, pos: first.pos, row: first } };
  const ownPass: Pass = { run: empty, cmp: comparison, teacher: true, first: culprit && { stage: culprit.stage, layer: culprit.layer, pos: culprit.pos, row: culprit } };
  // what the engine recorded besides its rows (a rejected dump, an engine that did not finish) fails the run
  // or leaves it without a verdict, and no kernel's own error explains it: unresolved, never "nothing to blame"
  const unexplained = (at: string) => emptyVerdict(`unresolved: ${at}no replayed stage is wrong by itself, but the run does not pass: ${problems[0]}`, 'unresolved');
  if (!first && !culprit) {
    const verdict = problems.length ? unexplained('') : emptyVerdict(`no divergence: all ${comparison.counts.compared} rows are within their budgets; no kernel to blame`, 'none');
    return { verdict, exitCode: problems.length ? EXIT.cannotEvaluate : EXIT.ok, evidence: [], trials: [], comparison, notes, devicePasses: 0 };
  }
  let verdict: BisectVerdict;
  if (culprit) {
    const kernel = resolveStage(culprit.stage)?.kernel ?? culprit.stage;
    const d = describe(culprit, true)!;
    const inherited = new Set<string>();
    for (const r of comparison.rows) if (before(culprit, r) && diverged(r, false) && (!r.own || r.own.status === 'pass')) inherited.add(`${r.stage}@${r.layer}`);
    verdict = {
      kernel, kernels: [kernel], method: 'replay', stage: culprit.stage, layer: culprit.layer, pos: culprit.pos,
      metric: d.metric, own_error: d.value, tolerance: d.limit, inherited: inherited.size, confirmed: null,
      line: `${kernel} diverged first at layer ${culprit.layer} pos ${culprit.pos} stage ${culprit.stage}: own error (replay) ${metricPhrase(d)}; ${inherited.size} later stages inherit`,
    };
  } else {
    const at = first!;
    const d = describe(at, false);
    const where = `layer ${at.layer} pos ${at.pos} stage ${at.stage}${d ? ` (${metricPhrase(d)})` : ''}`;
    // drift past a row's own budget fails nothing by itself: with every row passing, it is accumulated error (as in bisect)
    verdict = problems.length ? unexplained(`the run first diverges at ${where}; `) : comparison.pass
      ? emptyVerdict(`no culprit: free-running drift first passes a row's own budget at ${where}, but every replayed stage is within its own budget and no row fails — accumulated error, no kernel to blame`, 'none')
      : emptyVerdict(`unresolved: the run first diverges at ${where}, but no replayed stage is wrong by itself; the kernel swap needs the simulator`, 'unresolved');
  }
  const evidence = evidenceRows(comparison, first ?? culprit!, culprit, freePass, ownPass, opts.maxEvidence ?? 12);
  return { verdict, exitCode: verdict.kernel ? EXIT.regression : verdict.method === 'none' ? EXIT.ok : EXIT.cannotEvaluate, firstDivergence: first && { stage: first.stage, layer: first.layer, pos: first.pos }, evidence, trials: [], comparison, notes, devicePasses: 0 };
}
