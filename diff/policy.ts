// Tolerance policy: which thresholds apply to which (stage, layer). Defaults come from the stage
// registry's `tolerance`; a policy file (JSON) adds rules, applied in order, later rules overriding
// earlier ones key by key:
//   { "version": 1, "rules": [ { "stage": "q_*", "layers": "0:3", "maxAbs": 0.02 },
//                              { "stage": "/^moe_/", "minCosine": 0.995 } ] }
// `stage` is a glob (* and ?) or a /regex/ over the canonical stage name; `layers` (and `positions`)
// is "N", "A:B" (inclusive), "A:" or ":B". Like Polygraphy's per-output atol/rtol, plus the minimum tolerance that
// would have passed (see minimumTolerance).
import { badInput } from '../model/errors.ts';
import { readJsonFile } from './json.ts';
import { resolveStage } from '../reference/registry.ts';
import { DEFAULT_NEAR_TIE_MARGIN, type F32Metrics, type Metrics } from './metrics.ts';

export interface Thresholds {
  maxAbs?: number;
  meanAbs?: number;
  maxRel?: number;
  minCosine?: number;
  maxNmse?: number;
  maxRelDiff?: number;
  minSqnrDb?: number;
  maxUlp?: number;
  minRatio1e3?: number;
  minRatio5e3?: number;
  /** i32: positional exact match required */
  exact?: boolean;
  /** i32: smallest allowed set overlap */
  minSetOverlap?: number;
  /** logits: largest allowed KL(softmax ref || softmax cand) */
  maxKl?: number;
  minTop5Overlap?: number;
  /** logits: ε of the near-tie call (logit units) */
  nearTieMargin?: number;
}

export interface PolicyRule extends Thresholds {
  stage: string;
  layers?: string;
  /** position range, same syntax as layers */
  positions?: string;
}

export interface Policy {
  version: number;
  rules: PolicyRule[];
  /** start from the registry's default tolerances (default true); the baseline gate turns them off */
  registryDefaults?: boolean;
}

export const EMPTY_POLICY: Policy = { version: 1, rules: [] };

/** How each threshold reads a metric: [metric key, 'max' = metric must be <= limit, 'min' = >= limit]. */
export const THRESHOLD_METRIC: Record<Exclude<keyof Thresholds, 'exact' | 'nearTieMargin'>, [string, 'max' | 'min']> = {
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
  minTop5Overlap: ['top5Overlap', 'min'],
};
const THRESHOLD_KEYS = new Set<string>([...Object.keys(THRESHOLD_METRIC), 'exact', 'nearTieMargin']);

function stageMatcher(file: string, pattern: string): (name: string) => boolean {
  if (pattern.length > 1 && pattern.startsWith('/') && pattern.endsWith('/')) {
    let re: RegExp;
    try {
      re = new RegExp(pattern.slice(1, -1));
    } catch (e) {
      throw badInput(`${file}: bad stage regex ${pattern} (${(e as Error).message})`);
    }
    return (n) => re.test(n);
  }
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return (n) => re.test(n);
}

function rangeMatcher(file: string, spec: string | undefined): (layer: number) => boolean {
  if (spec === undefined) return () => true;
  const m = /^(\d*)(:?)(\d*)$/.exec(String(spec).trim());
  if (!m || (m[2] === '' && m[1] === '') || (m[2] === '' && m[3] !== '')) throw badInput(`${file}: bad range '${spec}' (use N, A:B, A: or :B)`);
  if (m[2] === '') return (l) => l === Number(m[1]);
  const lo = m[1] === '' ? -Infinity : Number(m[1]);
  const hi = m[3] === '' ? Infinity : Number(m[3]);
  return (l) => l >= lo && l <= hi;
}

interface CompiledRule {
  index: number;
  stage: (name: string) => boolean;
  layer: (layer: number) => boolean;
  pos: (pos: number) => boolean;
  t: Thresholds;
}

/** Rules naming one stage literally are indexed by it (a baseline has one per stage and layer). */
interface CompiledPolicy {
  literal: Map<string, CompiledRule[]>;
  patterns: CompiledRule[];
}

const isLiteral = (p: string) => !/[*?]/.test(p) && !p.startsWith('/');
const compiled = new WeakMap<Policy, CompiledPolicy>();

function compile(policy: Policy, file = 'policy'): CompiledPolicy {
  let c = compiled.get(policy);
  if (!c) {
    c = { literal: new Map(), patterns: [] };
    policy.rules.forEach((r, index) => {
      const { stage, layers, positions, ...t } = r;
      const rule = { index, stage: stageMatcher(file, stage), layer: rangeMatcher(file, layers), pos: rangeMatcher(file, positions), t };
      if (isLiteral(stage)) c!.literal.set(stage, [...(c!.literal.get(stage) ?? []), rule]);
      else c!.patterns.push(rule);
    });
    compiled.set(policy, c);
  }
  return c;
}

export function loadPolicy(file: string): Policy {
  const p = readJsonFile<Policy>(file, { what: 'policy file', maxBytes: 16 << 20 });
  if (typeof p !== 'object' || p === null || !Array.isArray(p.rules)) throw badInput(`${file}: a policy needs "rules": [...]`);
  if (p.version !== 1) throw badInput(`${file}: policy version ${String(p.version)} is not supported (expected 1)`);
  p.rules.forEach((r, i) => {
    if (typeof r !== 'object' || r === null || typeof r.stage !== 'string') throw badInput(`${file}: rule ${i} has no "stage"`);
    for (const [k, v] of Object.entries(r)) {
      if (k === 'stage' || k === 'layers' || k === 'positions') continue;
      if (!THRESHOLD_KEYS.has(k)) throw badInput(`${file}: rule ${i} (${r.stage}): unknown threshold '${k}'`);
      if (k === 'exact' ? typeof v !== 'boolean' : typeof v !== 'number') throw badInput(`${file}: rule ${i} (${r.stage}): '${k}' must be a ${k === 'exact' ? 'boolean' : 'number'}`);
    }
  });
  compile(p, file);
  return p;
}

/** Registry default tolerance for the stage, then every matching rule in order. */
export function thresholdsFor(policy: Policy, stage: string, layer: number, pos = 0): Thresholds {
  const def = policy.registryDefaults === false ? undefined : resolveStage(stage)?.tolerance;
  const t: Thresholds = { ...def };
  const c = compile(policy);
  const rules = [...(c.literal.get(stage) ?? []), ...c.patterns].sort((x, y) => x.index - y.index);
  for (const r of rules) if (r.stage(stage) && r.layer(layer) && r.pos(pos)) Object.assign(t, r.t);
  return t;
}

export function nearTieMargin(t: Thresholds): number {
  return t.nearTieMargin ?? DEFAULT_NEAR_TIE_MARGIN;
}

export interface Violation {
  /** threshold key ('maxAbs', 'minCosine', ..., 'nonFinite', 'exact', 'argmax') */
  threshold: string;
  value: number;
  limit: number;
}

function metricValue(m: Metrics, key: string): number | undefined {
  const direct = (m as unknown as Record<string, unknown>)[key];
  if (typeof direct === 'number') return direct;
  const l = m.kind === 'f32' ? (m.logits as unknown as Record<string, unknown> | undefined)?.[key] : undefined;
  return typeof l === 'number' ? l : undefined;
}

/** Checks one row's metrics; non-finite mismatches and logits argmax mismatches fail regardless of thresholds. */
export function checkThresholds(m: Metrics, t: Thresholds): Violation[] {
  const v: Violation[] = [];
  if (m.kind === 'f32' && m.nonFiniteMismatch > 0) v.push({ threshold: 'nonFinite', value: m.nonFiniteMismatch, limit: 0 });
  if (m.kind === 'i32' && t.exact && !m.exact) v.push({ threshold: 'exact', value: m.mismatches, limit: 0 });
  if (m.kind === 'f32' && m.logits?.verdict === 'mismatch') v.push({ threshold: 'argmax', value: m.logits.flipMargin, limit: nearTieMargin(t) });
  for (const [key, [metric, dir]] of Object.entries(THRESHOLD_METRIC)) {
    const limit = t[key as keyof typeof THRESHOLD_METRIC];
    if (limit === undefined) continue;
    const value = metricValue(m, metric);
    if (value === undefined) continue;
    if (dir === 'max' ? !(value <= limit) : !(value >= limit)) v.push({ threshold: key, value, limit });
  }
  return v;
}

/** How close a value is to its limit: > 1 fails; used to name the worst metric of a row. */
export function severity(threshold: string, value: number, limit: number): number {
  if (threshold === 'nonFinite' || threshold === 'exact') return value > 0 ? Infinity : 0;
  if (threshold === 'argmax') return Infinity;
  const dir = THRESHOLD_METRIC[threshold as keyof typeof THRESHOLD_METRIC]?.[1] ?? 'max';
  // NMSE, rel_diff and 1 - cosine grow with the square of the error: the square root keeps their
  // severity on the same scale as maxAbs, so the named worst metric is the one really furthest out
  const quadratic = threshold === 'maxNmse' || threshold === 'maxRelDiff' || threshold === 'minCosine';
  const scale = (r: number) => (quadratic ? Math.sqrt(r) : r);
  if (dir === 'max') return limit === 0 ? (value === 0 ? 0 : Infinity) : scale(value / limit);
  // dB: one step of severity per 10 dB short of the limit
  if (threshold === 'minSqnrDb') return Math.max(0, 1 + (limit - value) / 10);
  // cosine and overlaps: the shortfall from the ideal 1, relative to the allowed shortfall
  const gapLimit = 1 - limit, gap = 1 - value;
  return gapLimit <= 0 ? (gap <= 0 ? 0 : Infinity) : scale(Math.max(0, gap) / gapLimit);
}

/** The worst metric of a row against its thresholds: the highest severity, failing or not. */
export function worstMetric(m: Metrics, t: Thresholds): Violation & { severity: number } | undefined {
  let worst: (Violation & { severity: number }) | undefined;
  const consider = (threshold: string, value: number, limit: number) => {
    const s = severity(threshold, value, limit);
    if (!worst || s > worst.severity) worst = { threshold, value, limit, severity: s };
  };
  for (const v of checkThresholds(m, t)) consider(v.threshold, v.value, v.limit);
  for (const [key, [metric]] of Object.entries(THRESHOLD_METRIC)) {
    const limit = t[key as keyof typeof THRESHOLD_METRIC];
    const value = metricValue(m, metric);
    if (limit !== undefined && value !== undefined) consider(key, value, limit);
  }
  return worst;
}

/** Polygraphy-style "minimum required tolerance": the tightest thresholds these metrics would pass. */
export function minimumTolerance(m: Metrics): Thresholds {
  if (m.kind === 'i32') return { exact: m.exact, minSetOverlap: m.setOverlap };
  const f: F32Metrics = m;
  const t: Thresholds = { maxAbs: f.maxAbs, minCosine: f.cosine, maxNmse: f.nmse, maxRel: f.maxRel };
  if (f.logits) t.maxKl = f.logits.kl;
  return t;
}
