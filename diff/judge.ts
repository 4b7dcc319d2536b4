// The judge: how a row is found right or wrong, in one place for every command (run, gate, compare,
// engine, replay, bisect).
//
// A row is judged in one of three roles:
//   own         the candidate computed this stage from the reference's inputs (the device's teacher-forced
//               pass) or the reference recomputed it from the candidate's inputs (replay): the error of the
//               kernel that produced it, nothing inherited. Every own row is judged against a budget derived
//               from the arithmetic (ownBudget): a correct kernel errs by about as much as the reference's
//               own float rounding on those inputs, plus what its stated device math adds.
//   inherited   the free-running candidate (it consumed its own outputs): accumulated error. Reported — the
//               first row past its own budget is where drift starts — but it fails only on bounds a baseline
//               or policy sets for it explicitly (e.g. a published free-running envelope).
//   end-to-end  the free-running logits: KL of the softmaxes, top-1 (near-tie aware) and Δp, as
//               llama-perplexity's KL-divergence mode judges a quantized model.
// Quantized outputs and choices are judged in code steps: an FP8/FP4/f16 code, an expert or an indexer
// row, a top-1 token may differ only where the reference's value before the decision lay within the
// kernel's budget of the decision boundary (a near tie, reported), never elsewhere.
import type { StageId } from '../model/stages.ts';
import type { Metrics } from './metrics.ts';

/**
 * The margin between a correct kernel's own error and the reference's rounding noise on the same inputs
 * (PyTorch dynamo's `same()`: RMSE(result, fp64) ≤ m·RMSE(ref, fp64), m = 2..10). Two independent f32
 * evaluations of one formula differ by up to ~2× either's rounding error; a row's noise is one realization
 * (rows of 4 values scatter by ~3× between realizations), so 10 covers both with room. Measured on the tiny
 * model in exact kernel math, teacher-forced own error / noise stays ≤ 8 before any device-math allowance.
 */
export const NOISE_MARGIN = 10;

/**
 * The margin between a row's own error under the Ascend kernels' approximations and what the approximation
 * twin (the reference's step with the same exp, rsqrt and log, reference/math.ts) says they do to it. The twin
 * applies them to ds4's formulas, a kernel to its own arrangement of them (1/(1+exp(-x)) against ds4's
 * stable sigmoid, its own softmax order): to first order the same error, so 2 leaves the second order room.
 */
export const APPROX_MARGIN = 2;

/** The rounding noise of a row is never taken below one f32 unit roundoff (2^-24): a stage the reference
 *  computes exactly (a copy, an embedding lookup) may still be computed with one rounding on the device. */
export const F32_UNIT = 2 ** -24;

/**
 * End-to-end budget of the free-running logits, per evaluated position. A backend computing the same
 * quantized model differs from the reference only by arithmetic drift, but free-running that drift is
 * chaotic wherever the model decides at a near tie (an FP8 code, an expert, an indexer row): per-position KL
 * on clean runs has a long tail — 80 clean runs of the bundled tiny model (40 prompts × both kernel maths, all
 * layers) reached 0.032 nats. 0.1 nats leaves that tail room; a kernel wrong by itself fails on its own error
 * long before. A top-1 flip passes only as a near tie: the reference's margin between the two tokens within
 * what a drift inside the KL budget can close (topFlipTie; at least 0.1 logit) — a fixed 0.1 failed 1 of 40
 * clean generated runs on the flat tiny model (margin 0.59, KL 0.03); |Δp|, the change of the reference
 * top-1's probability, at most 0.05. A baseline of the case tightens these (diff/baseline.ts), and with
 * the KL bound the near tie.
 */
export const END_TO_END = { maxKl: 0.1, nearTieLogit: 0.1, maxDeltaP: 0.05 } as const;

export type Role = 'own' | 'inherited' | 'end-to-end';

/** The bound keys: each names the metric it bounds and the direction. */
export const BOUND_KEYS = {
  maxRelRms: ['relRms', 'max'],
  maxAbs: ['maxAbs', 'max'],
  meanAbs: ['meanAbs', 'max'],
  maxRel: ['maxRel', 'max'],
  minCosine: ['cosine', 'min'],
  maxNmse: ['nmse', 'max'],
  maxRelDiff: ['relDiff', 'max'],
  minSqnrDb: ['sqnrDb', 'min'],
  maxUlp: ['ulpMax', 'max'],
  minRatio1e3: ['ratio1e3', 'min'],
  minRatio5e3: ['ratio5e3', 'min'],
  minSetOverlap: ['setOverlap', 'min'],
  maxKl: ['kl', 'max'],
  maxDeltaP: ['deltaP', 'max'],
  minTop5Overlap: ['top5Overlap', 'min'],
  /** codes, ids or a top-1 token that differ where the reference was not at a near tie */
  maxClearFlips: ['clearFlips', 'max'],
  /** non-finite values where the other side is finite */
  maxNonFinite: ['nonFiniteMismatch', 'max'],
} as const;
export type BoundKey = keyof typeof BOUND_KEYS;

/** One limit on one metric, and why it is what it is. */
export interface Bound {
  key: BoundKey;
  limit: number;
  /** where the limit comes from: `arithmetic: ...`, `baseline FILE`, `policy FILE rule N`, `end-to-end budget` */
  from: string;
}

/** What a row is held to: its bounds, and the distance from a decision boundary that counts as a near tie. */
export interface Tolerance {
  bounds: Bound[];
  /** rounding / selection / top-1 decisions: a flip is a near tie where the reference's value before the
   *  decision was within this of the boundary (absolute, in the deciding values' units) */
  tie?: number;
}

export interface Violation {
  key: BoundKey | 'dtype' | 'shape';
  value: number;
  limit: number;
}

/** Set a bound, replacing one on the same key (later sources override earlier ones). */
export function withBound(t: Tolerance, b: Bound): Tolerance {
  return { ...t, bounds: [...t.bounds.filter((x) => x.key !== b.key), b] };
}

/** The value a bound reads from a row's metrics (logits metrics included), if the row has it. */
export function metricValue(m: Metrics, key: BoundKey): number | undefined {
  const name = BOUND_KEYS[key][0];
  const direct = (m as unknown as Record<string, unknown>)[name];
  if (typeof direct === 'number') return direct;
  const l = m.kind === 'f32' ? (m.logits as unknown as Record<string, unknown> | undefined)?.[name] : undefined;
  return typeof l === 'number' ? l : undefined;
}

export function check(m: Metrics, t: Tolerance): Violation[] {
  const v: Violation[] = [];
  for (const b of t.bounds) {
    const value = metricValue(m, b.key);
    if (value === undefined) continue;
    const dir = BOUND_KEYS[b.key][1];
    if (dir === 'max' ? !(value <= b.limit) : !(value >= b.limit)) v.push({ key: b.key, value, limit: b.limit });
  }
  return v;
}

/** How far a value is past (> 1) or within (< 1) its limit, on the scale of the error itself. */
export function severity(key: Violation['key'], value: number, limit: number): number {
  if (key === 'dtype' || key === 'shape' || key === 'maxClearFlips' || key === 'maxNonFinite') return value > limit ? Infinity : 0;
  const dir = key in BOUND_KEYS ? BOUND_KEYS[key as BoundKey][1] : 'max';
  // NMSE, rel_diff, 1 - cosine and KL grow with the square of the error: the square root keeps them on its scale
  const quadratic = key === 'maxNmse' || key === 'maxRelDiff' || key === 'minCosine' || key === 'maxKl';
  const scale = (r: number) => (quadratic ? Math.sqrt(r) : r);
  if (dir === 'max') return limit === 0 ? (value === 0 ? 0 : Infinity) : scale(value / limit);
  if (key === 'minSqnrDb') return Math.max(0, 1 + (limit - value) / 10);
  const gapLimit = 1 - limit, gap = 1 - value;
  return gapLimit <= 0 ? (gap <= 0 ? 0 : Infinity) : scale(Math.max(0, gap) / gapLimit);
}

/** The bound a row is closest to (or furthest past). */
export function worstBound(m: Metrics, t: Tolerance): (Violation & { severity: number }) | undefined {
  let worst: (Violation & { severity: number }) | undefined;
  for (const b of t.bounds) {
    const value = metricValue(m, b.key);
    if (value === undefined) continue;
    const s = severity(b.key, value, b.limit);
    if (!worst || s > worst.severity) worst = { key: b.key, value, limit: b.limit, severity: s };
  }
  return worst;
}

/** What the reference knows about a row besides its values: its own rounding noise and its decisions. */
export interface RowFacts {
  /** per element, |f64 twin − reference| on the same inputs: the reference's own rounding (diff/facts.ts) */
  noise?: Float32Array;
  /** per element, |approximation twin − reference| on the same inputs: what the Ascend kernels' exp, rsqrt and log do */
  approx?: Float32Array;
  /** rounding decisions: per element the distance to the nearest decision boundary and the code step there */
  tie?: Float32Array;
  step?: Float32Array;
  /** a top-k choice: the smallest score gap between consecutive chosen ids and to the best unchosen */
  gap?: number;
}

/** What the device math in use may add to a stage's error, relative RMS, and the kernels that say so. */
export interface DeviceBound {
  /** the kernels' declared budgets under the math in use (each kernel's worst case over every input) */
  rel: number;
  from: string;
  /** the math approximates (Ascend): the same kernels' declared budgets under exact math. With the row's
   *  approximation twin the bound is APPROX_MARGIN × what the twin measured on this row + this, instead of
   *  `rel` (a worst case over the kernel suite's inputs, which a row's inputs may exceed) */
  exact?: { rel: number; from: string };
}

/**
 * The bound of a chain of stages (a replayed stage and the inputs the replay derived): relative errors add.
 * The row's approximation twin covers its own step only, not the derived inputs', so a chain is held to the
 * kernels' declared budgets.
 */
export function chainBound(bounds: DeviceBound[]): DeviceBound {
  return bounds.length === 1 ? bounds[0] : { rel: bounds.reduce((a, b) => a + b.rel, 0), from: bounds.map((b) => b.from).join(' + ') };
}

/** The judge of one case (diff/gate.ts makeJudge): device bounds, and each row's tolerance in its role. */
export interface Judge {
  deviceBound(stage: StageId, pos: number): DeviceBound;
  /** `base`: the bounds the role starts from (the arithmetic budget of an own row, the end-to-end budget) */
  tolerance(role: Role, stage: string, layer: number, pos: number, base: Tolerance): Tolerance;
  /** what the tolerances come from, for the report */
  sources: string[];
}

/** Root mean square of a row's values: the scale its relative errors are taken against. */
export const rms = (v: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return v.length ? Math.sqrt(s / v.length) : 0;
};

/**
 * A row's rounding noise relative to its scale: rms(f64 twin − reference) / rms(reference). Elements where the
 * twin landed on another code than the reference (a code step, not rounding) are left out: they are near ties
 * by construction, judged as such, and would otherwise swamp the row's noise with one code step.
 */
export function noiseRel(ref: ArrayLike<number>, f: RowFacts): number {
  return f.noise ? relOf(ref, f.noise, f.step) : 0;
}

/** rms(d) / rms(ref) over the elements whose distance d stays within half their code step (all without steps). */
function relOf(ref: ArrayLike<number>, d: Float32Array, step?: Float32Array): number {
  const scale = rms(ref);
  if (scale === 0) return 0;
  let s = 0;
  let n = 0;
  for (let i = 0; i < d.length; i++) {
    if (step && d[i] > step[i] / 2) continue;
    s += d[i] * d[i];
    n++;
  }
  return n ? Math.sqrt(s / n) / scale : 0;
}

/**
 * The own-error budget of a row, relative RMS: NOISE_MARGIN × its rounding noise (never below one f32 unit)
 * plus what the device math in use adds: for approximating math with the row's approximation twin,
 * APPROX_MARGIN × the twin's deviation plus the kernels' exact-math budgets; otherwise the kernels' declared
 * budgets (their worst case over the kernel suite's inputs).
 */
export function ownBudget(ref: ArrayLike<number>, f: RowFacts, device: DeviceBound): { rel: number; from: string; twinRel?: number } {
  const noise = NOISE_MARGIN * Math.max(noiseRel(ref, f), F32_UNIT);
  let math = { rel: device.rel, from: device.from };
  let twinRel: number | undefined;
  if (device.exact && f.approx) {
    // every element counts: a code the approximation moves is the device math's deviation, not a tie
    const twin = relOf(ref, f.approx);
    math = { rel: APPROX_MARGIN * twin + device.exact.rel, from: `${APPROX_MARGIN} × approximation twin ${fmtNum(twin)} + ${device.exact.from}` };
    // what the twin does not model: the device's distance from the twin is the exact math's error
    twinRel = noise + device.exact.rel;
  }
  return { rel: noise + math.rel, from: `arithmetic: ${NOISE_MARGIN} × noise ${fmtNum(noise / NOISE_MARGIN)} + ${math.from}`, twinRel };
}

/**
 * Count the elements of a quantized row (codes on a grid) that differ from the reference, as near ties or
 * clear flips: an element within `cont` of the reference is rounding; one that differs by at most ~one code
 * step where the reference's value before rounding lay within `tie` of the boundary is a near tie; one the
 * approximation twin predicts (it lands within a code step plus `twinCont` of the candidate — what the twin
 * does not model, the exact math's error: the device math's own deviation, taken into the row's RMS error) is
 * neither; anything else is a code the kernel should not have produced. Returns the near-tie elements too, so
 * the row's RMS error can be taken over the rest.
 */
export function codeFlips(ref: ArrayLike<number>, cand: ArrayLike<number>, f: RowFacts, cont: number, tie: number, twinCont = 0): { clear: number; nearTie: number; nearTieAt: Set<number> } {
  let clear = 0;
  const nearTieAt = new Set<number>();
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(cand[i] - ref[i]);
    if (!(d > cont)) continue;
    const t = f.tie ? f.tie[i] : Infinity;
    const step = f.step ? f.step[i] : 0;
    if (t <= tie && d <= 1.5 * step) nearTieAt.add(i);
    else if (f.approx && f.approx[i] > 0 && Math.abs(d - f.approx[i]) <= step + twinCont) continue;
    else clear++;
  }
  return { clear, nearTie: nearTieAt.size, nearTieAt };
}

/**
 * The largest reference margin between two top tokens that a drift within the KL budget can close: moving
 * their logits apart by δ costs KL ≈ ½·(p_a + p_b)·(δ/2)² (the second-order expansion of KL in the logits),
 * so δ ≤ 2·√(2·maxKl / (p_a + p_b)). A top-1 flip within that is a near tie of the end result — on a flat
 * distribution (small p) drift the KL budget allows can swap tokens a whole logit apart; on a confident one
 * only close ones. Never below END_TO_END.nearTieLogit.
 */
export function topFlipTie(maxKl: number, flipMass: number): number {
  return Math.max(END_TO_END.nearTieLogit, flipMass > 0 ? 2 * Math.sqrt((2 * maxKl) / flipMass) : 0);
}

/** Relative RMS of cand − ref over the elements not in `skip` (the near-tie flips of a quantized row). */
export function relRmsExcept(ref: ArrayLike<number>, cand: ArrayLike<number>, skip: Set<number>): number {
  let e = 0, r = 0;
  for (let i = 0; i < ref.length; i++) {
    if (skip.has(i)) continue;
    e += (cand[i] - ref[i]) ** 2;
    r += ref[i] * ref[i];
  }
  return r === 0 ? (e === 0 ? 0 : Infinity) : Math.sqrt(e / r);
}

/** The end-to-end bounds of a free-running logits row. */
export function endToEndTolerance(): Tolerance {
  const from = 'end-to-end budget';
  return {
    bounds: [
      { key: 'maxKl', limit: END_TO_END.maxKl, from },
      { key: 'maxDeltaP', limit: END_TO_END.maxDeltaP, from },
      { key: 'maxClearFlips', limit: 0, from },
      { key: 'maxNonFinite', limit: 0, from },
    ],
  };
}

/** Rows every role holds to: no NaN/Inf where the other side is finite. */
export const ALWAYS: Bound[] = [{ key: 'maxNonFinite', limit: 0, from: 'a non-finite value where the reference is finite is always wrong' }];

/** The stages whose step ends in a choice among candidates, and the stage holding the scores it chose by. */
export const SELECTION_SCORES: Partial<Record<StageId, StageId>> = { router_topk: 'router_probs', index_topk: 'index_scores' };

export function fmtNum(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e4 ? Number(v.toPrecision(3)).toString() : v.toExponential(1);
}
