// Error metrics between a reference tensor `a` and a candidate `b` (same element count).
// All sums are accumulated in f64. Definitions and their sources:
//   maxAbs, meanAbs, rms       max / mean / root-mean-square of |a-b|
//   maxRel                     max |a-b| / |a| (msprobe MaxRelErr, relative to the bench = reference);
//                              a = 0: 0 if b = 0, else +Infinity (msprobe adds 2^-52 to both; same verdict)
//   ratio1e3 / ratio5e3        msprobe "one-thousandth / five-thousandths err ratio": the fraction of
//                              elements whose relative error is < 0.001 / < 0.005
//   cosine                     a.b / (|a||b|); two zero vectors = 1, zero vs nonzero = 0 (the
//                              direction is lost entirely), so cosine is always defined
//   nmse                       ggml test-backend-ops: sum (a-b)^2 / sum a^2; 0 if both sums are 0,
//                              +Infinity if only the reference is zero
//   relRms                     sqrt(nmse): the error's RMS relative to the reference's (what own budgets bound)
//   relDiff                    SGLang: 1 - 2 sum(a b) / sum(a^2 + b^2); 0 for two zero vectors
//   sqnrDb                     10 log10(sum a^2 / sum (a-b)^2); +Infinity when identical
//   ulpMax / ulpMean           distance in fp32 units in the last place (ordered-integer view of
//                              the bit patterns; +0 and -0 are 0 apart; denormals count as ordinary steps)
//   nan / inf counts           per side. Elements that are non-finite on both sides with the same
//                              value (NaN/NaN, +Inf/+Inf) are excluded from the numeric metrics;
//                              any other non-finite element is a `nonFiniteMismatch` and always fails.
// i32 stages (expert ids, indexer top-k): positional exact match and set overlap.
// Logits add argmax match, the reference's margin between the two top-1s, top-5/top-10 overlap,
// KL(softmax a || softmax b) and |Δp| (llama-perplexity's Δp: the change of the reference top-1's probability).
// Decisions (a code flip, another expert, another top-1) are counted by the judge (diff/judge.ts), which
// knows how near a tie has to be: `clearFlips` and `nearTies` are filled in there.
export interface F32Metrics {
  kind: 'f32';
  n: number;
  maxAbs: number;
  meanAbs: number;
  rms: number;
  maxRel: number;
  ratio1e3: number;
  ratio5e3: number;
  cosine: number;
  nmse: number;
  relRms: number;
  relDiff: number;
  sqnrDb: number;
  ulpMax: number;
  ulpMean: number;
  nanA: number;
  infA: number;
  nanB: number;
  infB: number;
  nonFiniteMismatch: number;
  /** set for the logits stage */
  logits?: LogitsMetrics;
  /** set by the judge on rows ending in a decision: differing codes / top-1 not at a near tie, and at one */
  clearFlips?: number;
  nearTies?: number;
}

export interface I32Metrics {
  kind: 'i32';
  n: number;
  /** positional mismatches */
  mismatches: number;
  exact: boolean;
  /** |set(a) ∩ set(b)| / |set(a)| (1 for two empty sets) */
  setOverlap: number;
  /** set by the judge: a different choice where the reference's scores were not at a near tie, or at one */
  clearFlips?: number;
  nearTies?: number;
}

export interface LogitsMetrics {
  argmaxA: number;
  argmaxB: number;
  argmaxMatch: boolean;
  /** reference logit of its own top-1 minus its logit of the candidate's top-1 (0 when they agree) */
  flipMargin: number;
  /** the reference's probability of its top-1 plus that of the candidate's top-1 (when they differ, else 0) */
  flipMass: number;
  top5Overlap: number;
  top10Overlap: number;
  kl: number;
  /** |p_ref(t) − p_cand(t)| for the reference's top-1 t */
  deltaP: number;
}

export type Metrics = F32Metrics | I32Metrics;

const FLT_EPS_REL = [1e-3, 5e-3];

/** fp32 bit pattern as a monotone integer: equal floats (and ±0) map to the same value. */
function orderedBits(bits: number): number {
  return bits < 0 ? -(bits & 0x7fffffff) : bits;
}

export function f32Metrics(a: Float32Array, b: Float32Array): F32Metrics {
  if (a.length !== b.length) throw new Error(`f32Metrics: length ${a.length} vs ${b.length}`);
  const ai = new Int32Array(a.buffer, a.byteOffset, a.length);
  const bi = new Int32Array(b.buffer, b.byteOffset, b.length);
  let nanA = 0, infA = 0, nanB = 0, infB = 0, mismatch = 0, n = 0;
  let maxAbs = 0, sumAbs = 0, sumSq = 0, maxRel = 0, under1 = 0, under5 = 0;
  let dot = 0, sa = 0, sb = 0, ulpMax = 0, ulpSum = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    const fx = Number.isFinite(x), fy = Number.isFinite(y);
    if (Number.isNaN(x)) nanA++; else if (!fx) infA++;
    if (Number.isNaN(y)) nanB++; else if (!fy) infB++;
    if (!fx || !fy) {
      if (!(Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y)))) mismatch++;
      continue;
    }
    n++;
    const d = Math.abs(x - y);
    if (d > maxAbs) maxAbs = d;
    sumAbs += d;
    sumSq += d * d;
    const rel = d === 0 ? 0 : x === 0 ? Infinity : d / Math.abs(x);
    if (rel > maxRel) maxRel = rel;
    if (rel < FLT_EPS_REL[0]) under1++;
    if (rel < FLT_EPS_REL[1]) under5++;
    dot += x * y;
    sa += x * x;
    sb += y * y;
    const u = Math.abs(orderedBits(ai[i]) - orderedBits(bi[i]));
    if (u > ulpMax) ulpMax = u;
    ulpSum += u;
  }
  const cosine = sa === 0 && sb === 0 ? 1 : sa === 0 || sb === 0 ? 0 : dot / Math.sqrt(sa * sb);
  return {
    kind: 'f32',
    n,
    maxAbs,
    meanAbs: n ? sumAbs / n : 0,
    rms: n ? Math.sqrt(sumSq / n) : 0,
    maxRel,
    ratio1e3: n ? under1 / n : 1,
    ratio5e3: n ? under5 / n : 1,
    cosine: Math.min(1, Math.max(-1, cosine)),
    nmse: sumSq === 0 ? 0 : sa === 0 ? Infinity : sumSq / sa,
    relRms: sumSq === 0 ? 0 : sa === 0 ? Infinity : Math.sqrt(sumSq / sa),
    relDiff: sa + sb === 0 ? 0 : 1 - (2 * dot) / (sa + sb),
    sqnrDb: sumSq === 0 ? Infinity : sa === 0 ? -Infinity : 10 * Math.log10(sa / sumSq),
    ulpMax,
    ulpMean: n ? ulpSum / n : 0,
    nanA, infA, nanB, infB,
    nonFiniteMismatch: mismatch,
  };
}

/**
 * The element where two rows differ most, for a report to show (msprobe's worst element): the first non-finite
 * mismatch if any, else the largest |a − b| (−1 when the rows are equal).
 */
export function worstElement(a: Float32Array | Int32Array, b: Float32Array | Int32Array): { index: number; a: number; b: number } | undefined {
  let at = -1, worst = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i], y = b[i];
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      if (Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y))) continue;
      at = i;
      break;
    }
    const d = Math.abs(x - y);
    if (d > worst) (worst = d), (at = i);
  }
  return at < 0 ? undefined : { index: at, a: a[at], b: b[at] };
}

export function i32Metrics(a: Int32Array, b: Int32Array): I32Metrics {
  const n = Math.max(a.length, b.length);
  let mismatches = Math.abs(a.length - b.length);
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) mismatches++;
  const sa = new Set(a), sb = new Set(b);
  let common = 0;
  for (const v of sa) if (sb.has(v)) common++;
  return { kind: 'i32', n, mismatches, exact: mismatches === 0, setOverlap: sa.size === 0 ? (sb.size === 0 ? 1 : 0) : common / sa.size };
}

/** Indices of the k largest values, largest first, ties to the lowest index. Non-finite values rank last. */
export function topK(v: Float32Array, k: number): number[] {
  const idx: number[] = [];
  const key = (i: number) => (Number.isFinite(v[i]) ? v[i] : -Infinity);
  for (let i = 0; i < v.length; i++) {
    if (idx.length === k && key(i) <= key(idx[k - 1])) continue;
    let j = idx.length < k ? idx.length : k - 1;
    idx[j] = i;
    while (j > 0 && key(idx[j]) > key(idx[j - 1])) {
      [idx[j], idx[j - 1]] = [idx[j - 1], idx[j]];
      j--;
    }
  }
  return idx;
}

function overlap(x: number[], y: number[]): number {
  const s = new Set(y);
  return x.length ? x.filter((i) => s.has(i)).length / x.length : 1;
}

/** log Σ exp(v), computed stably. */
function logSumExp(v: Float32Array): number {
  let m = -Infinity;
  for (const x of v) if (x > m) m = x;
  let s = 0;
  for (const x of v) s += Math.exp(x - m);
  return m + Math.log(s);
}

/** KL(P || Q) of P = softmax(a) (reference), Q = softmax(b), in nats, computed with log-sum-exp. */
export function klSoftmax(a: Float32Array, b: Float32Array): number {
  const la = logSumExp(a), lb = logSumExp(b);
  let kl = 0;
  for (let i = 0; i < a.length; i++) {
    const lp = a[i] - la;
    const p = Math.exp(lp);
    if (p > 0) kl += p * (lp - (b[i] - lb));
  }
  return Math.max(0, kl);
}

export function logitsMetrics(a: Float32Array, b: Float32Array): LogitsMetrics {
  const ta = topK(a, 10), tb = topK(b, 10);
  const argmaxA = ta[0] ?? -1, argmaxB = tb[0] ?? -1;
  const argmaxMatch = argmaxA === argmaxB;
  const la = logSumExp(a), lb = logSumExp(b);
  return {
    argmaxA,
    argmaxB,
    argmaxMatch,
    flipMargin: argmaxMatch ? 0 : a[argmaxA] - a[argmaxB],
    flipMass: argmaxMatch ? 0 : Math.exp(a[argmaxA] - la) + Math.exp(a[argmaxB] - la),
    top5Overlap: overlap(ta.slice(0, 5), tb.slice(0, 5)),
    top10Overlap: overlap(ta, tb),
    kl: klSoftmax(a, b),
    deltaP: argmaxA < 0 ? 0 : Math.abs(Math.exp(a[argmaxA] - la) - Math.exp(b[argmaxA] - lb)),
  };
}

/** Metrics of one record pair; logits get theirs too. */
export function recordMetrics(a: Float32Array | Int32Array, b: Float32Array | Int32Array, opts: { logits?: boolean } = {}): Metrics {
  if (a instanceof Int32Array && b instanceof Int32Array) return i32Metrics(a, b);
  if (a instanceof Float32Array && b instanceof Float32Array) {
    const m = f32Metrics(a, b);
    if (opts.logits) m.logits = logitsMetrics(a, b);
    return m;
  }
  throw new Error('recordMetrics: dtype mismatch');
}

/** Which direction is worse for each numeric metric, used by aggregation and tolerance search. */
export const HIGHER_IS_WORSE = new Set(['maxAbs', 'meanAbs', 'rms', 'maxRel', 'nmse', 'relRms', 'relDiff', 'ulpMax', 'ulpMean', 'nanA', 'infA', 'nanB', 'infB', 'nonFiniteMismatch', 'mismatches', 'kl', 'flipMargin', 'deltaP', 'clearFlips', 'nearTies']);
export const LOWER_IS_WORSE = new Set(['cosine', 'ratio1e3', 'ratio5e3', 'sqnrDb', 'setOverlap', 'top5Overlap', 'top10Overlap']);

/** Worst-case aggregate of two metric sets of the same kind (per stage / per layer summaries). */
export function worstOf<M extends Metrics>(x: M, y: M): M {
  const out: Record<string, unknown> = { ...x };
  for (const [k, v] of Object.entries(y)) {
    const u = out[k];
    if (typeof v === 'number' && typeof u === 'number') {
      if (k === 'n') out[k] = u + v;
      else if (HIGHER_IS_WORSE.has(k)) out[k] = Math.max(u, v);
      else if (LOWER_IS_WORSE.has(k)) out[k] = Math.min(u, v);
    } else if (typeof v === 'boolean' && typeof u === 'boolean') {
      out[k] = u && v;
    }
  }
  if (x.kind === 'f32' && y.kind === 'f32' && (x.logits || y.logits)) {
    const lx = x.logits, ly = y.logits;
    out.logits = !lx ? ly : !ly ? lx : worstLogits(lx, ly);
  }
  return out as M;
}

function worstLogits(x: LogitsMetrics, y: LogitsMetrics): LogitsMetrics {
  return {
    ...(y.flipMargin > x.flipMargin ? y : x),
    argmaxMatch: x.argmaxMatch && y.argmaxMatch,
    flipMargin: Math.max(x.flipMargin, y.flipMargin),
    flipMass: Math.max(x.flipMass, y.flipMass),
    top5Overlap: Math.min(x.top5Overlap, y.top5Overlap),
    top10Overlap: Math.min(x.top10Overlap, y.top10Overlap),
    kl: Math.max(x.kl, y.kl),
    deltaP: Math.max(x.deltaP, y.deltaP),
  };
}
