// A policy file: a user's explicit bounds on chosen rows, on top of the judge's (diff/judge.ts). Rules are
// applied in order, a later bound on the same key replacing an earlier one:
//   { "version": 2, "rules": [ { "stage": "q_*", "layers": "0:3", "role": "inherited", "maxAbs": 0.02 },
//                              { "stage": "/^moe_/", "role": "own", "maxRelRms": 1e-3 },
//                              { "stage": "logits", "role": "end-to-end", "maxKl": 1e-3 } ] }
// `stage` is a glob (* and ?) or a /regex/ over the canonical stage name; `layers` (and `positions`) is
// "N", "A:B" (inclusive), "A:" or ":B"; `role` (own, inherited, end-to-end) limits a rule to rows judged in
// that role (default: every role). Keys are the judge's bound keys (BOUND_KEYS: maxRelRms, maxAbs,
// minCosine, maxNmse, maxKl, maxDeltaP, maxClearFlips, ...) and `nearTie`, the distance from a decision
// boundary (logit margin for the top-1) that counts as a near tie. A policy is the user's word: it may
// loosen the arithmetic budgets as well as tighten them, and every bound it sets says it came from here.
import { badInput } from '../model/errors.ts';
import { readJsonFile } from './json.ts';
import { BOUND_KEYS, withBound, type BoundKey, type Role, type Tolerance } from './judge.ts';

export interface PolicyRule {
  stage: string;
  layers?: string;
  /** position range, same syntax as layers */
  positions?: string;
  role?: Role;
  nearTie?: number;
  [key: string]: unknown;
}

export interface Policy {
  version: number;
  rules: PolicyRule[];
  /** where it was read from, for the bounds' `from` */
  file?: string;
}

export const POLICY_VERSION = 2;
const ROLES = new Set(['own', 'inherited', 'end-to-end']);
const MAX_POLICY_BYTES = 16 << 20;

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

/** "N", "A:B", "A:" or ":B" as a predicate (undefined: everything). */
export function rangeMatcher(file: string, spec: string | undefined): (v: number) => boolean {
  if (spec === undefined) return () => true;
  const m = /^(\d*)(:?)(\d*)$/.exec(String(spec).trim());
  if (!m || (m[2] === '' && m[1] === '') || (m[2] === '' && m[3] !== '')) throw badInput(`${file}: bad range '${spec}' (use N, A:B, A: or :B)`);
  if (m[2] === '') return (l) => l === Number(m[1]);
  const lo = m[1] === '' ? -Infinity : Number(m[1]);
  const hi = m[3] === '' ? Infinity : Number(m[3]);
  return (l) => l >= lo && l <= hi;
}

interface CompiledRule {
  from: string;
  stage: (name: string) => boolean;
  layer: (layer: number) => boolean;
  pos: (pos: number) => boolean;
  role?: Role;
  bounds: Array<[BoundKey, number]>;
  nearTie?: number;
}

const compiled = new WeakMap<Policy, CompiledRule[]>();

function compile(policy: Policy): CompiledRule[] {
  let c = compiled.get(policy);
  if (!c) {
    const file = policy.file ?? 'policy';
    c = policy.rules.map((r, i) => ({
      from: `policy ${file} rule ${i}`,
      stage: stageMatcher(file, r.stage),
      layer: rangeMatcher(file, r.layers),
      pos: rangeMatcher(file, r.positions),
      role: r.role,
      bounds: Object.entries(r).filter(([k]) => k in BOUND_KEYS).map(([k, v]) => [k as BoundKey, v as number]),
      nearTie: r.nearTie,
    }));
    compiled.set(policy, c);
  }
  return c;
}

// metrics that are fractions at most 1 (cosine similarity, msprobe's ratios, set and top-5 overlaps)
const FRACTIONS = new Set(['cosine', 'ratio1e3', 'ratio5e3', 'setOverlap', 'top5Overlap']);

/** The values a bound may take: a `max` of a metric that is never negative (every `max` one: errors, distances,
 *  counts) at least 0, a `min` of a fraction at most 1; a near tie is a distance (at least 0). */
function boundRange(key: string): [number, number] {
  if (key === 'nearTie') return [0, Infinity];
  const [metric, side] = BOUND_KEYS[key as BoundKey];
  if (side === 'max') return [0, Infinity];
  return FRACTIONS.has(metric) ? [-Infinity, 1] : [-Infinity, Infinity];
}

/** A policy file, checked rule by rule (one line naming the rule for anything wrong, exit 3). */
export function loadPolicy(file: string): Policy {
  const p = readJsonFile<Policy>(file, { what: 'policy file', maxBytes: MAX_POLICY_BYTES });
  if (typeof p !== 'object' || p === null || !Array.isArray(p.rules)) throw badInput(`${file}: a policy needs "rules": [...]`);
  if (p.version !== POLICY_VERSION) throw badInput(`${file}: policy version ${String(p.version)} is not supported (expected ${POLICY_VERSION}: rules name the judge's bound keys, e.g. maxRelRms, maxAbs, maxKl)`);
  p.rules.forEach((r, i) => {
    if (typeof r !== 'object' || r === null || typeof r.stage !== 'string') throw badInput(`${file}: rule ${i} has no "stage"`);
    for (const [k, v] of Object.entries(r)) {
      if (k === 'stage' || k === 'layers' || k === 'positions') {
        if (k !== 'stage' && typeof v !== 'string') throw badInput(`${file}: rule ${i} (${r.stage}): '${k}' must be a string like "0:3"`);
        continue;
      }
      if (k === 'role') {
        if (!ROLES.has(v as string)) throw badInput(`${file}: rule ${i} (${r.stage}): role must be own, inherited or end-to-end, not ${JSON.stringify(v)}`);
        continue;
      }
      if (!(k in BOUND_KEYS) && k !== 'nearTie') throw badInput(`${file}: rule ${i} (${r.stage}): unknown bound '${k}' (bounds: ${Object.keys(BOUND_KEYS).join(', ')}, nearTie)`);
      if (typeof v !== 'number' || Number.isNaN(v)) throw badInput(`${file}: rule ${i} (${r.stage}): '${k}' must be a number`);
      const range = boundRange(k);
      if (v < range[0]) throw badInput(`${file}: rule ${i} (${r.stage}): '${k}' is ${v}, must be at least ${range[0]} (no row could meet it)`);
      if (v > range[1]) throw badInput(`${file}: rule ${i} (${r.stage}): '${k}' is ${v}, must be at most ${range[1]} (no row could meet it)`);
    }
  });
  p.file = file;
  compile(p);
  return p;
}

/** The tolerance `t` of a row in `role` with every matching rule of the policy applied in order. */
export function applyPolicy(policy: Policy | undefined, role: Role, stage: string, layer: number, pos: number, t: Tolerance): Tolerance {
  if (!policy) return t;
  let out = t;
  for (const r of compile(policy)) {
    if ((r.role && r.role !== role) || !r.stage(stage) || !r.layer(layer) || !r.pos(pos)) continue;
    for (const [key, limit] of r.bounds) out = withBound(out, { key, limit, from: r.from });
    if (r.nearTie !== undefined) out = { ...out, tie: r.nearTie };
  }
  return out;
}
