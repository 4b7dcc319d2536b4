// Every metric against values computed by hand from its definition (diff/metrics.ts header).
import { describe, expect, it } from 'vitest';
import { ALWAYS, check, severity, worstBound, type Tolerance } from '../diff/judge.ts';
import { f32Metrics, i32Metrics, klSoftmax, logitsMetrics, topK, worstOf, type F32Metrics } from '../diff/metrics.ts';
import { applyPolicy, loadPolicy, type Policy } from '../diff/policy.ts';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const f = (...v: number[]) => Float32Array.from(v);
const DENORM_MIN = 2 ** -149;

describe('f32 metrics', () => {
  it('matches hand-computed values for a one-element error', () => {
    // a = [1,2,3,4], b = [1,2,3,5]: the difference is [0,0,0,1]
    const m = f32Metrics(f(1, 2, 3, 4), f(1, 2, 3, 5));
    expect(m.n).toBe(4);
    expect(m.maxAbs).toBe(1);
    expect(m.meanAbs).toBe(0.25);
    expect(m.rms).toBe(0.5); // sqrt(1/4)
    expect(m.maxRel).toBe(0.25); // 1/4
    expect(m.ratio1e3).toBe(0.75); // three of four elements have rel err 0
    expect(m.ratio5e3).toBe(0.75);
    expect(m.cosine).toBeCloseTo(34 / Math.sqrt(30 * 39), 14); // a.b = 34, |a|^2 = 30, |b|^2 = 39
    expect(m.nmse).toBeCloseTo(1 / 30, 15);
    expect(m.relDiff).toBeCloseTo(1 / 69, 15); // 1 - 68/69
    expect(m.sqnrDb).toBeCloseTo(10 * Math.log10(30), 12);
    // 4.0f = 0x40800000, 5.0f = 0x40a00000: 0x200000 ulps apart
    expect(m.ulpMax).toBe(0x200000);
    expect(m.ulpMean).toBe(0x200000 / 4);
    expect(m.nonFiniteMismatch).toBe(0);
  });

  it('relative-error ratios split at 0.001 and 0.005 (strictly below, as msprobe)', () => {
    // rel errors: 0.0005, 0.002, 0.004, 0.01
    const m = f32Metrics(f(1000, 1000, 1000, 1000), f(1000.5, 1002, 1004, 1010));
    expect(m.ratio1e3).toBe(0.25);
    expect(m.ratio5e3).toBe(0.75);
    expect(m.maxRel).toBeCloseTo(0.01, 12);
  });

  it('zero vectors: cosine 1 for two zeros, 0 for zero vs nonzero', () => {
    const z = f32Metrics(f(0, 0, 0), f(0, 0, 0));
    expect([z.cosine, z.nmse, z.relDiff, z.sqnrDb, z.maxRel, z.maxAbs]).toEqual([1, 0, 0, Infinity, 0, 0]);
    const zn = f32Metrics(f(0, 0), f(1, 0));
    expect(zn.cosine).toBe(0);
    expect(zn.nmse).toBe(Infinity);
    expect(zn.maxRel).toBe(Infinity);
    expect(zn.relDiff).toBe(1); // 1 - 0 / (0 + 1)
    expect(zn.sqnrDb).toBe(-Infinity);
    expect(zn.ratio1e3).toBe(0.5);
    const nz = f32Metrics(f(1, 0), f(0, 0));
    expect(nz.cosine).toBe(0);
    expect(nz.nmse).toBe(1);
  });

  it('+0 and -0 are equal, 0 ulps apart', () => {
    const m = f32Metrics(f(0), f(-0));
    expect(m.maxAbs).toBe(0);
    expect(m.ulpMax).toBe(0);
  });

  it('denormals count as ordinary steps', () => {
    const m = f32Metrics(f(DENORM_MIN, 0), f(2 * DENORM_MIN, 0));
    expect(m.maxAbs).toBe(DENORM_MIN);
    expect(m.ulpMax).toBe(1);
    expect(m.maxRel).toBe(1);
    // smallest denormal vs its negative: two steps through zero
    expect(f32Metrics(f(DENORM_MIN), f(-DENORM_MIN)).ulpMax).toBe(2);
    // 1 and the next float up
    expect(f32Metrics(f(1), f(1 + 2 ** -23)).ulpMax).toBe(1);
  });

  it('NaN/Inf: matching non-finite pairs are counted and excluded, mismatches always fail', () => {
    const m = f32Metrics(f(NaN, Infinity, 1, 2), f(NaN, Infinity, 1, 3));
    expect([m.nanA, m.infA, m.nanB, m.infB, m.nonFiniteMismatch, m.n, m.maxAbs]).toEqual([1, 1, 1, 1, 0, 2, 1]);
    const bad = f32Metrics(f(1, Infinity, 5), f(NaN, -Infinity, 5));
    expect(bad.nonFiniteMismatch).toBe(2);
    expect(bad.nanB).toBe(1);
    expect(bad.infA).toBe(1);
    expect(bad.maxAbs).toBe(0);
    // the judge's standing bound on every row reads it
    expect(check(bad, { bounds: ALWAYS }).map((v) => v.key)).toEqual(['maxNonFinite']);
    expect(check(m, { bounds: ALWAYS })).toEqual([]);
  });
});

describe('i32 metrics', () => {
  it('exact match and set overlap', () => {
    const perm = i32Metrics(Int32Array.of(1, 2, 3), Int32Array.of(1, 3, 2));
    expect(perm).toEqual({ kind: 'i32', n: 3, mismatches: 2, exact: false, setOverlap: 1 });
    const one = i32Metrics(Int32Array.of(1, 2, 3), Int32Array.of(1, 2, 4));
    expect(one.mismatches).toBe(1);
    expect(one.setOverlap).toBeCloseTo(2 / 3, 15);
    expect(i32Metrics(Int32Array.of(7, 8), Int32Array.of(7, 8)).exact).toBe(true);
    expect(check(perm, { bounds: [{ key: 'minSetOverlap', limit: 1, from: 'test' }] })).toEqual([]);
    expect(check(one, { bounds: [{ key: 'minSetOverlap', limit: 1, from: 'test' }] }).map((v) => v.key)).toEqual(['minSetOverlap']);
  });
});

describe('logits metrics', () => {
  it('top-k is ordered, ties to the lowest index', () => {
    expect(topK(f(1, 5, 5, 3, 9), 3)).toEqual([4, 1, 2]);
    expect(topK(f(NaN, 1), 1)).toEqual([1]);
  });

  it('KL of softmaxes by hand', () => {
    // P = (1/2, 1/2), Q = softmax(0, ln 3) = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    expect(klSoftmax(f(0, 0), f(0, Math.log(3)))).toBeCloseTo(0.5 * Math.log(4 / 3), 6);
    expect(klSoftmax(f(1, 2, 3), f(1, 2, 3))).toBe(0);
  });

  it('the reference margin of a top-1 flip, overlaps, and |Δp| of the reference top-1', () => {
    const tie = logitsMetrics(f(1, 3, 2.95, 0), f(1, 2.9, 2.96, 0));
    expect(tie.argmaxA).toBe(1);
    expect(tie.argmaxB).toBe(2);
    expect(tie.argmaxMatch).toBe(false);
    expect(tie.flipMargin).toBeCloseTo(0.05, 6);
    const flip = logitsMetrics(f(1, 3, 2, 0), f(1, 2, 2.5, 0));
    expect(flip.flipMargin).toBe(1);
    const same = logitsMetrics(f(0, 1, 2, 3, 4, 5, 6), f(0, 1, 2, 3, 4, 6, 5));
    expect(same.top5Overlap).toBe(1); // same five tokens, different order
    // Δp: softmax(0, ln 3) = (1/4, 3/4) against (1/2, 1/2): the reference top-1 (token 1) drops from 3/4 to 1/2
    expect(logitsMetrics(f(0, Math.log(3)), f(0, 0)).deltaP).toBeCloseTo(0.25, 6);
    expect(logitsMetrics(f(0, 0), f(0, Math.log(3))).deltaP).toBeCloseTo(0.25, 6); // |Δp|: a rise counts too
    expect(logitsMetrics(f(1, 2), f(1, 2)).deltaP).toBe(0);
  });
});

describe('aggregation and tolerances', () => {
  it('worst-of keeps the worst of each metric and sums counts', () => {
    const x = f32Metrics(f(1, 2), f(1, 2.5));
    const y = f32Metrics(f(1, 2), f(-1, 2));
    const w = worstOf<F32Metrics>(x, y);
    expect(w.n).toBe(4);
    expect(w.maxAbs).toBe(2);
    expect(w.cosine).toBe(Math.min(x.cosine, y.cosine));
    expect(w.ratio1e3).toBe(0.5);
  });

  it('policy rules apply in order by glob, regex, layer range and role; later bounds replace earlier ones', () => {
    const base: Tolerance = { bounds: [{ key: 'maxRelRms', limit: 1e-5, from: 'arithmetic' }] };
    const p: Policy = { version: 2, file: 'p.json', rules: [{ stage: 'q_*', layers: '0:3', maxAbs: 0.5 }, { stage: '/^q_r/', minCosine: 0.9 }, { stage: 'q_rope', layers: '2', maxAbs: 0.7 }, { stage: 'q_rope', role: 'own', maxRelRms: 1e-3 }] };
    const bound = (t: Tolerance, key: string) => t.bounds.find((b) => b.key === key);
    expect(bound(applyPolicy(p, 'inherited', 'q_rope', 0, 0, base), 'maxAbs')!.limit).toBe(0.5);
    expect(bound(applyPolicy(p, 'inherited', 'q_rope', 2, 0, base), 'maxAbs')).toEqual({ key: 'maxAbs', limit: 0.7, from: 'policy p.json rule 2' });
    expect(bound(applyPolicy(p, 'inherited', 'q_rope', 4, 0, base), 'maxAbs')).toBeUndefined(); // outside 0:3
    expect(bound(applyPolicy(p, 'inherited', 'q_rope', 4, 0, base), 'minCosine')!.limit).toBe(0.9);
    expect(bound(applyPolicy(p, 'inherited', 'q_lora', 1, 0, base), 'minCosine')).toBeUndefined();
    // the own-only rule replaces the arithmetic bound on own rows and leaves other roles alone
    expect(bound(applyPolicy(p, 'own', 'q_rope', 5, 0, base), 'maxRelRms')).toEqual({ key: 'maxRelRms', limit: 1e-3, from: 'policy p.json rule 3' });
    expect(bound(applyPolicy(p, 'inherited', 'q_rope', 5, 0, base), 'maxRelRms')!.limit).toBe(1e-5);
    expect(applyPolicy(undefined, 'own', 'q_rope', 0, 0, base)).toBe(base);
  });

  it('policy files are validated with a one-line error', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-policy-'));
    const file = path.join(dir, 'p.json');
    const write = (rules: unknown, version = 2) => fs.writeFileSync(file, JSON.stringify({ version, rules }));
    write([{ stage: 'x', maxAbz: 1 }]);
    expect(() => loadPolicy(file)).toThrow(/unknown bound 'maxAbz'/);
    write([{ stage: 'x', layers: '3:a' }]);
    expect(() => loadPolicy(file)).toThrow(/bad range/);
    write([{ stage: 'x', role: 'free' }]);
    expect(() => loadPolicy(file)).toThrow(/role must be own, inherited or end-to-end/);
    write([{ stage: 'x', maxAbs: 1 }], 1);
    expect(() => loadPolicy(file)).toThrow(/policy version 1 is not supported/);
    // a bound no row could meet is a mistake, not a policy: a negative error, a cosine above 1, a negative near tie
    write([{ stage: 'q_*', role: 'own', maxRelRms: -1 }]);
    expect(() => loadPolicy(file)).toThrow(/rule 0 \(q_\*\): 'maxRelRms' is -1, must be at least 0 \(no row could meet it\)$/);
    write([{ stage: 'x', minCosine: 1.5 }]);
    expect(() => loadPolicy(file)).toThrow(/'minCosine' is 1.5, must be at most 1/);
    write([{ stage: 'x', nearTie: -0.1 }]);
    expect(() => loadPolicy(file)).toThrow(/'nearTie' is -0.1, must be at least 0/);
    write([{ stage: 'x', minSqnrDb: -20, maxClearFlips: 0 }]);
    expect(loadPolicy(file).rules).toHaveLength(1);
    write([{ stage: 'attn_*', maxAbs: 2 }]);
    expect(applyPolicy(loadPolicy(file), 'inherited', 'attn_norm', 0, 0, { bounds: [] }).bounds[0].limit).toBe(2);
    fs.rmSync(dir, { recursive: true });
  });

  it('bounds check the metric they name; severity and the worst bound name the closest limit', () => {
    const m = f32Metrics(f(1, 2, 3, 4), f(1, 2, 3, 5));
    const t = (bounds: Array<[string, number]>): Tolerance => ({ bounds: bounds.map(([key, limit]) => ({ key: key as never, limit, from: 'test' })) });
    expect(check(m, t([['maxAbs', 1], ['maxRelRms', Math.sqrt(1 / 30)]]))).toEqual([]);
    expect(check(m, t([['maxAbs', 0.999]])).map((v) => v.key)).toEqual(['maxAbs']);
    expect(m.relRms).toBeCloseTo(Math.sqrt(1 / 30), 15);
    expect(severity('maxAbs', 0.5, 1)).toBe(0.5);
    // quadratic metrics (1 - cosine, NMSE, KL) are compared on the error's scale: the square root of the ratio
    expect(severity('minCosine', 0.998, 0.999)).toBeCloseTo(Math.SQRT2, 9); // gap 0.002 of an allowed 0.001
    expect(severity('maxNmse', 4e-6, 1e-6)).toBeCloseTo(2, 12);
    expect(severity('maxKl', 4e-2, 1e-2)).toBeCloseTo(2, 12);
    // maxAbs uses 1/2 of its limit; cosine 34/sqrt(1170) = 0.99400 uses 0.600 of the allowed 0.01 gap: sqrt = 0.775
    const w = worstBound(m, t([['maxAbs', 2], ['minCosine', 0.99]]))!;
    expect(w.key).toBe('minCosine');
    expect(w.severity).toBeCloseTo(Math.sqrt((1 - 34 / Math.sqrt(1170)) / 0.01), 9);
    expect(worstBound(m, t([['maxAbs', 1.2], ['minCosine', 0.99]]))!.key).toBe('maxAbs'); // 0.833 > 0.775
  });
});
