// Statistics of a capture row, what a `stats` capture keeps instead of the values (issue 15: captures that
// scale), and what two rows' statistics can say about the error between them.
//
// A row's statistics (min, max, mean and RMS over its finite elements, NaN and ±Inf counts, a hash of the value
// bits) take ~80 bytes whatever the row's size. They bound the error between two rows from below:
//   rms(b − a) ≥ |rms(b) − rms(a)|      (the triangle inequality of the ℓ2 norm, both over n elements)
//   rms(b − a) ≥ |mean(b) − mean(a)|    (|mean(d)| ≤ rms(d))
//   max|b − a| ≥ |max(b) − max(a)|, |min(b) − min(a)|   (max b ≤ max a + max|d| and the converse)
//   rms(b − a) ≥ max|b − a| / √n
// so statistics can prove that a row is past a bound on its relative RMS or max-abs error, or (equal hashes)
// that the rows are identical — never that a row is within its budget. A row compared by statistics that they
// cannot decide is `undecided`: counted apart, never a pass (diff/gate.ts verdictOf says how many).
import type { RowStats, StageDef, StageId, StageRecord } from '../model/stages.ts';
import type { Judged } from './compare.ts';
import { ALWAYS, chainBound, ownBudget, severity, type Bound, type Judge, type Role, type RowFacts, type Tolerance, type Violation } from './judge.ts';

/** The statistics of a row's values: one pass, sums in f64, two 32-bit multiply-xorshift lanes for the hash. */
export function rowStats(values: Float32Array | Int32Array): RowStats {
  let min = Infinity, max = -Infinity, sum = 0, sumSq = 0, nan = 0, inf = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v !== v) nan++;
    else if (v === Infinity || v === -Infinity) inf++;
    else {
      if (v < min) min = v;
      if (v > max) max = v;
      sum += v;
      sumSq += v * v;
    }
  }
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  let h1 = 0x811c9dc5, h2 = 0x9747b28c ^ values.length;
  for (let i = 0; i < words.length; i++) {
    h1 = Math.imul(h1 ^ words[i], 0x01000193);
    h1 ^= h1 >>> 13;
    h2 = Math.imul(h2 ^ words[i], 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  const finite = values.length - nan - inf;
  const hex = (h: number) => (h >>> 0).toString(16).padStart(8, '0');
  return {
    n: values.length,
    min: finite ? min : NaN,
    max: finite ? max : NaN,
    mean: finite ? sum / finite : NaN,
    rms: finite ? Math.sqrt(sumSq / finite) : NaN,
    nan,
    inf,
    hash: hex(h1) + hex(h2),
  };
}

/** A record's statistics: the captured ones of a `stats` record, else computed from its values. */
export function statsOf(r: StageRecord): RowStats {
  return r.stats ?? rowStats(r.values);
}

export const isStatsOnly = (r: StageRecord): boolean => r.kind === 'stats';

/** The record a `stats` capture writes in place of `r`: no values, its shape and statistics. */
export function statsRecord(r: StageRecord): StageRecord {
  return { stage: r.stage, layer: r.layer, pos: r.pos, token: r.token, dtype: r.dtype, shape: r.shape, values: r.dtype === 'i32' ? new Int32Array(0) : new Float32Array(0), kind: 'stats', stats: statsOf(r) };
}

/**
 * The record a `stats` capture writes in place of a noise row (reference/facts.ts factRecords: |f64 twin − row|,
 * and under the Ascend math |approximation twin − row| as a second part, shape [2, n]): the RMS of each part, a
 * full row of shape [parts, 1]. A row judged by statistics reads its noise only through these RMS (judge.ts
 * ownBudget), so its budget is its full row's; one RMS over both parts would lose the approximation twin and
 * leave the Ascend kernels' worst-case bounds, wide enough to pass a 1 % kernel fault.
 */
export function noiseSummaryRecord(r: StageRecord): StageRecord {
  const parts = r.shape.length === 2 ? r.shape[0] : 1;
  const n = r.values.length / parts;
  const values = Float32Array.from({ length: parts }, (_, p) => rowStats(r.values.subarray(p * n, (p + 1) * n)).rms);
  return { stage: r.stage, layer: r.layer, pos: r.pos, token: r.token, dtype: r.dtype, shape: r.shape.length === 2 ? [parts, 1] : [1], values };
}

/** What a `stats` capture writes in place of a row of `side`: a noise side its parts' RMS, any other its statistics. */
export function statsCaptureRecord(side: string, r: StageRecord): StageRecord {
  return /-noise$/.test(side) && r.dtype === 'f32' ? noiseSummaryRecord(r) : statsRecord(r);
}

/** What two rows' statistics prove about the error between them (a from the reference side). */
export interface StatsEvidence {
  a: RowStats;
  b: RowStats;
  /** equal hashes of the value bits */
  identical: boolean;
  /** lower bounds: the true relative RMS / max-abs error is at least these */
  relRmsAtLeast: number;
  maxAbsAtLeast: number;
  /** non-finite elements where the other side is finite: at least this many, exactly this many when `nonFiniteExact` */
  nonFiniteAtLeast: number;
  nonFiniteExact: boolean;
}

export function statsEvidence(a: RowStats, b: RowStats): StatsEvidence {
  const identical = a.n === b.n && a.hash === b.hash;
  const nfA = a.nan + a.inf, nfB = b.nan + b.inf;
  // with no non-finite element on one side, every one on the other is a mismatch; else only the difference is sure
  const nonFiniteAtLeast = identical ? 0 : nfA === 0 || nfB === 0 ? nfA + nfB : Math.abs(a.nan - b.nan) + Math.abs(a.inf - b.inf);
  const nonFiniteExact = identical || nfA === 0 || nfB === 0;
  let maxAbs = 0, rmsDiff = 0;
  // the inequalities hold over the same elements: only when both sides are finite everywhere
  if (!identical && nfA === 0 && nfB === 0 && a.n > 0) {
    maxAbs = Math.max(Math.abs(b.max - a.max), Math.abs(b.min - a.min));
    rmsDiff = Math.max(Math.abs(b.rms - a.rms), Math.abs(b.mean - a.mean), maxAbs / Math.sqrt(a.n));
  }
  const relRmsAtLeast = rmsDiff === 0 ? 0 : a.rms === 0 ? Infinity : rmsDiff / a.rms;
  return { a, b, identical, relRmsAtLeast, maxAbsAtLeast: maxAbs, nonFiniteAtLeast, nonFiniteExact };
}

/** A bound decided by statistics: violated (proved), met (proved), or neither. */
function decide(b: Bound, e: StatsEvidence): 'violated' | 'met' | 'open' {
  if (e.identical) return 'met';
  if (b.key === 'maxNonFinite') return e.nonFiniteAtLeast > b.limit ? 'violated' : e.nonFiniteExact ? 'met' : 'open';
  if (b.key === 'maxRelRms') return e.relRmsAtLeast > b.limit ? 'violated' : 'open';
  if (b.key === 'maxAbs') return e.maxAbsAtLeast > b.limit ? 'violated' : 'open';
  return 'open';
}

/**
 * A row pair judged by statistics (either side captured as `stats`), in the role and against the bounds
 * diff/compare.ts would hold the full row to: the own row's arithmetic budget from its reference's RMS and its
 * noise's (a `stats` noise row holds only its RMS, compare.ts factsOf), a baseline's or policy's bounds on top.
 * Rows ending in a decision (codes on a grid) are never failed on a lower bound: a near-tie code flip moves their
 * statistics by a code step, which the full judge forgives element by element.
 */
export function judgeStats(role: Role, def: StageDef | undefined, ra: StageRecord, rb: StageRecord, facts: RowFacts | undefined, judge: Judge, derived: readonly string[] = []): Judged {
  const e = statsEvidence(statsOf(ra), statsOf(rb));
  if (e.a.n !== e.b.n) return { role, status: 'fail', tolerance: { bounds: [] }, violations: [{ key: 'shape', value: e.b.n, limit: e.a.n }], note: `shape [${ra.shape}] vs [${rb.shape}]`, byStats: e };
  let budget: number | undefined;
  let base: Tolerance = { bounds: [...ALWAYS] };
  if (role !== 'end-to-end' && def && ra.dtype === 'f32' && facts) {
    const device = chainBound([def.name, ...(role === 'own' ? derived : [])].map((s) => judge.deviceBound(s as StageId, ra.pos)));
    // ownBudget reads the reference and its noise only through their RMS: one-element arrays carry the statistics
    const b = ownBudget(Float32Array.of(e.a.rms), facts, device);
    budget = b.rel;
    if (role === 'own' && !def.decision) base = { bounds: [{ key: 'maxRelRms', limit: b.rel, from: b.from }, ...ALWAYS] };
  }
  const tolerance = judge.tolerance(role, ra.stage, ra.layer, ra.pos, base);
  if (role === 'own') budget = tolerance.bounds.find((b) => b.key === 'maxRelRms')?.limit ?? budget;
  const violations: Violation[] = [];
  let open = role === 'end-to-end' && !e.identical;
  for (const b of tolerance.bounds) {
    const d = decide(b, e);
    if (d === 'violated') violations.push({ key: b.key, value: b.key === 'maxNonFinite' ? e.nonFiniteAtLeast : b.key === 'maxAbs' ? e.maxAbsAtLeast : e.relRmsAtLeast, limit: b.limit });
    else if (d === 'open') open = true;
  }
  // a decision row's or a choice's own error is never decided by statistics (see above): open unless identical
  if (role === 'own' && (def?.decision || ra.dtype === 'i32') && !e.identical) open = true;
  const status = violations.length ? 'fail' : open ? 'undecided' : 'pass';
  const worst = violations[0] && { ...violations[0], severity: severity(violations[0].key, violations[0].value, violations[0].limit) };
  return { role, status, tolerance, violations, worst, budget, byStats: e, note: 'statistics only' };
}
