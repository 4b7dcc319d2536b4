// Baselines: what one case measured, kept to hold later runs of the same case to it. A baseline can only
// tighten the judge's budgets (diff/judge.ts) or name a known deviation with an expiry; it never widens a
// budget silently. It records, for one case (model fingerprint, prompt tokens, layers, backend, kernel math):
//   own         the worst own error (relative RMS) of each (stage, layer): a later run may reach at most
//               `growth` × that (never below NOISE_MARGIN f32 units), and never more than its arithmetic budget;
//   endToEnd    the free-running end result (KL, Δp): a later run may reach `growth`² × KL, growth × Δp;
//   inherited   limits on free-running rows by the judge's bound keys: recorded, growth × the run's worst drift
//               (relative RMS) of each (stage, layer) — a device whose own errors pass but whose drift grew
//               (state carried across positions: caches, the compressor) is caught here; transcribed, the
//               ds4-ascend fork's published graph-test max |a−b|;
//   deviations  known deviations: a (stage, layer) allowed past its arithmetic budget, with a reason and an
//               expiry date after which the arithmetic budget rules again;
//   fallbacks   host fallbacks accepted, each with a reason and an expiry.
// Each baseline says where its numbers came from (provenance).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { badInput } from '../model/errors.ts';
import { resolveStage } from '../model/stages.ts';
import { compareRun, type CompareRow, type Comparison, type Judged } from './compare.ts';
import { readJsonFile } from './json.ts';
import { BOUND_KEYS, F32_UNIT, NOISE_MARGIN, type BoundKey, type Judge } from './judge.ts';
import { readManifest, recordedProblems, type RunManifest } from './manifest.ts';

export const BASELINE_FORMAT_VERSION = 2;
const MAX_BASELINE_BYTES = 64 << 20;

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
  /** tokens the device generated after the prompt and the run judged (run --generate); absent: none */
  generated?: number;
}

export interface OwnEnvelope {
  stage: string;
  layer: number;
  /** the worst own relative RMS error over the case's positions */
  relRms: number;
}

export interface InheritedEnvelope {
  stage: string;
  layer: number;
  /** only this position (absent: every position) */
  pos?: number;
  /** bounds on the free-running row, by the judge's bound keys (maxAbs, minCosine, maxNmse, ...) */
  bounds: Partial<Record<BoundKey, number>>;
}

export interface Deviation {
  stage: string;
  layer?: number;
  pos?: number;
  /** the own-error bound (relative RMS) that replaces the arithmetic budget until `expires` */
  maxRelRms: number;
  reason: string;
  /** ISO date */
  expires: string;
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
  provenance: { source: string; commit?: string; date?: string; command?: string; notes?: string };
  case: BaselineCase;
  /** allowed growth of a recorded error (× on relative RMS and Δp, ×² on KL) */
  growth: number;
  own: OwnEnvelope[];
  endToEnd?: { kl?: number; deltaP?: number };
  inherited: InheritedEnvelope[];
  deviations: Deviation[];
  fallbacks: FallbackAllowance[];
}

export const DEFAULT_GROWTH = 2;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isDate = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));

/** The schema check, one line naming what is wrong (exit 3): a baseline that does not hold a case, numbers and dates is refused. */
// layers, positions and token ids are int32 everywhere (dumps, manifests): 1e308 is an integer to JS, not a layer
const isIndex = (x: unknown): boolean => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 2 ** 31 - 1;

function validate(file: string, b: unknown): Baseline {
  const bad = (what: string) => badInput(`${file}: not a valid baseline: ${what}`);
  if (!isObj(b) || b.kind !== 'ds4-diff-baseline') throw badInput(`${file}: not a ds4-diff baseline (kind != ds4-diff-baseline)`);
  if (b.formatVersion !== BASELINE_FORMAT_VERSION) throw badInput(`${file}: baseline format version ${String(b.formatVersion)} is not supported (expected ${BASELINE_FORMAT_VERSION}; re-record it with \`ds4-diff baseline record\`)`);
  const c = b.case;
  if (!isObj(c) || typeof c.backend !== 'string' || !isObj(c.layers) || !isIndex(c.layers.last) || typeof c.layers.all !== 'boolean') throw bad('case needs backend and layers {last, all}');
  if (typeof c.modelFingerprint !== 'string' && typeof c.modelFile !== 'string') throw bad('case needs modelFingerprint or modelFile');
  if (!(Array.isArray(c.promptTokens) && c.promptTokens.every(isIndex)) && typeof c.prompt !== 'string') throw bad('case needs promptTokens or prompt');
  if (!isObj(b.provenance) || typeof b.provenance.source !== 'string') throw bad('provenance.source is missing (where do these numbers come from?)');
  if (!isNum(b.growth) || b.growth < 1) throw bad(`growth ${JSON.stringify(b.growth)} must be a number ≥ 1`);
  const list = (k: string): unknown[] => {
    if (!Array.isArray(b[k])) throw bad(`"${k}" must be an array`);
    return b[k] as unknown[];
  };
  const at = (k: string, e: unknown, i: number): Record<string, unknown> => {
    if (!isObj(e) || typeof e.stage !== 'string' && k !== 'fallbacks') throw bad(`${k}[${i}] needs a stage`);
    return e as Record<string, unknown>;
  };
  list('own').forEach((e, i) => {
    const o = at('own', e, i);
    if (!isIndex(o.layer) || !isNum(o.relRms) || (o.relRms as number) < 0) throw bad(`own[${i}] (${String(o.stage)}) needs layer and a relRms ≥ 0`);
  });
  list('inherited').forEach((e, i) => {
    const o = at('inherited', e, i);
    if (!isIndex(o.layer) || (o.pos !== undefined && !isIndex(o.pos)) || !isObj(o.bounds) || Object.keys(o.bounds).length === 0) throw bad(`inherited[${i}] (${String(o.stage)}) needs layer and bounds`);
    for (const [k, v] of Object.entries(o.bounds)) if (!(k in BOUND_KEYS) || !isNum(v)) throw bad(`inherited[${i}] (${String(o.stage)}): bound ${k} ${JSON.stringify(v)}`);
  });
  list('deviations').forEach((e, i) => {
    const o = at('deviations', e, i);
    if ((o.layer !== undefined && !isIndex(o.layer)) || (o.pos !== undefined && !isIndex(o.pos)) || !isNum(o.maxRelRms) || typeof o.reason !== 'string' || !isDate(o.expires)) throw bad(`deviations[${i}] (${String(o.stage)}) needs maxRelRms, reason and an ISO expires date`);
  });
  list('fallbacks').forEach((e, i) => {
    if (!isObj(e) || typeof e.primitive !== 'string' || typeof e.reason !== 'string' || !isDate(e.expires)) throw bad(`fallbacks[${i}] needs primitive, reason and an ISO expires date`);
  });
  if (b.endToEnd !== undefined && (!isObj(b.endToEnd) || Object.values(b.endToEnd).some((v) => !isNum(v)))) throw bad('endToEnd holds numbers (kl, deltaP)');
  return b as unknown as Baseline;
}

export function loadBaseline(file: string): Baseline {
  return validate(file, readJsonFile<unknown>(file, { what: 'baseline', maxBytes: MAX_BASELINE_BYTES }));
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
  if (c.layers.last !== m.layers.last || c.layers.all !== m.layers.all) d.push(`layers ${describeLayers(m.layers)} (baseline ${describeLayers(c.layers)})`);
  if ((c.generated ?? 0) !== (m.generated?.length ?? 0)) d.push(`${m.generated?.length ?? 0} generated tokens (baseline ${c.generated ?? 0})`);
  return d;
}

const describeLayers = (l: { last: number; all: boolean }) => (l.all ? `0..${l.last} (all)` : `${l.last}`);

export interface RecordOptions {
  growth?: number;
  /** accept the run's host fallbacks for this many days (default: accept none) */
  acceptFallbackDays?: number;
  now?: Date;
}

/**
 * A row's relative RMS error in a role: measured, or for an f32 row compared by statistics the least they prove
 * (diff/stats.ts) — an envelope must cover it too, or the run it was recorded from fails its own baseline.
 */
function relRmsOf(r: CompareRow, j: Judged | undefined): number | undefined {
  if (j?.metrics) return j.metrics.kind === 'f32' ? j.metrics.relRms : undefined;
  const least = j?.byStats?.relRmsAtLeast;
  return least !== undefined && Number.isFinite(least) && resolveStage(r.stage)?.dtype === 'f32' ? least : undefined;
}

/** The worst own error per (stage, layer), and the end-to-end figures, of a judged run. */
function envelopes(c: Comparison, growth: number): { own: OwnEnvelope[]; endToEnd?: Baseline['endToEnd']; inherited: InheritedEnvelope[] } {
  const own = new Map<string, OwnEnvelope>();
  const free = new Map<string, { stage: string; layer: number; relRms: number }>();
  let endToEnd: Baseline['endToEnd'];
  for (const r of c.rows) {
    const k = `${r.stage}@${r.layer}`;
    const o = relRmsOf(r, r.own);
    if (o !== undefined && o > (own.get(k)?.relRms ?? -1)) own.set(k, { stage: r.stage, layer: r.layer, relRms: o });
    const f = r.free?.role === 'inherited' ? relRmsOf(r, r.free) : undefined;
    if (f !== undefined && f > (free.get(k)?.relRms ?? -1)) free.set(k, { stage: r.stage, layer: r.layer, relRms: f });
    const l = r.free?.role === 'end-to-end' && r.free.metrics?.kind === 'f32' ? r.free.metrics.logits : undefined;
    if (l) endToEnd = { kl: Math.max(endToEnd?.kl ?? 0, l.kl), deltaP: Math.max(endToEnd?.deltaP ?? 0, l.deltaP) };
  }
  // the free-running drift of this case, recorded as limits: a later run's drift may reach growth × it
  const inherited = [...free.values()].map((e) => ({ stage: e.stage, layer: e.layer, bounds: { maxRelRms: Math.max(growth * e.relRms, NOISE_MARGIN * F32_UNIT) } }));
  return { own: [...own.values()], endToEnd, inherited };
}

/**
 * A baseline from a passing run directory judged by `judge`; a run that fails its own budgets (or has rows on
 * one side only) is refused: a baseline records what a correct build measured, never a regression.
 */
export async function recordBaseline(runDir: string, judge: Judge, opts: RecordOptions = {}): Promise<Baseline> {
  const m = readManifest(runDir);
  const recorded = recordedProblems(m);
  const problem = [...(recorded.regressions ?? []), ...(recorded.unfinished ?? []), ...(recorded.untested ?? [])][0];
  if (problem !== undefined) throw badInput(`${runDir}: ${problem}; a baseline records a passing run`);
  const c = await compareRun(runDir, judge);
  if (!c.pass) {
    const f = c.firstFailure!;
    throw badInput(`${runDir}: the run fails its judge (${c.counts.failed} failing rows, ${c.counts.missing} on one side only; first ${f.stage} layer ${f.layer} pos ${f.pos}); a baseline records a passing run`);
  }
  const now = opts.now ?? new Date();
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
      ...(m.generated?.length ? { generated: m.generated.length } : {}),
    },
    growth: opts.growth ?? DEFAULT_GROWTH,
    ...envelopes(c, opts.growth ?? DEFAULT_GROWTH),
    deviations: [],
    fallbacks,
  };
}

export interface BaselineDiff {
  caseChanges: string[];
  added: string[];
  removed: string[];
  changes: Array<{ what: string; old?: number; new?: number; worse: boolean }>;
  otherChanges: string[];
}

/** What changed from `a` to `b`, for review before committing a new baseline. */
export function diffBaselines(a: Baseline, b: Baseline): BaselineDiff {
  const d: BaselineDiff = { caseChanges: [], added: [], removed: [], changes: [], otherChanges: [] };
  for (const k of new Set([...Object.keys(a.case), ...Object.keys(b.case)]) as Set<keyof BaselineCase>) {
    const x = JSON.stringify(a.case[k]), y = JSON.stringify(b.case[k]);
    if (x !== y) d.caseChanges.push(`${k}: ${x ?? 'unset'} -> ${y ?? 'unset'}`);
  }
  if (a.growth !== b.growth) d.otherChanges.push(`growth: ${a.growth} -> ${b.growth}`);
  const ea = new Map(a.own.map((e) => [`${e.stage}@${e.layer}`, e.relRms]));
  const eb = new Map(b.own.map((e) => [`${e.stage}@${e.layer}`, e.relRms]));
  for (const k of ea.keys()) if (!eb.has(k)) d.removed.push(k);
  for (const [k, v] of eb) {
    const o = ea.get(k);
    if (o === undefined) d.added.push(k);
    else if (o !== v) d.changes.push({ what: `own ${k} relRms`, old: o, new: v, worse: v > o });
  }
  for (const key of ['kl', 'deltaP'] as const) {
    const x = a.endToEnd?.[key], y = b.endToEnd?.[key];
    if (x !== y) d.changes.push({ what: `end-to-end ${key}`, old: x, new: y, worse: (y ?? 0) > (x ?? 0) });
  }
  for (const k of ['inherited', 'deviations', 'fallbacks'] as const) {
    const x = JSON.stringify(a[k]), y = JSON.stringify(b[k]);
    if (x !== y) d.otherChanges.push(`${k}: ${a[k].length} -> ${b[k].length} entries${x.length && y.length ? ' (changed)' : ''}`);
  }
  return d;
}

const fmt = (v: number | undefined) => (v === undefined ? 'unset' : v.toPrecision(4));

export function formatBaselineDiff(d: BaselineDiff): string {
  const out: string[] = [];
  const section = (title: string, lines: string[]) => {
    if (lines.length) out.push(`${title}:`, ...lines.map((l) => `  ${l}`));
  };
  section('case', d.caseChanges);
  section('own envelopes added', d.added);
  section('own envelopes removed', d.removed);
  section('changes', d.changes.map((c) => `${c.worse ? 'WORSE' : 'better'} ${c.what}: ${fmt(c.old)} -> ${fmt(c.new)}${c.old && c.new !== undefined ? ` (x${(c.new / c.old).toPrecision(3)})` : ''}`));
  section('other', d.otherChanges);
  if (!out.length) out.push('baselines are identical in case, envelopes, deviations and fallbacks');
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
      // a file that is not a baseline of this format is simply not a candidate
    }
  }
  return undefined;
}
