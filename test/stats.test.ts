// Rows compared by statistics (diff/stats.ts): what a row's statistics prove about the error between two rows
// (lower bounds, identity), how the judge uses them (a proved failure fails, an unproved row is undecided, never
// a pass), and what the verdict says about rows it could only see through their statistics.
import { describe, expect, it } from 'vitest';
import { compare, factsOf as readFacts } from '../diff/compare.ts';
import { makeJudge, verdictOf } from '../diff/gate.ts';
import type { RowFacts } from '../diff/judge.ts';
import { f32Metrics } from '../diff/metrics.ts';
import { rowStats, statsCaptureRecord, statsEvidence, statsRecord } from '../diff/stats.ts';
import { stageKey, type StageRecord } from '../model/stages.ts';

const rec = (stage: string, values: ArrayLike<number>, pos = 0, layer = 0): StageRecord => ({ stage, layer, pos, token: 3, dtype: 'f32', shape: [values.length], values: Float32Array.from(values) });

// a deterministic pseudo-random stream (no Math.random: a failing case must reproduce)
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}

describe('row statistics', () => {
  it('are min, max, mean and RMS over the finite values, NaN and ±Inf counted apart, and a hash of the bits', () => {
    const s = rowStats(Float32Array.of(1, -2, NaN, Infinity, 3, -Infinity));
    expect(s).toMatchObject({ n: 6, min: -2, max: 3, mean: 2 / 3, nan: 1, inf: 2 });
    expect(s.rms).toBeCloseTo(Math.sqrt(14 / 3), 12);
    expect(rowStats(Float32Array.of(1, -2, NaN, Infinity, 3, -Infinity)).hash).toBe(s.hash);
    // -0 and 0 are equal values but different bits: the hash sees the bits
    expect(rowStats(Float32Array.of(0, 1)).hash).not.toBe(rowStats(Float32Array.of(-0, 1)).hash);
    expect(rowStats(Float32Array.of(1, 2)).hash).not.toBe(rowStats(Float32Array.of(2, 1)).hash);
    expect(rowStats(Int32Array.of(5, 7))).toMatchObject({ n: 2, min: 5, max: 7, mean: 6 });
  });

  it('bound the error from below: never above the true relative RMS or max-abs error', () => {
    const next = lcg(15);
    for (let t = 0; t < 300; t++) {
      const n = 1 + Math.floor(((next() + 1) / 2) * 200);
      const a = Float32Array.from({ length: n }, () => next() * 3);
      // perturbations of every kind a kernel makes: noise, a bias, a scale, one element off, a permutation
      const kind = t % 5;
      const b = Float32Array.from(a, (v, i) => (kind === 0 ? v + 1e-3 * next() : kind === 1 ? v + 0.01 : kind === 2 ? v * 1.001 : kind === 3 ? (i === 0 ? v + 1 : v) : a[(i + 1) % n]));
      const e = statsEvidence(rowStats(a), rowStats(b));
      const m = f32Metrics(a, b);
      expect(e.relRmsAtLeast).toBeLessThanOrEqual(m.relRms * (1 + 1e-9) + 1e-12);
      expect(e.maxAbsAtLeast).toBeLessThanOrEqual(m.maxAbs * (1 + 1e-9) + 1e-12);
      expect(e.identical).toBe(m.maxAbs === 0 && a.every((v, i) => Object.is(v, b[i])));
    }
  });

  it('count non-finite mismatches exactly when one side has none, and at least the difference otherwise', () => {
    expect(statsEvidence(rowStats(Float32Array.of(1, 2, 3)), rowStats(Float32Array.of(1, NaN, Infinity)))).toMatchObject({ nonFiniteAtLeast: 2, nonFiniteExact: true });
    expect(statsEvidence(rowStats(Float32Array.of(NaN, 2, 3)), rowStats(Float32Array.of(1, NaN, NaN)))).toMatchObject({ nonFiniteAtLeast: 1, nonFiniteExact: false });
  });
});

describe('judged by statistics', () => {
  const values = Array.from({ length: 64 }, (_, i) => Math.cos(i) + 0.1);
  const noise = (v: number[]) => Float32Array.from(v, (x) => 1e-7 * Math.abs(x));
  const judge = makeJudge({ deviceBound: () => ({ rel: 1e-6, from: 'test 1e-6' }) });
  const factsOf = (rows: StageRecord[]) => new Map<string, RowFacts>(rows.map((r) => [stageKey(r.stage, r.layer, r.pos), { noise: noise([...r.values]) }]));

  it('an own row whose statistics prove it past its budget fails; one they cannot decide is undecided, never a pass', async () => {
    const ref = [rec('attn_norm', values), rec('ffn_norm', values), rec('q_norm', values), rec('logits', values, 0, 6)];
    const own = [rec('attn_norm', values.map((v) => v + 0.01)), rec('ffn_norm', values.map((v, i) => (i === 5 ? v + 1e-6 : v))), rec('q_norm', values), rec('logits', values, 0, 6)];
    const stats = (rs: StageRecord[]) => rs.map((r) => (r.stage === 'logits' ? r : statsRecord(r)));
    const c = await compare({ reference: stats(ref), free: stats(own), own: stats(own), facts: factsOf(ref) }, judge);
    const row = (s: string) => c.rows.find((r) => r.stage === s)!;
    expect(row('attn_norm').own!.status).toBe('fail');
    expect(row('attn_norm').own!.violations[0].key).toBe('maxRelRms');
    expect(row('ffn_norm').own!.status).toBe('undecided');
    expect(row('ffn_norm').status).toBe('unjudged');
    expect(row('q_norm').own!.status).toBe('pass'); // identical bits: proved
    expect(c.firstOwnFailure?.stage).toBe('attn_norm');
    // judged by their own error: attn_norm (failed), q_norm (identical), the logits in full; not ffn_norm
    expect(c.counts).toMatchObject({ byStats: 3, own: 3, ownFailed: 1 });
    expect(verdictOf(c).line).toMatch(/^FAIL: attn_norm layer 0 pos 0 is wrong by itself: own error relRms at least .* \(statistics only\)/);
  });

  it('the verdict names the rows it saw only through statistics, and is no verdict when nothing else was judged', async () => {
    const ref = [rec('attn_norm', values), rec('ffn_norm', values)];
    const own = [rec('attn_norm', values.map((v, i) => (i === 3 ? v + 1e-6 : v))), rec('ffn_norm', values)];
    const full = await compare({ reference: ref, free: own, own, facts: factsOf(ref) }, judge);
    expect(verdictOf(full).status).toBe('pass');
    // the same rows captured as statistics: the one that differs is undecided, and without an end result
    // or any own row judged in full, the run has no verdict
    const s = await compare({ reference: ref.map(statsRecord), free: own.map(statsRecord), own: own.map(statsRecord), facts: factsOf(ref) }, judge);
    expect(s.counts).toMatchObject({ byStats: 2, own: 1, unjudged: 1 });
    const v = verdictOf(s);
    expect(v.line).toMatch(/^PASS: every kernel within its own budget \(1 rows, .*; 1 rows compared by statistics only, undecided \(capture them in full to judge them\)\)/);
    const onlyUndecided = await compare({ reference: [statsRecord(ref[0])], free: [statsRecord(own[0])], own: [statsRecord(own[0])], facts: factsOf(ref) }, judge);
    expect(verdictOf(onlyUndecided)).toMatchObject({ status: 'cannot-evaluate', exitCode: 125 });
  });

  it('a row judged by statistics gets the budget its full row would get (ownBudget reads the RMS of the row and of its noise)', async () => {
    const ref = [rec('attn_norm', values)];
    const own = [rec('attn_norm', values.map((v) => v + 0.01))];
    const full = await compare({ reference: ref, own, facts: factsOf(ref) }, judge);
    const byStats = await compare({ reference: ref.map(statsRecord), own: own.map(statsRecord), facts: new Map([[stageKey('attn_norm', 0, 0), { noise: Float32Array.of(rowStats(noise(values)).rms) }]]) }, judge);
    expect(byStats.rows[0].own!.budget).toBeCloseTo(full.rows[0].own!.budget!, 12);
  });

  it('a stats capture keeps each part of a noise row (f64 twin, approximation twin): under the Ascend math its row gets its full row\'s budget', async () => {
    const ascend = makeJudge({ deviceBound: () => ({ rel: 1e-2, from: 'worst case 1e-2', exact: { rel: 1e-6, from: 'exact 1e-6' } }) });
    const ref = [rec('attn_norm', values)];
    const own = [rec('attn_norm', values.map((v) => v * 1.005))];
    const n = values.length;
    const twin = Float32Array.from({ length: 2 * n }, (_, i) => (i < n ? 1e-8 : 1e-5) * Math.abs(values[i % n]));
    const noiseRow: StageRecord = { ...rec('attn_norm', []), shape: [2, n], values: twin };
    const full = await compare({ reference: ref, own, facts: await readFacts([noiseRow], []) }, ascend);
    const summary = statsCaptureRecord('reference-noise', noiseRow);
    expect(summary.kind).toBeUndefined();
    const byStats = await compare({ reference: ref.map(statsRecord), own: own.map(statsRecord), facts: await readFacts([summary], []) }, ascend);
    // the same budget up to the f32 rounding of the parts' RMS
    expect(byStats.rows[0].own!.budget! / full.rows[0].own!.budget!).toBeCloseTo(1, 6);
    // a 0.5 % error is past that budget: proved by the statistics alone
    expect([full.rows[0].own!.status, byStats.rows[0].own!.status]).toEqual(['fail', 'fail']);
    // any other side keeps statistics
    expect(statsCaptureRecord('device', own[0]).kind).toBe('stats');
  });

  it('a decision row (codes on a grid) is never failed on a lower bound: a near-tie flip moves its statistics too', async () => {
    const ref = [rec('kv_cur', values)];
    const own = [rec('kv_cur', values.map((v, i) => (i === 0 ? v * 1.06 : v)))];
    const c = await compare({ reference: ref.map(statsRecord), own: own.map(statsRecord), facts: factsOf(ref) }, judge);
    expect(c.rows[0].own!.status).toBe('undecided');
  });
});
