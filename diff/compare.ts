// The diff engine: pair the records of a reference with a candidate's by (stage, layer, pos), compute each
// pair's metrics and judge it (diff/judge.ts) in its role — `own` (the candidate's teacher-forced pass, or
// the reference replayed on the candidate's inputs), `inherited` (the free-running candidate), `end-to-end`
// (the free-running logits) — and summarize in graph order: the first row that fails on its own (the
// kernel to blame), the first free-running row past its own budget (where drift starts), the end result.
// The reference side is always `a`: relative errors, NMSE and KL are taken relative to it.
import { Ds4DiffError, EXIT, badInput } from '../model/errors.ts';
import { graphOrderKey, recordKey, resolveStage, stageKey, type RowStats, type StageDef, type StageId, type StageRecord } from '../model/stages.ts';
import { iterateDump, readDumpMeta, type DumpMeta } from './dump.ts';
import {
  ALWAYS, END_TO_END, chainBound, check, codeFlips, topFlipTie, endToEndTolerance, ownBudget, relRmsExcept, rms, SELECTION_SCORES, worstBound,
  type Judge, type Role, type RowFacts, type Tolerance, type Violation,
} from './judge.ts';
import { readManifest, sidePath } from './manifest.ts';
import { checkRunSides } from './rundir.ts';
import { recordMetrics, worstElement, worstOf, type Metrics } from './metrics.ts';
import { isStatsOnly, judgeStats, statsOf, type StatsEvidence } from './stats.ts';

/** One role's verdict on a row. */
export interface Judged {
  role: Role;
  /** `undecided`: compared by statistics (diff/stats.ts), which proved neither a failure nor a pass */
  status: 'pass' | 'fail' | 'undecided';
  metrics?: Metrics;
  tolerance: Tolerance;
  violations: Violation[];
  /** the bound the row is closest to (or furthest past) */
  worst?: Violation & { severity: number };
  /** relative RMS: an own row's bound (its arithmetic budget, or tighter from a baseline or policy); an
   *  inherited row's arithmetic own budget, the yardstick of its drift */
  budget?: number;
  note?: string;
  /** a side was captured as statistics only: what they prove (no `metrics`) */
  byStats?: StatsEvidence;
}

export interface CompareRow {
  stage: string;
  layer: number;
  pos: number;
  token: number;
  /** known to the registry (unknown names are kept under their own name and sorted last) */
  known: boolean;
  /** a side that has no record for this row: never a pass */
  missing?: 'reference' | 'candidate';
  /** the free-running candidate against the reference: `inherited`, or `end-to-end` for the logits */
  free?: Judged;
  /** the row's own error */
  own?: Judged;
  /** the statistics of the reference's and the free-running candidate's values */
  sides?: { a: RowStats; b: RowStats };
  /** where the free-running candidate differs most from the reference (both full) */
  worstAt?: { index: number; a: number; b: number };
  /** `unjudged`: on both sides but judged in no role (a replay that could not recompute it, say why elsewhere),
   *  or compared by statistics that decided nothing */
  status: 'pass' | 'fail' | 'missing' | 'unjudged';
}

export interface StageSummary {
  stage: string;
  known: boolean;
  rows: number;
  failed: number;
  missing: number;
  nearTies: number;
  /** worst-case free-running metrics over the stage's rows */
  metrics?: Metrics;
  /** worst own metrics */
  ownMetrics?: Metrics;
  ownFailed: number;
  /** largest own error as a multiple of its budget */
  ownRatio?: number;
  /** largest free-running error as a multiple of the row's own budget (drift) */
  driftRatio?: number;
  worst?: Violation & { severity: number };
  firstFailure?: { layer: number; pos: number };
}

export interface LayerSummary {
  layer: number;
  rows: number;
  failed: number;
  ownRatio?: number;
  driftRatio?: number;
  worstStage?: string;
}

export interface Comparison {
  a: string;
  b: string;
  rows: CompareRow[];
  /** the first row that fails on its own (own error, a missing row, an end result out of its budget) */
  firstFailure?: CompareRow;
  /** the first row whose own error fails: the stage that is wrong by itself */
  firstOwnFailure?: CompareRow;
  /** the first free-running row beyond its own budget: where accumulated drift starts to show */
  firstDivergence?: CompareRow;
  stages: StageSummary[];
  layers: LayerSummary[];
  /** `own`: rows judged by their own error (decided); `byStats`: rows compared by statistics only (diff/stats.ts) */
  counts: { rows: number; compared: number; failed: number; missing: number; unjudged: number; nearTies: number; own: number; ownFailed: number; byStats: number };
  pass: boolean;
  notes: string[];
}

export type Source = Iterable<StageRecord> | AsyncIterable<StageRecord>;

/** Facts of the reference's rows (diff/judge.ts RowFacts), by stageKey. */
export type FactsMap = Map<string, RowFacts>;

/** What to compare: a reference, and a free-running and/or an own candidate. */
export interface Pairing {
  /** the free-running reference (and the own reference, unless `ownReference` is given) */
  reference: Source;
  free?: Source;
  own?: Source;
  /** replay: the reference recomputed on the candidate's own inputs, against which `own` is judged */
  ownReference?: Source;
  /** facts of the own reference's rows (own budgets) */
  facts?: FactsMap;
  /** facts of the free reference's rows (the drift ratio of free rows); default: `facts` without ownReference */
  freeFacts?: FactsMap;
  labels?: { a?: string; b?: string };
  notes?: string[];
  /** replay: per stage, the inputs it read derived by the reference (the dump lacks them); their device
   *  error is inside the stage's own error, so its device bound includes theirs */
  derivedInputs?: DerivedInputs;
}

/** stage → the input stages a replay derived for it (diff/replay.ts) */
export type DerivedInputs = Record<string, string[]>;

async function collect(src: Source): Promise<Map<string, StageRecord>> {
  const m = new Map<string, StageRecord>();
  for await (const r of src as AsyncIterable<StageRecord>) m.set(recordKey(r), r);
  return m;
}

const canonical = (name: string): StageDef | undefined => resolveStage(name);

/**
 * Judge one record pair in a role. `ref`/`facts` are the reference's row and what it knows of it; `lookup`
 * finds the reference's other rows at the same (layer, pos) (a choice is judged against its scores' budget).
 */
function judgePair(
  role: Role, ra: StageRecord, rb: StageRecord, facts: RowFacts | undefined, judge: Judge,
  lookup: (stage: StageId) => { rec?: StageRecord; facts?: RowFacts }, derived: readonly string[] = [],
): Judged {
  const def = canonical(ra.stage);
  const base = (tolerance: Tolerance): Judged => ({ role, status: 'fail', tolerance, violations: [] });
  if (ra.dtype !== rb.dtype) return { ...base({ bounds: [] }), violations: [{ key: 'dtype', value: 1, limit: 0 }], note: `dtype ${ra.dtype} vs ${rb.dtype}` };
  if (ra.values.length !== rb.values.length) {
    return { ...base({ bounds: [] }), violations: [{ key: 'shape', value: rb.values.length, limit: ra.values.length }], note: `shape [${ra.shape}] vs [${rb.shape}]` };
  }
  const note = ra.shape.join('x') !== rb.shape.join('x') ? `shape [${ra.shape}] vs [${rb.shape}] (same element count, compared flat)` : undefined;
  const isLogits = def?.name === 'logits';
  const metrics = recordMetrics(ra.values, rb.values, { logits: isLogits && role === 'end-to-end' });
  let budget: number | undefined;
  let tolerance: Tolerance;
  if (role === 'end-to-end') {
    tolerance = judge.tolerance(role, ra.stage, ra.layer, ra.pos, endToEndTolerance());
    if (metrics.kind === 'f32' && metrics.logits) {
      const flip = !metrics.logits.argmaxMatch;
      // the near tie of a top-1 flip: the tolerance's own (a policy's nearTie), else what the KL bound allows
      const maxKl = tolerance.bounds.find((b) => b.key === 'maxKl')?.limit ?? END_TO_END.maxKl;
      if (flip && tolerance.tie === undefined) tolerance = { ...tolerance, tie: topFlipTie(maxKl, metrics.logits.flipMass) };
      const near = flip && metrics.logits.flipMargin <= (tolerance.tie ?? 0);
      metrics.clearFlips = flip && !near ? 1 : 0;
      metrics.nearTies = near ? 1 : 0;
    }
  } else {
    // the own budget of the row (also the yardstick of a free-running row's drift)
    const device = def ? chainBound([def.name, ...(role === 'own' ? derived : [])].map((s) => judge.deviceBound(s as StageId, ra.pos))) : undefined;
    let tie: number | undefined;
    if (def && device && metrics.kind === 'f32' && facts) {
      const b = ownBudget(ra.values, facts, device);
      budget = b.rel;
      const scale = rms(ra.values);
      tie = b.rel * scale;
      const arith: Tolerance = { bounds: [{ key: 'maxRelRms', limit: b.rel, from: b.from }, ...ALWAYS], tie };
      if (def.decision === 'rounding') {
        // codes on a grid: a differing code must be a near tie; the RMS error is taken over the rest
        const f = codeFlips(ra.values, rb.values, facts, tie, tie, (b.twinRel ?? 0) * scale);
        metrics.clearFlips = f.clear;
        metrics.nearTies = f.nearTie;
        metrics.relRms = relRmsExcept(ra.values, rb.values, f.nearTieAt);
        arith.bounds.push({ key: 'maxClearFlips', limit: 0, from: 'a code may differ only at a near tie of its rounding' });
      }
      tolerance = judge.tolerance(role, ra.stage, ra.layer, ra.pos, role === 'own' ? arith : { bounds: [...ALWAYS] });
    } else if (def && metrics.kind === 'i32' && def.decision === 'selection') {
      // another choice passes only where the reference's scores were within their own budget of each other
      const scores = lookup(SELECTION_SCORES[def.name]!);
      const gap = facts?.gap;
      if (scores.rec && scores.facts && gap !== undefined && !(scores.rec.values instanceof Int32Array)) {
        tie = ownBudget(scores.rec.values, scores.facts, judge.deviceBound(SELECTION_SCORES[def.name]!, ra.pos)).rel * rms(scores.rec.values);
      }
      const flip = !metrics.exact;
      const near = flip && gap !== undefined && tie !== undefined && gap <= tie;
      metrics.clearFlips = flip && !near ? 1 : 0;
      metrics.nearTies = near ? 1 : 0;
      const arith: Tolerance = { bounds: [{ key: 'maxClearFlips', limit: 0, from: 'another choice only at a near tie of its scores' }], tie };
      tolerance = judge.tolerance(role, ra.stage, ra.layer, ra.pos, role === 'own' ? arith : { bounds: [] });
    } else {
      // no facts (a plain comparison of two dumps) or a stage the registry does not know
      tolerance = judge.tolerance(role, ra.stage, ra.layer, ra.pos, { bounds: [...ALWAYS] });
    }
  }
  const violations = check(metrics, tolerance);
  // an own row is measured against the bound it is held to (a baseline or policy may have tightened the
  // arithmetic budget); a free row's drift against the arithmetic budget
  if (role === 'own' && budget !== undefined) budget = tolerance.bounds.find((b) => b.key === 'maxRelRms')?.limit ?? budget;
  return { role, status: violations.length ? 'fail' : 'pass', metrics, tolerance, violations, worst: worstBound(metrics, tolerance), budget, note };
}

/**
 * A kernel that chooses (router_select: the experts) and goes on to compute from its own choice (their
 * weights) cannot be fed the reference's choice between the two: where its choice differed at a near tie,
 * the stages it computed from it (router_w) are other experts' values, not an error of the kernel. Such an
 * own row is a near tie that follows that choice; the choice itself was judged as one.
 */
function followNearTieChoices(rows: Map<string, CompareRow>): void {
  for (const row of rows.values()) {
    const j = row.own;
    const def = canonical(row.stage);
    if (!j || j.status !== 'fail' || !def || j.metrics?.kind !== 'f32') continue;
    const choice = def.inputs.map((x) => canonical(x)).find((s) => s?.decision === 'selection' && s.kernel === def.kernel);
    const c = choice && rows.get(stageKey(choice.name, row.layer, row.pos))?.own;
    if (!c || c.status !== 'pass' || !c.metrics?.nearTies) continue;
    const others = j.violations.filter((v) => v.key !== 'maxRelRms');
    if (others.length) continue;
    // no budget: its error is another choice's, not a kernel's, and says nothing of how close the kernels came to theirs
    row.own = { ...j, status: 'pass', violations: [], budget: undefined, metrics: { ...j.metrics, nearTies: 1 }, note: `follows the near-tie choice of ${choice.name}` };
  }
}

/** Compares and judges. The reference sides and facts are held in memory; the candidates are streamed. */
export async function compare(p: Pairing, judge: Judge): Promise<Comparison> {
  const ref = await collect(p.reference);
  const ownRef = p.ownReference ? await collect(p.ownReference) : ref;
  const ownFacts = p.facts ?? new Map<string, RowFacts>();
  const freeFacts = p.freeFacts ?? (p.ownReference ? new Map<string, RowFacts>() : ownFacts);
  const rows = new Map<string, CompareRow>();
  const rowOf = (r: StageRecord): CompareRow => {
    const k = recordKey(r);
    let row = rows.get(k);
    if (!row) rows.set(k, (row = { stage: r.stage, layer: r.layer, pos: r.pos, token: r.token, known: canonical(r.stage) !== undefined, status: 'pass' }));
    if (row.token < 0) row.token = r.token;
    return row;
  };
  const pass = async (cand: Source | undefined, refs: Map<string, StageRecord>, facts: FactsMap, roleOf: (r: StageRecord) => Role, slot: 'free' | 'own') => {
    if (!cand) return;
    const seen = new Set<string>();
    for await (const rb of cand as AsyncIterable<StageRecord>) {
      const k = recordKey(rb);
      seen.add(k);
      const row = rowOf(rb);
      const ra = refs.get(k);
      if (!ra) {
        // a replay that could not recompute a row leaves its own error unknown (replay.json says why); any
        // other candidate row the reference lacks is a row on one side only
        if (!(slot === 'own' && p.ownReference)) row.missing = 'reference';
        continue;
      }
      const lookup = (s: StageId) => ({ rec: refs.get(stageKey(s, ra.layer, ra.pos)), facts: facts.get(stageKey(s, ra.layer, ra.pos)) });
      const derived = slot === 'own' ? p.derivedInputs?.[canonical(ra.stage)?.name ?? ''] : undefined;
      const statsOnly = isStatsOnly(ra) || isStatsOnly(rb);
      row[slot] = statsOnly ? judgeStats(roleOf(ra), canonical(ra.stage), ra, rb, facts.get(k), judge, derived) : judgePair(roleOf(ra), ra, rb, facts.get(k), judge, lookup, derived);
      if (slot === 'free') {
        row.sides = { a: statsOf(ra), b: statsOf(rb) };
        if (!statsOnly && ra.values.length === rb.values.length) row.worstAt = worstElement(ra.values, rb.values);
      }
    }
    for (const [k, ra] of refs) if (!seen.has(k)) rowOf(ra).missing ??= 'candidate';
  };
  const isLogits = (r: StageRecord) => canonical(r.stage)?.name === 'logits';
  await pass(p.free, ref, freeFacts, (r) => (isLogits(r) ? 'end-to-end' : 'inherited'), 'free');
  await pass(p.own, ownRef, ownFacts, () => 'own', 'own');
  followNearTieChoices(rows);
  const sorted = [...rows.values()].sort(compareKeys);
  for (const r of sorted) {
    const slots = [r.free, r.own].filter((j): j is Judged => j !== undefined);
    r.status = r.missing ? 'missing' : slots.some((j) => j.status === 'fail') ? 'fail' : slots.length && slots.every((j) => j.status === 'pass') ? 'pass' : 'unjudged';
  }
  return summarize(sorted, p.labels?.a ?? 'a', p.labels?.b ?? 'b', p.notes ?? []);
}

function compareKeys(x: CompareRow, y: CompareRow): number {
  const kx = graphOrderKey(x.stage, x.layer, x.pos), ky = graphOrderKey(y.stage, y.layer, y.pos);
  for (let i = 0; i < 4; i++) if (kx[i] !== ky[i]) return kx[i] - ky[i];
  // unknown stages (same key): by layer, then name
  return x.layer - y.layer || (x.stage < y.stage ? -1 : x.stage > y.stage ? 1 : 0);
}

const nearTiesOf = (j?: Judged) => (j?.metrics?.nearTies ?? 0);
/** A row's relative RMS error as a multiple of its own budget; a lower bound for a row compared by statistics. */
export const ratio = (j?: Judged): number | undefined =>
  !j?.budget ? undefined : j.metrics?.kind === 'f32' ? j.metrics.relRms / j.budget : j.byStats ? j.byStats.relRmsAtLeast / j.budget : undefined;
const maxOf = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));

/** Per-stage and per-layer summaries, the first failures and counts, from rows in graph order. */
export function summarize(rows: CompareRow[], a: string, b: string, notes: string[] = []): Comparison {
  const stages = new Map<string, StageSummary>();
  const layers = new Map<number, LayerSummary>();
  const counts = { rows: rows.length, compared: 0, failed: 0, missing: 0, unjudged: 0, nearTies: 0, own: 0, ownFailed: 0, byStats: 0 };
  for (const r of rows) {
    let s = stages.get(r.stage);
    if (!s) stages.set(r.stage, (s = { stage: r.stage, known: r.known, rows: 0, failed: 0, missing: 0, nearTies: 0, ownFailed: 0 }));
    let l = layers.get(r.layer);
    if (!l) layers.set(r.layer, (l = { layer: r.layer, rows: 0, failed: 0 }));
    s.rows++;
    l.rows++;
    if (r.missing) {
      s.missing++;
      counts.missing++;
    }
    if (r.free || r.own) counts.compared++;
    if (r.free?.byStats || r.own?.byStats) counts.byStats++;
    if (r.status === 'unjudged') counts.unjudged++;
    else if (r.status !== 'pass') {
      s.failed++;
      l.failed++;
      if (r.status === 'fail') counts.failed++;
      s.firstFailure ??= { layer: r.layer, pos: r.pos };
    }
    const ties = nearTiesOf(r.free) + nearTiesOf(r.own);
    s.nearTies += ties;
    counts.nearTies += ties;
    if (r.own && r.own.status !== 'undecided') {
      counts.own++;
      if (r.own.status === 'fail') {
        counts.ownFailed++;
        s.ownFailed++;
      }
      if (r.own.metrics) s.ownMetrics = s.ownMetrics && s.ownMetrics.kind === r.own.metrics.kind ? worstOf(s.ownMetrics, r.own.metrics) : (s.ownMetrics ?? r.own.metrics);
      s.ownRatio = maxOf(s.ownRatio, ratio(r.own));
      const before = l.ownRatio;
      l.ownRatio = maxOf(l.ownRatio, ratio(r.own));
      if (l.ownRatio !== before) l.worstStage = r.stage;
    }
    if (r.free) {
      if (r.free.metrics) s.metrics = s.metrics && s.metrics.kind === r.free.metrics.kind ? worstOf(s.metrics, r.free.metrics) : (s.metrics ?? r.free.metrics);
      s.driftRatio = maxOf(s.driftRatio, ratio(r.free));
      l.driftRatio = maxOf(l.driftRatio, ratio(r.free));
    }
    for (const j of [r.own, r.free]) if (j?.worst && (!s.worst || j.worst.severity > s.worst.severity)) s.worst = j.worst;
  }
  const firstFailure = rows.find((r) => r.status === 'fail' || r.status === 'missing');
  const firstOwnFailure = rows.find((r) => r.own?.status === 'fail');
  const firstDivergence = rows.find((r) => (ratio(r.free) ?? 0) > 1 || r.free?.status === 'fail');
  return {
    a, b, rows, firstFailure, firstOwnFailure, firstDivergence,
    // graph order of the stage itself, whatever position it first appears at (emission-only stages)
    stages: [...stages.values()].sort((x, y) => {
      const kx = graphOrderKey(x.stage, 0, 0), ky = graphOrderKey(y.stage, 0, 0);
      return kx[1] - ky[1] || kx[3] - ky[3] || (x.stage < y.stage ? -1 : x.stage > y.stage ? 1 : 0);
    }),
    layers: [...layers.values()].sort((x, y) => x.layer - y.layer),
    counts,
    pass: counts.failed === 0 && counts.missing === 0,
    notes,
  };
}

/** Notes when two dumps do not describe the same case. */
export function metaNotes(ma: DumpMeta, mb: DumpMeta, a: string, b: string): string[] {
  const notes: string[] = [];
  if (ma.modelFingerprint !== mb.modelFingerprint) notes.push(`model fingerprints differ: ${a} ${ma.modelFingerprint}, ${b} ${mb.modelFingerprint}`);
  if (JSON.stringify(ma.promptTokens) !== JSON.stringify(mb.promptTokens)) notes.push(`prompt tokens differ: ${a} [${ma.promptTokens}], ${b} [${mb.promptTokens}]`);
  return notes;
}

/** Compares two dump files: the second as a free-running candidate of the first. */
export async function compareFiles(fa: string, fb: string, judge: Judge): Promise<Comparison> {
  const [ma, mb] = await Promise.all([readDumpMeta(fa), readDumpMeta(fb)]);
  const notes = metaNotes(ma, mb, fa, fb);
  // a stage the candidate holds nowhere is one its producer does not dump (ds4 has no hook for it), not a
  // missing row: the reference's rows of it are left out, and said so; a gap inside a stage it does dump is missing
  const held = new Set<string>();
  for await (const r of iterateDump(fb)) held.add(canonical(r.stage)?.name ?? r.stage);
  const notHeld = new Set<string>();
  async function* reference(): AsyncGenerator<StageRecord> {
    for await (const r of iterateDump(fa)) {
      if (held.has(canonical(r.stage)?.name ?? r.stage)) yield r;
      else notHeld.add(r.stage);
    }
  }
  const c = await compare({ reference: reference(), free: iterateDump(fb), labels: { a: fa, b: fb }, notes }, judge);
  if (notHeld.size) c.notes.push(`${notHeld.size} stages of ${fa} that ${fb} holds nowhere were not compared: ${[...notHeld].join(', ')}`);
  return c;
}

/** The facts of records (reference/facts.ts): `-noise` records hold the noise, `-ties` records the decisions. */
export async function factsOf(noise: Source, ties: Source): Promise<FactsMap> {
  const facts: FactsMap = new Map();
  const at = (r: StageRecord): RowFacts => {
    const k = stageKey(canonical(r.stage)?.name ?? r.stage, r.layer, r.pos);
    let f = facts.get(k);
    if (!f) facts.set(k, (f = {}));
    return f;
  };
  // a stats capture writes a noise row as its parts' RMS (diff/stats.ts noiseSummaryRecord), read as a full row;
  // a noise row captured as statistics (by an earlier version) keeps one RMS over its parts
  for await (const r of noise as AsyncIterable<StageRecord>) {
    const f = at(r);
    if (isStatsOnly(r)) {
      f.noise = Float32Array.of(statsOf(r).rms);
      continue;
    }
    const v = r.values as Float32Array;
    if (r.shape.length === 2 && r.shape[0] === 2) {
      f.noise = v.subarray(0, r.shape[1]);
      f.approx = v.subarray(r.shape[1]);
    } else f.noise = v;
  }
  for await (const r of ties as AsyncIterable<StageRecord>) {
    // decisions are judged element by element, from full rows only
    if (isStatsOnly(r)) continue;
    const f = at(r);
    const v = r.values as Float32Array;
    if (r.shape.length === 2 && r.shape[0] === 2) {
      f.tie = v.subarray(0, r.shape[1]);
      f.step = v.subarray(r.shape[1]);
    } else f.gap = v[0];
  }
  return facts;
}

/** The inputs a replay side derived (its producer says so, diff/replay.ts), checked. */
function derivedInputsOf(meta: DumpMeta, file: string): DerivedInputs | undefined {
  const d = meta.producer.derivedInputs;
  if (d === undefined) return undefined;
  if (typeof d !== 'object' || d === null || Array.isArray(d) || Object.values(d).some((v) => !Array.isArray(v) || v.some((s) => !resolveStage(String(s))))) {
    throw badInput(`${file}: producer.derivedInputs must map stages to lists of registry stages`);
  }
  return d as DerivedInputs;
}

/** The facts of a run's reference side (or its replay), from its `-noise` / `-ties` sides. */
export function readFacts(noiseFile: string | undefined, tiesFile: string | undefined): Promise<FactsMap> {
  return factsOf(noiseFile ? iterateDump(noiseFile) : [], tiesFile ? iterateDump(tiesFile) : []);
}

/**
 * A run directory judged: the free-running device against the reference and, where the run has one, the
 * own error of every row — its teacher-forced pass (`device-teacher`, a `run`) or the reference replayed on
 * the device's own inputs (`replay`, an `engine` run) — with the facts the run's reference recorded.
 */
export async function compareRun(runDir: string, judge: Judge): Promise<Comparison> {
  const m = readManifest(runDir);
  await checkRunSides(runDir, m);
  const side = (s: string) => sidePath(runDir, m, s);
  const ref = side('reference');
  const dev = side('device');
  if (!ref || !dev) {
    throw new Ds4DiffError(`${runDir}: the run has no ${!ref ? "'reference'" : "'device'"} dump (manifest files: ${Object.keys(m.files).join(', ') || 'none'}); nothing to compare`, EXIT.cannotEvaluate);
  }
  const notes = metaNotes(await readDumpMeta(ref), await readDumpMeta(dev), 'reference', 'device');
  const refFacts = await readFacts(side('reference-noise'), side('reference-ties'));
  const teacher = side('device-teacher');
  const replay = side('replay');
  // own errors are judged against budgets from the facts of what they are compared with: without them every own
  // row would pass unjudged
  const own = teacher ? { side: 'device-teacher', facts: ['reference-noise', 'reference-ties'] } : replay ? { side: 'replay', facts: ['replay-noise', 'replay-ties'] } : undefined;
  const lacking = own?.facts.filter((f) => !side(f)) ?? [];
  if (own && lacking.length) throw badInput(`${runDir}: the run has an own-error side (${own.side}) but no ${lacking.join(' or ')} dump (manifest files: ${Object.keys(m.files).join(', ')}): its own errors have no budget; re-run it`);
  if (teacher) return compare({ reference: iterateDump(ref), free: iterateDump(dev), own: iterateDump(teacher), facts: refFacts, labels: { a: 'reference', b: 'device' }, notes }, judge);
  if (replay) {
    const facts = await readFacts(side('replay-noise'), side('replay-ties'));
    const derivedInputs = derivedInputsOf(await readDumpMeta(replay), replay);
    return compare({ reference: iterateDump(ref), free: iterateDump(dev), own: iterateDump(dev), ownReference: iterateDump(replay), facts, freeFacts: refFacts, derivedInputs, labels: { a: 'reference', b: 'device' }, notes }, judge);
  }
  notes.push('the run has no own-error side (device-teacher or replay): only the free-running rows are judged');
  return compare({ reference: iterateDump(ref), free: iterateDump(dev), facts: refFacts, labels: { a: 'reference', b: 'device' }, notes }, judge);
}
