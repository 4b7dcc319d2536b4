// The diff engine: pair the records of two captures by (stage, layer, pos), compute the metrics of
// each pair, check them against the policy, and put the rows in graph order so the FIRST DIVERGENCE
// (the first row in graph order that exceeds its tolerance) points at the stage that broke first.
// `a` is always the reference side: relative errors, NMSE and KL are taken relative to it.
import { Ds4DiffError, EXIT } from '../model/errors.ts';
import { graphOrderKey, resolveStage } from '../model/stages.ts';
import { iterateDump, readDumpMeta, type DumpMeta } from './dump.ts';
import { readManifest, sidePath } from './manifest.ts';
import { checkRunSides } from './rundir.ts';
import { recordMetrics, worstOf, type Metrics } from './metrics.ts';
import { checkThresholds, minimumTolerance, nearTieMargin, thresholdsFor, worstMetric, type Policy, type Thresholds, type Violation } from './policy.ts';
import type { StageRecord } from '../model/stages.ts';

export type RowStatus = 'pass' | 'fail' | 'missing-a' | 'missing-b';

export interface CompareRow {
  stage: string;
  layer: number;
  pos: number;
  token: number;
  /** known to the registry (unknown names are kept under their own name and sorted last) */
  known: boolean;
  status: RowStatus;
  metrics?: Metrics;
  thresholds: Thresholds;
  violations: Violation[];
  /** the metric closest to (or furthest past) its limit */
  worst?: Violation & { severity: number };
  /** logits top-1 flip the reference scores as a near tie (reported, not failed) */
  nearTie?: boolean;
  /** shape/dtype disagreement and similar */
  note?: string;
  /** teacher-forced ("own") error of the same row, when the run has a device-teacher side */
  own?: { metrics?: Metrics; violations: Violation[]; pass: boolean; note?: string };
}

export interface StageSummary {
  stage: string;
  known: boolean;
  rows: number;
  failed: number;
  missing: number;
  nearTies: number;
  metrics?: Metrics;
  worst?: Violation & { severity: number };
  /** tightest thresholds every row of the stage would have passed (Polygraphy "minimum required tolerance") */
  minTolerance?: Thresholds;
  firstFailure?: { layer: number; pos: number };
  ownMetrics?: Metrics;
  ownFailed?: number;
}

export interface LayerSummary {
  layer: number;
  rows: number;
  failed: number;
  worstStage?: string;
  worstSeverity: number;
}

export interface Comparison {
  a: string;
  b: string;
  rows: CompareRow[];
  firstDivergence?: CompareRow;
  /** first row whose teacher-forced (own) error fails: the stage that is wrong by itself */
  firstOwnDivergence?: CompareRow;
  stages: StageSummary[];
  layers: LayerSummary[];
  counts: { rows: number; compared: number; failed: number; missing: number; nearTies: number };
  pass: boolean;
  notes: string[];
}

type Source = StageRecord[] | AsyncIterable<StageRecord>;

const keyOf = (r: { stage: string; layer: number; pos: number }) => `${r.stage}\u0000${r.layer}\u0000${r.pos}`;

function compareKeys(x: CompareRow, y: CompareRow): number {
  const kx = graphOrderKey(x.stage, x.layer, x.pos), ky = graphOrderKey(y.stage, y.layer, y.pos);
  for (let i = 0; i < 4; i++) if (kx[i] !== ky[i]) return kx[i] - ky[i];
  // unknown stages (same key): by layer, then name
  return x.layer - y.layer || (x.stage < y.stage ? -1 : x.stage > y.stage ? 1 : 0);
}

/** Metrics and verdict of one record pair under thresholds `t`. */
function pairVerdict(a: StageRecord, b: StageRecord, t: Thresholds): { metrics?: Metrics; violations: Violation[]; note?: string } {
  if (a.dtype !== b.dtype) return { violations: [{ threshold: 'dtype', value: 1, limit: 0 }], note: `dtype ${a.dtype} vs ${b.dtype}` };
  if (a.values.length !== b.values.length) {
    return { violations: [{ threshold: 'shape', value: b.values.length, limit: a.values.length }], note: `shape [${a.shape}] vs [${b.shape}]` };
  }
  const note = a.shape.join('x') !== b.shape.join('x') ? `shape [${a.shape}] vs [${b.shape}] (same element count, compared flat)` : undefined;
  const isLogits = resolveStage(a.stage)?.name === 'logits';
  const metrics = recordMetrics(a.values, b.values, { logits: isLogits, nearTieMargin: nearTieMargin(t) });
  return { metrics, violations: checkThresholds(metrics, t), note };
}

async function collect(src: Source): Promise<Map<string, StageRecord>> {
  const m = new Map<string, StageRecord>();
  for await (const r of src as AsyncIterable<StageRecord>) m.set(keyOf(r), r);
  return m;
}

/** Compares two captures. Side `a` is held in memory; side `b` is streamed. */
export async function compareDumps(a: Source, b: Source, policy: Policy, labels: { a?: string; b?: string } = {}): Promise<Comparison> {
  const left = await collect(a);
  const rows: CompareRow[] = [];
  for await (const rb of b as AsyncIterable<StageRecord>) {
    const t = thresholdsFor(policy, rb.stage, rb.layer, rb.pos);
    const known = resolveStage(rb.stage) !== undefined;
    const ra = left.get(keyOf(rb));
    if (!ra) {
      rows.push({ stage: rb.stage, layer: rb.layer, pos: rb.pos, token: rb.token, known, status: 'missing-a', thresholds: t, violations: [] });
      continue;
    }
    left.delete(keyOf(rb));
    const v = pairVerdict(ra, rb, t);
    rows.push(makeRow(ra, t, known, v));
  }
  for (const ra of left.values()) {
    rows.push({ stage: ra.stage, layer: ra.layer, pos: ra.pos, token: ra.token, known: resolveStage(ra.stage) !== undefined, status: 'missing-b', thresholds: thresholdsFor(policy, ra.stage, ra.layer, ra.pos), violations: [] });
  }
  left.clear();
  rows.sort(compareKeys);
  return summarize(rows, labels.a ?? 'a', labels.b ?? 'b');
}

function makeRow(ra: StageRecord, t: Thresholds, known: boolean, v: ReturnType<typeof pairVerdict>): CompareRow {
  const nearTie = v.metrics?.kind === 'f32' && v.metrics.logits?.verdict === 'near-tie' ? true : undefined;
  return {
    stage: ra.stage, layer: ra.layer, pos: ra.pos, token: ra.token, known,
    status: v.violations.length ? 'fail' : 'pass',
    metrics: v.metrics, thresholds: t, violations: v.violations,
    worst: v.metrics ? worstMetric(v.metrics, t) ?? undefined : { ...v.violations[0], severity: Infinity },
    nearTie, note: v.note,
  };
}

/** Builds the per-stage and per-layer summaries, first divergence and counts from sorted rows. */
export function summarize(rows: CompareRow[], a: string, b: string, notes: string[] = []): Comparison {
  const stages = new Map<string, StageSummary>();
  const layers = new Map<number, LayerSummary>();
  const counts = { rows: rows.length, compared: 0, failed: 0, missing: 0, nearTies: 0 };
  for (const r of rows) {
    let s = stages.get(r.stage);
    if (!s) stages.set(r.stage, (s = { stage: r.stage, known: r.known, rows: 0, failed: 0, missing: 0, nearTies: 0 }));
    let l = layers.get(r.layer);
    if (!l) layers.set(r.layer, (l = { layer: r.layer, rows: 0, failed: 0, worstSeverity: 0 }));
    s.rows++;
    l.rows++;
    if (r.status === 'missing-a' || r.status === 'missing-b') {
      s.missing++;
      counts.missing++;
      continue;
    }
    counts.compared++;
    if (r.status === 'fail') {
      s.failed++;
      l.failed++;
      counts.failed++;
      s.firstFailure ??= { layer: r.layer, pos: r.pos };
    }
    if (r.nearTie) {
      s.nearTies++;
      counts.nearTies++;
    }
    if (r.metrics) s.metrics = s.metrics && s.metrics.kind === r.metrics.kind ? worstOf(s.metrics, r.metrics) : (s.metrics ?? r.metrics);
    if (r.worst && (!s.worst || r.worst.severity > s.worst.severity)) s.worst = r.worst;
    if (r.worst && r.worst.severity > l.worstSeverity) {
      l.worstSeverity = r.worst.severity;
      l.worstStage = r.stage;
    }
    if (r.own?.metrics) {
      s.ownMetrics = s.ownMetrics && s.ownMetrics.kind === r.own.metrics.kind ? worstOf(s.ownMetrics, r.own.metrics) : (s.ownMetrics ?? r.own.metrics);
      s.ownFailed = (s.ownFailed ?? 0) + (r.own.pass ? 0 : 1);
    }
  }
  for (const s of stages.values()) if (s.metrics) s.minTolerance = minimumTolerance(s.metrics);
  const firstDivergence = rows.find((r) => r.status === 'fail');
  const firstOwnDivergence = rows.find((r) => r.own && !r.own.pass);
  return {
    a, b, rows, firstDivergence, firstOwnDivergence,
    // graph order of the stage itself, whatever position it first appears at (emission-only stages)
    stages: [...stages.values()].sort((x, y) => {
      const kx = graphOrderKey(x.stage, 0, 0), ky = graphOrderKey(y.stage, 0, 0);
      return kx[1] - ky[1] || kx[3] - ky[3] || (x.stage < y.stage ? -1 : x.stage > y.stage ? 1 : 0);
    }),
    layers: [...layers.values()].sort((x, y) => x.layer - y.layer),
    counts,
    pass: counts.failed === 0,
    notes,
  };
}

/** Notes when two dumps do not describe the same case (compared anyway; the gate refuses instead). */
export function metaNotes(ma: DumpMeta, mb: DumpMeta, a: string, b: string): string[] {
  const notes: string[] = [];
  if (ma.modelFingerprint !== mb.modelFingerprint) notes.push(`model fingerprints differ: ${a} ${ma.modelFingerprint}, ${b} ${mb.modelFingerprint}`);
  if (JSON.stringify(ma.promptTokens) !== JSON.stringify(mb.promptTokens)) notes.push(`prompt tokens differ: ${a} [${ma.promptTokens}], ${b} [${mb.promptTokens}]`);
  return notes;
}

/** Compares two dump files. */
export async function compareFiles(fa: string, fb: string, policy: Policy): Promise<Comparison> {
  const [ma, mb] = await Promise.all([readDumpMeta(fa), readDumpMeta(fb)]);
  const c = await compareDumps(iterateDump(fa), iterateDump(fb), policy, { a: fa, b: fb });
  c.notes.push(...metaNotes(ma, mb, fa, fb));
  return c;
}

/**
 * Compares a run directory: reference vs device (free-running, "inherited" error). If the run also has
 * a 'device-teacher' side (each stage fed the reference's inputs), each row also carries its own error,
 * so a stage that is wrong by itself is told apart from one that only inherits an upstream error.
 */
export async function compareRun(runDir: string, policy: Policy): Promise<Comparison> {
  const m = readManifest(runDir);
  const ref = sidePath(runDir, m, 'reference');
  const dev = sidePath(runDir, m, 'device');
  if (!ref || !dev) {
    throw new Ds4DiffError(`${runDir}: the run has no ${!ref ? "'reference'" : "'device'"} dump (manifest files: ${Object.keys(m.files).join(', ') || 'none'}); nothing to compare`, EXIT.cannotEvaluate);
  }
  await checkRunSides(runDir, m);
  const c = await compareDumps(iterateDump(ref), iterateDump(dev), policy, { a: 'reference', b: 'device' });
  c.notes.push(...metaNotes(await readDumpMeta(ref), await readDumpMeta(dev), 'reference', 'device'));
  const teacher = sidePath(runDir, m, 'device-teacher');
  if (!teacher) return c;
  const own = await compareDumps(iterateDump(ref), iterateDump(teacher), policy, { a: 'reference', b: 'device-teacher' });
  return withOwnErrors(c, own.rows);
}

/**
 * A comparison whose rows also carry their own (teacher-forced, or replayed) error: each row of `c` gets
 * the compared row of `own` at the same (stage, layer, pos), and the summaries are redone.
 */
export function withOwnErrors(c: Comparison, own: CompareRow[]): Comparison {
  const byKey = new Map(own.map((r) => [keyOf(r), r]));
  for (const r of c.rows) {
    const o = byKey.get(keyOf(r));
    if (o && (o.status === 'pass' || o.status === 'fail')) r.own = { metrics: o.metrics, violations: o.violations, pass: o.status === 'pass', note: o.note };
  }
  return summarize(c.rows, c.a, c.b, c.notes);
}
