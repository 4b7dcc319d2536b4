// Baselines: what a case measured once, and how much worse it may get before CI fails.
// A baseline records, for one case (model, prompt tokens, layers, backend, kernel math), the worst
// metrics of each (stage, layer) over positions, the allowed growth (≤ factor × recorded, never below
// a floor, never above an absolute cap), the reference's own noise floor (ds4 vs f64 precision, when
// the run has a 'reference-f64' side) and the accepted host fallbacks with an expiry date.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { badInput } from '../model/errors.ts';
import { compareDumps, compareRun, type Comparison } from './compare.ts';
import { iterateDump } from './dump.ts';
import { readJsonFile } from './json.ts';
import { readManifest, sidePath, type RunManifest } from './manifest.ts';
import { worstOf, type Metrics } from './metrics.ts';
import type { Policy, PolicyRule } from './policy.ts';

export const BASELINE_FORMAT_VERSION = 1;

export interface BaselineCase {
  /** GGUF fingerprint (model/gguf.ts). Absent only for baselines transcribed from a published log,
   *  which then match the run by `modelFile` (the GGUF's file name) instead. */
  modelFingerprint?: string;
  modelFile?: string;
  /** prompt token ids; absent when transcribed, then `prompt` (the -p text) must match */
  promptTokens?: number[];
  prompt?: string;
  layers: { last: number; all: boolean };
  backend: string;
  /** absent: any kernel math */
  kernelMath?: string;
}

export interface BaselineMetrics {
  maxAbs?: number;
  cosine?: number;
  nmse?: number;
  /** i32 stages: the run matched exactly */
  exact?: boolean;
  /** logits: top-1 agreed (or was a near tie) */
  argmaxMatch?: boolean;
  kl?: number;
}

export interface BaselineEntry {
  stage: string;
  layer: number;
  /** only this position (absent: the worst over all positions) */
  pos?: number;
  metrics: BaselineMetrics;
  /** reference ds4-precision vs f64: the quantization noise this stage has anyway */
  noiseFloor?: { maxAbs: number };
}

export interface Growth {
  /** allowed growth factor over the recorded value */
  factor: number;
  /** absolute cap on the allowed maxAbs (optional) */
  maxAbsCap?: number;
  /** allowed values are never below these (a bit-exact recording would otherwise allow no change) */
  floor: { maxAbs: number; nmse: number; cosineGap: number };
  /** optional: fail when a stage's maxAbs exceeds this multiple of its reference noise floor */
  maxNoiseRatio?: number;
}

export interface FallbackAllowance {
  primitive: string;
  reason: string;
  /** ISO date; after it the allowance fails the gate */
  expires: string;
}

export interface Baseline {
  formatVersion: number;
  kind: 'ds4-diff-baseline';
  recordedAt: string;
  provenance?: { source: string; commit?: string; date?: string; command?: string; notes?: string };
  case: BaselineCase;
  growth: Growth;
  entries: BaselineEntry[];
  fallbacks: FallbackAllowance[];
}

export const DEFAULT_GROWTH: Growth = { factor: 2, floor: { maxAbs: 1e-6, nmse: 1e-12, cosineGap: 1e-7 } };

// a baseline is a few hundred KB (the all-layer tiny baseline ~100 KB); a bigger file is not one
const BASELINE_MAX_BYTES = 64 << 20;

export function loadBaseline(file: string): Baseline {
  const b = readJsonFile<Baseline>(file, { what: 'baseline', maxBytes: BASELINE_MAX_BYTES });
  const problem = baselineSchemaProblem(b);
  if (problem) throw badInput(`${file}: ${problem}`);
  b.growth = { ...DEFAULT_GROWTH, ...b.growth, floor: { ...DEFAULT_GROWTH.floor, ...b.growth.floor } };
  b.fallbacks ??= [];
  return b;
}

const isNum = (x: unknown) => typeof x === 'number';
// layers and positions are int32 everywhere (dumps, manifests): 1e308 is an integer to JS, not a layer
const isIndex = (x: unknown) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 2 ** 31 - 1;
const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * The first way `b` is not a baseline this code can read, or undefined: every field the gate indexes
 * into, with the type it assumes (the schema in one place).
 */
function baselineSchemaProblem(b: Baseline): string | undefined {
  if (!isObj(b) || b.kind !== 'ds4-diff-baseline') return 'not a ds4-diff baseline (kind != ds4-diff-baseline)';
  if (b.formatVersion !== BASELINE_FORMAT_VERSION) return `baseline format version ${String(b.formatVersion)} is not supported (expected ${BASELINE_FORMAT_VERSION})`;
  const c = b.case;
  if (!isObj(c) || typeof c.backend !== 'string' || !isObj(c.layers)) return 'baseline case needs backend and layers';
  if (!isIndex(c.layers.last) || typeof c.layers.all !== 'boolean') return 'baseline case layers needs an integer last and a boolean all';
  if (!c.modelFingerprint && !c.modelFile) return 'baseline case needs modelFingerprint or modelFile';
  if ((c.modelFingerprint !== undefined && typeof c.modelFingerprint !== 'string') || (c.modelFile !== undefined && typeof c.modelFile !== 'string')) return 'baseline case modelFingerprint and modelFile are strings';
  if (!c.promptTokens && c.prompt === undefined) return 'baseline case needs promptTokens or prompt';
  if (c.promptTokens !== undefined && (!Array.isArray(c.promptTokens) || !c.promptTokens.every((t) => isIndex(t) && t >= 0))) return 'baseline case promptTokens must be a list of token ids';
  if ((c.prompt !== undefined && typeof c.prompt !== 'string') || (c.kernelMath !== undefined && typeof c.kernelMath !== 'string')) return 'baseline case prompt and kernelMath are strings';
  if (!Array.isArray(b.entries) || !isObj(b.growth) || typeof b.growth.factor !== 'number') return 'baseline needs entries and growth.factor';
  const g = b.growth;
  if (!(g.factor > 0) || (g.maxAbsCap !== undefined && !isNum(g.maxAbsCap)) || (g.maxNoiseRatio !== undefined && !isNum(g.maxNoiseRatio))) return 'baseline growth needs factor > 0 (maxAbsCap, maxNoiseRatio: numbers)';
  if (g.floor !== undefined && (!isObj(g.floor) || Object.values(g.floor).some((x) => !isNum(x)))) return 'baseline growth.floor holds numbers (maxAbs, nmse, cosineGap)';
  for (const [i, e] of b.entries.entries()) {
    if (!isObj(e) || typeof e.stage !== 'string' || !isIndex(e.layer) || (e.pos !== undefined && !isIndex(e.pos)) || !isObj(e.metrics)) {
      return `baseline entry ${i} needs stage (string), layer (integer), metrics (object), found ${JSON.stringify(e)?.slice(0, 120)}`;
    }
    const bad = Object.entries(e.metrics).find(([k, v]) => ((k === 'exact' || k === 'argmaxMatch') ? typeof v !== 'boolean' : !isNum(v)));
    if (bad) return `baseline entry ${i} (${e.stage} layer ${e.layer}): metric '${bad[0]}' must be a ${bad[0] === 'exact' || bad[0] === 'argmaxMatch' ? 'boolean' : 'number'}`;
    if (e.noiseFloor !== undefined && (!isObj(e.noiseFloor) || !isNum(e.noiseFloor.maxAbs))) return `baseline entry ${i} (${e.stage} layer ${e.layer}): noiseFloor needs maxAbs`;
  }
  if (b.fallbacks !== undefined && !Array.isArray(b.fallbacks)) return 'baseline fallbacks must be a list of allowances';
  for (const f of b.fallbacks ?? []) {
    if (!isObj(f) || typeof f.primitive !== 'string' || typeof f.reason !== 'string' || typeof f.expires !== 'string' || Number.isNaN(Date.parse(f.expires))) {
      return `fallback allowance ${JSON.stringify(f)} needs primitive, reason and an ISO expires date`;
    }
  }
  return undefined;
}

/** What differs between the baseline's case and the run (empty: same case). */
export function caseDifferences(c: BaselineCase, m: RunManifest): string[] {
  const d: string[] = [];
  if (c.modelFingerprint !== undefined) {
    if (c.modelFingerprint !== m.model.fingerprint) d.push(`model fingerprint ${m.model.fingerprint} (baseline ${c.modelFingerprint})`);
  } else if (c.modelFile !== undefined && path.basename(m.model.path) !== c.modelFile) {
    d.push(`model file ${path.basename(m.model.path)} (baseline ${c.modelFile})`);
  }
  if (c.promptTokens !== undefined) {
    if (JSON.stringify(c.promptTokens) !== JSON.stringify(m.promptTokens)) d.push(`prompt tokens [${m.promptTokens}] (baseline [${c.promptTokens}])`);
  } else if (c.prompt !== undefined && c.prompt !== m.prompt) {
    d.push(`prompt ${JSON.stringify(m.prompt ?? null)} (baseline ${JSON.stringify(c.prompt)})`);
  }
  if (c.backend !== m.backend) d.push(`backend ${m.backend} (baseline ${c.backend})`);
  if (c.kernelMath !== undefined && c.kernelMath !== m.kernelMath) d.push(`kernel math ${m.kernelMath ?? 'none'} (baseline ${c.kernelMath})`);
  if (c.layers.last !== m.layers.last || c.layers.all !== m.layers.all) {
    d.push(`layers ${describeLayers(m.layers)} (baseline ${describeLayers(c.layers)})`);
  }
  return d;
}

const describeLayers = (l: { last: number; all: boolean }) => (l.all ? `0..${l.last} (all)` : `${l.last}`);

/** Allowed values of an entry under the growth rule (growth.factor applies to the error's size). */
export function allowedFor(e: BaselineEntry, g: Growth): { maxAbs?: number; minCosine?: number; maxNmse?: number } {
  const a: { maxAbs?: number; minCosine?: number; maxNmse?: number } = {};
  const m = e.metrics;
  if (m.maxAbs !== undefined) a.maxAbs = Math.min(Math.max(g.factor * m.maxAbs, g.floor.maxAbs), g.maxAbsCap ?? Infinity);
  // NMSE and 1 - cosine grow with the square of the error's size: x factor in error is x factor^2 there
  const f2 = g.factor * g.factor;
  if (m.cosine !== undefined) a.minCosine = 1 - Math.max(f2 * (1 - m.cosine), g.floor.cosineGap);
  if (m.nmse !== undefined) a.maxNmse = Math.max(f2 * m.nmse, g.floor.nmse);
  return a;
}

/** The baseline as policy rules, one per (stage, layer): the gate's tolerances. */
export function baselinePolicy(b: Baseline): Policy {
  const rules: PolicyRule[] = b.entries.map((e) => {
    // a plain stage name is a literal glob; anything else (an imported name with * or ?) an escaped regex
    const literal = /^[^*?/][^*?]*$/.test(e.stage);
    const stage = literal ? e.stage : `/^${e.stage.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$/`;
    const r: PolicyRule = { stage, layers: String(e.layer), ...allowedFor(e, b.growth) };
    if (e.pos !== undefined) r.positions = String(e.pos);
    if (e.metrics.exact) r.exact = true;
    return r;
  });
  return { version: 1, rules, registryDefaults: false };
}

const entryKey = (stage: string, layer: number) => `${stage}@${layer}`;

/** Does a baseline entry speak for this row? */
export function entryCovers(e: BaselineEntry, r: { stage: string; layer: number; pos: number }): boolean {
  return e.stage === r.stage && e.layer === r.layer && (e.pos === undefined || e.pos === r.pos);
}

/** Worst metrics per (stage, layer) over positions, from a comparison's rows. */
function worstPerStageLayer(c: Comparison): Map<string, { stage: string; layer: number; metrics: Metrics }> {
  const out = new Map<string, { stage: string; layer: number; metrics: Metrics }>();
  for (const r of c.rows) {
    if (!r.metrics) continue;
    const k = entryKey(r.stage, r.layer);
    const prev = out.get(k);
    if (!prev) {
      out.set(k, { stage: r.stage, layer: r.layer, metrics: r.metrics });
      continue;
    }
    if (prev.metrics.kind === r.metrics.kind) prev.metrics = worstOf(prev.metrics, r.metrics);
  }
  return out;
}

function baselineMetrics(m: Metrics): BaselineMetrics {
  if (m.kind === 'i32') return { exact: m.exact };
  const b: BaselineMetrics = { maxAbs: m.maxAbs, cosine: m.cosine, nmse: m.nmse };
  if (m.logits) {
    b.argmaxMatch = m.logits.verdict !== 'mismatch';
    b.kl = m.logits.kl;
  }
  return b;
}

export interface RecordOptions {
  growth?: number;
  cap?: number;
  /** accept the run's host fallbacks for this many days (default: accept none) */
  acceptFallbackDays?: number;
  now?: Date;
}

export async function recordBaseline(runDir: string, opts: RecordOptions = {}): Promise<Baseline> {
  const m = readManifest(runDir);
  const c = await compareRun(runDir, { version: 1, rules: [], registryDefaults: false });
  const measured = worstPerStageLayer(c);
  const noise = new Map<string, number>();
  const f64 = sidePath(runDir, m, 'reference-f64');
  const ref = sidePath(runDir, m, 'reference')!;
  if (f64) {
    const nc = await compareDumps(iterateDump(f64), iterateDump(ref), { version: 1, rules: [], registryDefaults: false }, { a: 'reference-f64', b: 'reference' });
    for (const [k, v] of worstPerStageLayer(nc)) if (v.metrics.kind === 'f32') noise.set(k, v.metrics.maxAbs);
  }
  const now = opts.now ?? new Date();
  const entries: BaselineEntry[] = [];
  for (const [k, v] of measured) {
    const e: BaselineEntry = { stage: v.stage, layer: v.layer, metrics: baselineMetrics(v.metrics) };
    const nf = noise.get(k);
    if (nf !== undefined) e.noiseFloor = { maxAbs: nf };
    entries.push(e);
  }
  const growth: Growth = { ...DEFAULT_GROWTH, factor: opts.growth ?? DEFAULT_GROWTH.factor };
  if (opts.cap !== undefined) growth.maxAbsCap = opts.cap;
  const fallbacks: FallbackAllowance[] = [];
  if (opts.acceptFallbackDays !== undefined) {
    const expires = new Date(now.getTime() + opts.acceptFallbackDays * 86400e3).toISOString().slice(0, 10);
    for (const p of new Set(m.fallbackLedger.map((f) => f.primitive))) {
      const reason = m.fallbackLedger.find((f) => f.primitive === p && f.reason)?.reason ?? 'accepted when the baseline was recorded';
      fallbacks.push({ primitive: p, reason, expires });
    }
  }
  return {
    formatVersion: BASELINE_FORMAT_VERSION,
    kind: 'ds4-diff-baseline',
    recordedAt: now.toISOString(),
    provenance: { source: `ds4-diff baseline record ${path.resolve(runDir)}`, date: m.createdAt },
    case: {
      modelFingerprint: m.model.fingerprint,
      modelFile: path.basename(m.model.path),
      promptTokens: m.promptTokens,
      prompt: m.prompt,
      layers: m.layers,
      backend: m.backend,
      kernelMath: m.kernelMath,
    },
    growth,
    entries,
    fallbacks,
  };
}

export interface MetricChange {
  stage: string;
  layer: number;
  metric: string;
  old?: number | boolean;
  new?: number | boolean;
  /** new / old for numeric metrics where larger is worse (for cosine: the ratio of 1 - cosine) */
  ratio?: number;
  worse: boolean;
}

export interface BaselineDiff {
  caseChanges: string[];
  growthChanges: string[];
  added: string[];
  removed: string[];
  changes: MetricChange[];
  fallbackChanges: string[];
}

/** What changed from `a` to `b`, for review before committing a new baseline. */
export function diffBaselines(a: Baseline, b: Baseline): BaselineDiff {
  const d: BaselineDiff = { caseChanges: [], growthChanges: [], added: [], removed: [], changes: [], fallbackChanges: [] };
  for (const k of new Set([...Object.keys(a.case), ...Object.keys(b.case)]) as Set<keyof BaselineCase>) {
    const x = JSON.stringify(a.case[k]), y = JSON.stringify(b.case[k]);
    if (x !== y) d.caseChanges.push(`${k}: ${x ?? 'unset'} -> ${y ?? 'unset'}`);
  }
  for (const k of new Set([...Object.keys(a.growth), ...Object.keys(b.growth)]) as Set<keyof Growth>) {
    const x = JSON.stringify(a.growth[k]), y = JSON.stringify(b.growth[k]);
    if (x !== y) d.growthChanges.push(`${k}: ${x ?? 'unset'} -> ${y ?? 'unset'}`);
  }
  const ea = new Map(a.entries.map((e) => [entryKey(e.stage, e.layer), e]));
  const eb = new Map(b.entries.map((e) => [entryKey(e.stage, e.layer), e]));
  for (const k of ea.keys()) if (!eb.has(k)) d.removed.push(k);
  for (const [k, e] of eb) {
    const o = ea.get(k);
    if (!o) {
      d.added.push(k);
      continue;
    }
    for (const metric of new Set([...Object.keys(o.metrics), ...Object.keys(e.metrics)]) as Set<keyof BaselineMetrics>) {
      const x = o.metrics[metric], y = e.metrics[metric];
      if (x === y) continue;
      const ch: MetricChange = { stage: e.stage, layer: e.layer, metric, old: x, new: y, worse: false };
      if (typeof x === 'number' && typeof y === 'number') {
        ch.ratio = metric === 'cosine' ? (1 - y) / (1 - x) : y / x;
        ch.worse = metric === 'cosine' ? y < x : y > x;
      } else {
        ch.worse = x === true && y !== true;
      }
      d.changes.push(ch);
    }
  }
  const fa = new Map(a.fallbacks.map((f) => [f.primitive, f]));
  const fb = new Map(b.fallbacks.map((f) => [f.primitive, f]));
  for (const [p, f] of fb) {
    const o = fa.get(p);
    if (!o) d.fallbackChanges.push(`+ ${p} accepted until ${f.expires}: ${f.reason}`);
    else if (o.expires !== f.expires || o.reason !== f.reason) d.fallbackChanges.push(`~ ${p}: until ${o.expires} -> ${f.expires}${o.reason !== f.reason ? ` (reason: ${f.reason})` : ''}`);
  }
  for (const p of fa.keys()) if (!fb.has(p)) d.fallbackChanges.push(`- ${p} no longer accepted`);
  return d;
}

// cosine is shown with enough digits to see a change near 1
const fmt = (v: number | boolean | undefined, metric: string) => (typeof v === 'number' ? (metric === 'cosine' ? v.toFixed(9) : v.toPrecision(4)) : String(v));

export function formatBaselineDiff(d: BaselineDiff): string {
  const out: string[] = [];
  const section = (title: string, lines: string[]) => {
    if (lines.length) out.push(`${title}:`, ...lines.map((l) => `  ${l}`));
  };
  section('case', d.caseChanges);
  section('growth', d.growthChanges);
  section('entries added', d.added);
  section('entries removed', d.removed);
  section(
    'metric changes',
    d.changes.map((c) => `${c.worse ? 'WORSE' : 'better'} ${c.stage}@${c.layer} ${c.metric}: ${fmt(c.old, c.metric)} -> ${fmt(c.new, c.metric)}${c.ratio !== undefined ? ` (x${c.ratio.toPrecision(3)})` : ''}`),
  );
  section('host fallbacks', d.fallbackChanges);
  if (!out.length) out.push('baselines are identical in case, growth, entries and fallbacks');
  return out.join('\n') + '\n';
}

const BASELINE_DIR = path.resolve(fileURLToPath(import.meta.url), '..', '..', 'baselines');

/** The shipped baseline whose case (model fingerprint, tokens, layers, backend, kernel math) is this run's. */
export function findShippedBaseline(m: RunManifest, dir = BASELINE_DIR): string | undefined {
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.json')).sort()) {
    const file = path.join(dir, f);
    try {
      if (caseDifferences(loadBaseline(file).case, m).length === 0) return file;
    } catch {
      // a policy file or a baseline of another format version is simply not a candidate
    }
  }
  return undefined;
}
