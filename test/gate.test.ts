// The judge, the verdict and baselines on synthetic run directories (DumpWriter + writeManifest, real stage
// names, the facts sides a run's reference writes): own errors against their arithmetic budgets, drift that
// only the end result judges, code flips and choices at near ties and away from them, rows on one side only,
// every exit code, baselines that tighten and name known deviations, policies, and reports that print the
// one verdict.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { diffBaselines, formatBaselineDiff, loadBaseline, recordBaseline, type Baseline } from '../diff/baseline.ts';
import { compareRun, type CompareRow } from '../diff/compare.ts';
import { DumpWriter } from '../diff/dump.ts';
import { statsRecord } from '../diff/stats.ts';
import { gateRunDir, makeJudge } from '../diff/gate.ts';
import { APPROX_MARGIN, codeFlips, END_TO_END, F32_UNIT, NOISE_MARGIN, ownBudget, topFlipTie, type DeviceBound } from '../diff/judge.ts';
import { stringifyJson } from '../diff/json.ts';
import { writeManifest, type FallbackEntry, type RunManifest } from '../diff/manifest.ts';
import type { Policy } from '../diff/policy.ts';
import { Ds4DiffError } from '../model/errors.ts';
import type { StageRecord } from '../model/stages.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-gate-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const TOKENS = [0, 42];
const N_LAYER = 2;
/** the rounding noise the synthetic reference reports: this fraction of every value */
const NOISE = 1e-7;
/** what the device math adds to every stage, in these tests */
const DEVICE = 1e-5;
const deviceBound = (): DeviceBound => ({ rel: DEVICE, from: 'test device 1e-5' });
const BUDGET = NOISE_MARGIN * NOISE + DEVICE;

/** Deterministic values in [-1, 1). */
function wave(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233));
}

/** A small graph: layer stages of both layers at both positions, a rounded row, routing, and the head. */
function referenceRecords(): StageRecord[] {
  const recs: StageRecord[] = [];
  const f32 = (stage: string, layer: number, pos: number, n: number, seed: number): StageRecord => ({ stage, layer, pos, token: TOKENS[pos], dtype: 'f32', shape: [n], values: wave(n, seed) });
  TOKENS.forEach((_, pos) => {
    recs.push(f32('embed_hc', 0, pos, 16, 1 + pos));
    for (let l = 0; l < N_LAYER; l++) {
      recs.push(f32('attn_norm', l, pos, 8, 10 + l + pos));
      recs.push(f32('q_rope', l, pos, 8, 20 + l + pos));
      recs.push({ stage: 'kv_cur', layer: l, pos, token: TOKENS[pos], dtype: 'f32', shape: [4], values: Float32Array.of(0.5, -0.25, 1, 0.75) });
      recs.push(f32('after_attn_hc', l, pos, 16, 30 + l + pos));
      recs.push({ stage: 'router_probs', layer: l, pos, token: TOKENS[pos], dtype: 'f32', shape: [8], values: Float32Array.of(0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.5) });
      recs.push({ stage: 'router_topk', layer: l, pos, token: TOKENS[pos], dtype: 'i32', shape: [2], values: Int32Array.of(0, 2) });
      recs.push({ stage: 'router_w', layer: l, pos, token: TOKENS[pos], dtype: 'f32', shape: [2], values: Float32Array.of(0.9, 0.8) });
      recs.push(f32('ffn_out', l, pos, 8, 40 + l + pos));
    }
  });
  recs.push({ stage: 'logits', layer: N_LAYER, pos: 1, token: 42, dtype: 'f32', shape: [6], values: Float32Array.of(0.1, 2, 1.97, -1, 0.5, 1.8) });
  return recs;
}

/** The reference's facts: noise NOISE·|v| per element; kv_cur's codes and router_topk's choice with their decisions. */
function factRecords(kvTie = 0.2, gap = 0.1): { noise: StageRecord[]; ties: StageRecord[] } {
  const noise: StageRecord[] = [], ties: StageRecord[] = [];
  for (const r of referenceRecords()) {
    const base = { stage: r.stage, layer: r.layer, pos: r.pos, token: r.token, dtype: 'f32' as const };
    if (r.values instanceof Float32Array) noise.push({ ...base, shape: r.shape, values: r.values.map((v) => NOISE * Math.abs(v)) });
    // kv_cur: codes 0.25 apart, each `kvTie` from its rounding boundary
    if (r.stage === 'kv_cur') ties.push({ ...base, shape: [2, 4], values: Float32Array.of(kvTie, kvTie, kvTie, kvTie, 0.25, 0.25, 0.25, 0.25) });
    // router_topk: the chosen experts 0.1 apart from each other, 0.1 ahead of the best unchosen
    if (r.stage === 'router_topk') ties.push({ ...base, shape: [1], values: Float32Array.of(gap) });
  }
  return { noise, ties };
}

/** A candidate: the reference with a relative error `scale` on every f32 value, then per-case edits. */
function candidate(scale: number, edit?: (r: StageRecord) => void): StageRecord[] {
  return referenceRecords().map((r) => {
    const d = { ...r, values: r.values.slice() };
    if (d.values instanceof Float32Array && r.stage !== 'kv_cur') for (let i = 0; i < d.values.length; i++) d.values[i] *= 1 + scale * Math.cos(i + r.layer);
    edit?.(d);
    return d;
  });
}

async function writeSide(dir: string, side: string, recs: StageRecord[], of: { fingerprint: string; tokens: number[] } = { fingerprint: 'fp-1', tokens: TOKENS }): Promise<void> {
  const w = await DumpWriter.open(path.join(dir, `${side}.arrow`), { formatVersion: 1, modelFingerprint: of.fingerprint, promptTokens: of.tokens, producer: { backend: side.startsWith('device') ? 'sim' : 'reference', version: '0.1.0' }, side });
  for (const r of recs) w.write(r);
  await w.close();
}

interface RunSpec {
  /** free-running device (default: 1e-6 relative drift) */
  device?: StageRecord[] | null;
  /** teacher-forced device (default: 2e-6 relative own error, within the budget) */
  teacher?: StageRecord[] | null;
  facts?: { noise: StageRecord[]; ties: StageRecord[] };
  ledger?: FallbackEntry[];
  manifest?: Partial<RunManifest>;
}

let runCount = 0;
async function makeRun(spec: RunSpec = {}): Promise<string> {
  const dir = path.join(root, `run${runCount++}`);
  fs.mkdirSync(dir);
  const files: Record<string, string> = { reference: 'reference.arrow', 'reference-noise': 'reference-noise.arrow', 'reference-ties': 'reference-ties.arrow' };
  const facts = spec.facts ?? factRecords();
  await writeSide(dir, 'reference', referenceRecords());
  await writeSide(dir, 'reference-noise', facts.noise);
  await writeSide(dir, 'reference-ties', facts.ties);
  if (spec.device !== null) {
    await writeSide(dir, 'device', spec.device ?? candidate(1e-6));
    files.device = 'device.arrow';
  }
  if (spec.teacher !== null) {
    await writeSide(dir, 'device-teacher', spec.teacher ?? candidate(2e-6));
    files['device-teacher'] = 'device-teacher.arrow';
  }
  writeManifest(dir, {
    formatVersion: 1, complete: true, createdAt: '2026-11-01T00:00:00Z', model: { path: '/models/tiny.gguf', fingerprint: 'fp-1' }, prompt: 'Hello',
    promptTokens: TOKENS, layers: { last: N_LAYER - 1, all: true }, backend: 'sim', kernelMath: 'exact', options: {}, files,
    noHostFallback: false, fallbackLedger: spec.ledger ?? [], exitCode: 0, ...spec.manifest,
  });
  return dir;
}

function saveBaseline(b: Baseline, name: string): string {
  const file = path.join(root, name);
  fs.writeFileSync(file, stringifyJson(b));
  return file;
}

async function failure(p: Promise<unknown>): Promise<Ds4DiffError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(Ds4DiffError);
  return e as Ds4DiffError;
}

const NOW = new Date('2026-11-23T00:00:00Z');
const gate = (dir: string, o: { baseline?: string; policy?: Policy; now?: Date; shipped?: boolean } = {}) => gateRunDir(dir, { deviceBound, shipped: false, now: NOW, ...o });
const row = (c: { rows: CompareRow[] }, stage: string, layer: number, pos: number): CompareRow => c.rows.find((r) => r.stage === stage && r.layer === layer && r.pos === pos)!;

describe('own errors against their arithmetic budgets', () => {
  it('a clean run passes: every own error within NOISE_MARGIN × its noise + the device bound, the verdict says so', async () => {
    const g = await gate(await makeRun());
    expect(g.verdict.exitCode).toBe(0);
    expect(g.verdict.line).toMatch(/^PASS: every kernel within its own budget/);
    const q = row(g.comparison, 'q_rope', 1, 0).own!;
    // the budget is derived from the row's own noise, not recorded anywhere
    expect(q.budget).toBeCloseTo(NOISE_MARGIN * NOISE + DEVICE, 12);
    expect(q.tolerance.bounds.find((b) => b.key === 'maxRelRms')!.from).toMatch(/^arithmetic: 10 × noise 1\.0e-7 \+ test device 1e-5/);
  });

  it('a kernel 0.1 % off by itself fails on its own error and is the first failure; the drift it causes is only reported', async () => {
    const off = (r: StageRecord) => { if (r.stage === 'q_rope' && r.layer === 1 && r.values instanceof Float32Array) r.values.forEach((v, i, a) => (a[i] = v * 1.001)); };
    const g = await gate(await makeRun({ teacher: candidate(2e-6, off), device: candidate(1e-6, off) }));
    expect(g.verdict.exitCode).toBe(1);
    expect(g.comparison.firstOwnFailure).toMatchObject({ stage: 'q_rope', layer: 1, pos: 0 });
    expect(g.verdict.line).toMatch(/^FAIL: q_rope layer 1 pos 0 is wrong by itself: own error relRms (0\.001|1\.0e-3) vs 1\.1e-5 \(9\d\.\d×\)/);
    expect(g.comparison.counts.ownFailed).toBe(2);
    // just under the budget passes: the budget is a limit, not a recording
    const under = (r: StageRecord) => { if (r.stage === 'q_rope' && r.layer === 1 && r.values instanceof Float32Array) r.values.forEach((v, i, a) => (a[i] = v * (1 + 0.9 * BUDGET))); };
    expect((await gate(await makeRun({ teacher: candidate(0, under) }))).verdict.exitCode).toBe(0);
  });

  it('free-running drift fails only through the end result: inherited errors pass, the end result is judged by KL', async () => {
    // the device drifts by 1e-3 everywhere (far past every own budget) but each kernel is right by itself
    const drift = await gate(await makeRun({ device: candidate(1e-3) }));
    expect(drift.verdict.exitCode).toBe(0);
    expect(drift.comparison.firstDivergence).toMatchObject({ stage: 'embed_hc', layer: 0, pos: 0 });
    expect(drift.verdict.line).toMatch(/free-running drift from embed_hc layer 0 pos 0 is accumulation: logits KL [0-9.e-]+ within 0\.1/);
    // logits far off: KL past the end-to-end budget
    const broken = await gate(await makeRun({ device: candidate(1e-6, (r) => { if (r.stage === 'logits') r.values.set([3, 0, 0, 0, 0, 0]); }) }));
    expect(broken.verdict.exitCode).toBe(1);
    expect(broken.verdict.reasons[0]).toMatch(/^end result logits layer 2 pos 1: /);
    expect(row(broken.comparison, 'logits', 2, 1).free!.violations.map((v) => v.key)).toContain('maxKl');
  });

  it('a top-1 flip passes at a near tie — a margin a drift within the KL bound can close — and fails beyond one', async () => {
    // reference: token 1 = 2.0, token 2 = 1.97 (margin 0.03)
    const tie = await gate(await makeRun({ device: candidate(0, (r) => { if (r.stage === 'logits') { r.values[1] = 1.96; r.values[2] = 1.97; } }) }));
    expect(tie.verdict.exitCode).toBe(0);
    expect(row(tie.comparison, 'logits', 2, 1).free!.metrics!.nearTies).toBe(1);
    // token 5 (1.8, 0.2 behind) overtakes: on this flat distribution (p ≈ 0.31 and 0.25) the KL bound 0.1 allows
    // moving two tokens 2·√(0.2 / 0.57) ≈ 1.2 logits apart, so a 0.2 margin is a near tie of the end result
    const flipped = candidate(0, (r) => { if (r.stage === 'logits') r.values[5] = 2.01; });
    const near = await gate(await makeRun({ device: flipped }));
    expect(near.verdict.exitCode).toBe(0);
    const j = row(near.comparison, 'logits', 2, 1).free!;
    expect(j.metrics!.nearTies).toBe(1);
    expect(j.tolerance.tie).toBeCloseTo(topFlipTie(END_TO_END.maxKl, (j.metrics as { logits: { flipMass: number } }).logits.flipMass), 12);
    expect(j.tolerance.tie!).toBeGreaterThan(1);
    // a user's near tie of 0.1 logit makes the same flip a clear one, though its KL is small
    const policy: Policy = { version: 2, rules: [{ stage: 'logits', role: 'end-to-end', nearTie: 0.1 }] };
    const clear = await gate(await makeRun({ device: flipped }), { policy });
    expect(clear.verdict.exitCode).toBe(1);
    const m = row(clear.comparison, 'logits', 2, 1).free!.metrics!;
    expect(m.kind === 'f32' && m.logits!.kl).toBeLessThan(END_TO_END.maxKl);
    expect(clear.verdict.reasons[0]).toMatch(/top-1 token 5 instead of 1 \(reference margin 0\.2 > near tie 0\.1\)/);
  });

  it('a code flip passes at a near tie of its rounding and fails away from one', async () => {
    const flipped = (r: StageRecord) => { if (r.stage === 'kv_cur' && r.layer === 0 && r.pos === 1) r.values[2] = 1.25; };
    // the reference's value before rounding was 1e-6 from the boundary: within the budget of the kernel
    const near = await gate(await makeRun({ teacher: candidate(2e-6, flipped), facts: factRecords(1e-6) }));
    expect(near.verdict.exitCode).toBe(0);
    expect(row(near.comparison, 'kv_cur', 0, 1).own!.metrics!.nearTies).toBe(1);
    expect(near.comparison.counts.nearTies).toBe(1);
    // the same flip 0.2 from the boundary: a code the kernel should not produce
    const clear = await gate(await makeRun({ teacher: candidate(2e-6, flipped) }));
    expect(clear.verdict.exitCode).toBe(1);
    expect(clear.verdict.line).toMatch(/kv_cur layer 0 pos 1 is wrong by itself: own error 1 codes flipped away from a near tie/);
  });

  it('a code the approximation twin predicts passes up to what the twin does not model (the exact math\'s error), not beyond', () => {
    // element 0: a tiny value (code step 5e-7) the device's approximations move by 7.5e-4; the twin moved it by
    // 7.53e-4 — the 3e-6 between them is the exact-math part of the device's error (RoPE's angles), far more than
    // one code step of so small a value
    const ref = Float32Array.of(0.0005, 1, -1, 1);
    const step = Float32Array.of(5e-7, 1e-3, 1e-3, 1e-3);
    const facts = { noise: new Float32Array(4), approx: Float32Array.of(7.53e-4, 0, 0, 0), tie: Float32Array.of(0.1, 0.1, 0.1, 0.1), step };
    const device: DeviceBound = { rel: 1e-3, from: 'test ascend', exact: { rel: 5e-6, from: 'test exact' } };
    const b = ownBudget(ref, facts, device);
    expect(b.twinRel).toBeCloseTo(NOISE_MARGIN * F32_UNIT + 5e-6, 15);
    expect(b.rel).toBeCloseTo(NOISE_MARGIN * F32_UNIT + APPROX_MARGIN * (7.53e-4 / 0.8660254) / 2 + 5e-6, 9);
    const scale = Math.sqrt((0.0005 ** 2 + 3) / 4);
    const cand = Float32Array.of(0.0005 - 7.5e-4, 1, -1, 1);
    expect(codeFlips(ref, cand, facts, 0, 0, b.twinRel! * scale)).toMatchObject({ clear: 0, nearTie: 0 });
    // without that allowance the twin's prediction had to match within one code step: a false alarm
    expect(codeFlips(ref, cand, facts, 0, 0).clear).toBe(1);
    // a deviation the twin does not predict (1e-4 past it) is still a code the kernel should not produce
    expect(codeFlips(ref, Float32Array.of(0.0005 - 8.5e-4, 1, -1, 1), facts, 0, 0, b.twinRel! * scale).clear).toBe(1);
  });

  it('another expert passes only where the reference\'s scores were within their own budget of each other', async () => {
    const other = (r: StageRecord) => { if (r.stage === 'router_topk' && r.layer === 1 && r.pos === 0) r.values[1] = 4; };
    const near = await gate(await makeRun({ teacher: candidate(2e-6, other), facts: factRecords(0.2, 1e-7) }));
    expect(near.verdict.exitCode).toBe(0);
    expect(row(near.comparison, 'router_topk', 1, 0).own!.metrics!.nearTies).toBe(1);
    // router_select goes on to weigh its own choice: expert 4's weight where the reference weighed expert 2 is
    // that choice, not the kernel's error
    const weighs = (r: StageRecord) => { other(r); if (r.stage === 'router_w' && r.layer === 1 && r.pos === 0) r.values[1] = 0.7; };
    const follows = await gate(await makeRun({ teacher: candidate(2e-6, weighs), facts: factRecords(0.2, 1e-7) }));
    expect(follows.verdict.exitCode).toBe(0);
    expect(row(follows.comparison, 'router_w', 1, 0).own).toMatchObject({ status: 'pass', note: 'follows the near-tie choice of router_topk' });
    // the same weights with the reference's choice are the kernel's error
    const wrong = await gate(await makeRun({ teacher: candidate(2e-6, (r) => { if (r.stage === 'router_w' && r.layer === 1 && r.pos === 0) r.values[1] = 0.7; }), facts: factRecords(0.2, 1e-7) }));
    expect(wrong.comparison.firstOwnFailure).toMatchObject({ stage: 'router_w', layer: 1, pos: 0 });
    const clear = await gate(await makeRun({ teacher: candidate(2e-6, other) }));
    expect(clear.verdict.exitCode).toBe(1);
    expect(clear.comparison.firstOwnFailure).toMatchObject({ stage: 'router_topk', layer: 1, pos: 0 });
  });

  it('NaN where the reference is finite always fails; so does a row on one side only', async () => {
    const nan = await gate(await makeRun({ teacher: candidate(2e-6, (r) => { if (r.stage === 'attn_norm' && r.layer === 1 && r.pos === 0) r.values[0] = NaN; }) }));
    expect(nan.verdict.exitCode).toBe(1);
    expect(row(nan.comparison, 'attn_norm', 1, 0).own!.violations.map((v) => v.key)).toContain('maxNonFinite');
    const lost = await gate(await makeRun({ device: candidate(1e-6).filter((r) => r.stage !== 'ffn_out'), teacher: candidate(2e-6).filter((r) => r.stage !== 'ffn_out') }));
    expect(lost.verdict.exitCode).toBe(1);
    expect(lost.comparison.counts.missing).toBe(4);
    expect(lost.verdict.line).toMatch(/^FAIL: 4 rows on one side only \(first ffn_out layer 0 pos 0: no candidate row\)/);
    const one = await gate(await makeRun({ teacher: candidate(2e-6).filter((r) => !(r.stage === 'ffn_out' && r.layer === 1 && r.pos === 1)) }));
    expect(one.verdict.line).toMatch(/^FAIL: 1 row on one side only \(first ffn_out layer 1 pos 1: no candidate row\)/);
    // a run without a teacher pass judges its free rows only and says so
    const noOwn = await gate(await makeRun({ teacher: null }));
    expect(noOwn.verdict.exitCode).toBe(0);
    expect(noOwn.comparison.notes.join()).toMatch(/no own-error side/);
  });
});

describe('baselines tighten and name known deviations', () => {
  it('record -> gate: the recorded run passes its baseline; an own error grown past growth × recorded fails, though within the arithmetic budget', async () => {
    const run = await makeRun();
    const b = await recordBaseline(run, makeJudge({ deviceBound }), { now: NOW });
    expect(b.case).toMatchObject({ modelFingerprint: 'fp-1', promptTokens: TOKENS, backend: 'sim', kernelMath: 'exact' });
    const q = b.own.find((e) => e.stage === 'q_rope' && e.layer === 0)!;
    expect(q.relRms).toBeGreaterThan(1e-6);
    expect(q.relRms).toBeLessThan(2e-6);
    const file = saveBaseline(b, 'roundtrip.json');
    expect(loadBaseline(file)).toEqual(b);
    expect((await gate(run, { baseline: file })).verdict.exitCode).toBe(0);
    // 3× the recorded own error: still 8× under the arithmetic budget, but past the baseline's 2×
    const worse = await gate(await makeRun({ teacher: candidate(6e-6) }), { baseline: file });
    expect(worse.verdict.exitCode).toBe(1);
    expect(worse.comparison.firstOwnFailure!.own!.violations[0].key).toBe('maxRelRms');
    expect(worse.comparison.firstOwnFailure!.own!.tolerance.bounds.find((x) => x.key === 'maxRelRms')!.from).toMatch(/baseline .*roundtrip\.json: 2 × recorded/);
  });

  it('a run captured partly as statistics passes the baseline recorded from it: its envelopes cover what the statistics prove', async () => {
    // attn_norm of layer 0 off by 1e-6 at pos 0 (in full) and by 4e-6 at pos 1 (as statistics), own and free-running:
    // both within the budget; the statistics prove at least ~4e-6, more than growth × the full row's 1e-6
    const off = (r: StageRecord) => {
      if (r.stage === 'attn_norm' && r.layer === 0) for (let i = 0; i < r.values.length; i++) r.values[i] *= 1 + (r.pos === 0 ? 1e-6 : 4e-6);
    };
    const stats = (rs: StageRecord[]) => rs.map((r) => (r.pos === 1 && r.stage !== 'logits' ? statsRecord(r) : r));
    const run = await makeRun({ teacher: stats(candidate(0, off)), device: stats(candidate(0, off)) });
    expect((await gate(run)).verdict.exitCode).toBe(0);
    const b = await recordBaseline(run, makeJudge({ deviceBound }), { now: NOW });
    expect(b.own.find((e) => e.stage === 'attn_norm' && e.layer === 0)!.relRms).toBeGreaterThan(3e-6);
    const g = await gate(run, { baseline: saveBaseline(b, 'stats-self.json') });
    expect(g.verdict.line).toMatch(/^PASS/);
  });

  it('a known deviation lets a stage past its budget until it expires', async () => {
    const b = await recordBaseline(await makeRun(), makeJudge({ deviceBound }), { now: NOW });
    b.deviations = [{ stage: 'q_rope', layer: 1, maxRelRms: 2e-3, reason: 'rope table in f16, ticket 42', expires: '2026-12-31' }];
    const file = saveBaseline(b, 'deviation.json');
    const off = (r: StageRecord) => { if (r.stage === 'q_rope' && r.layer === 1 && r.values instanceof Float32Array) r.values.forEach((v, i, a) => (a[i] = v * 1.001)); };
    const run = await makeRun({ teacher: candidate(2e-6, off) });
    expect((await gate(run, { baseline: file })).verdict.exitCode).toBe(0);
    const later = await gate(run, { baseline: file, now: new Date('2027-01-02T00:00:00Z') });
    expect(later.verdict.exitCode).toBe(1);
    expect(later.verdict.warnings.join()).toMatch(/known deviation q_rope layer 1 expired on 2026-12-31/);
  });

  it('record refuses a run that fails its own budgets', async () => {
    const bad = await makeRun({ teacher: candidate(1e-2) });
    const e = await failure(recordBaseline(bad, makeJudge({ deviceBound })));
    expect(e.exitCode).toBe(3);
    expect(e.message).toMatch(/the run fails its judge .*a baseline records a passing run/);
  });

  it('the end result is tightened by the recorded KL', async () => {
    const b = await recordBaseline(await makeRun(), makeJudge({ deviceBound }), { now: NOW });
    expect(b.endToEnd!.kl).toBeGreaterThanOrEqual(0);
    const file = saveBaseline({ ...b, endToEnd: { kl: 1e-6, deltaP: 1e-3 } }, 'e2e.json');
    const g = await gate(await makeRun({ device: candidate(1e-6, (r) => { if (r.stage === 'logits') r.values[3] = -0.9; }) }), { baseline: file });
    expect(g.verdict.exitCode).toBe(1);
    const kl = row(g.comparison, 'logits', 2, 1).free!.tolerance.bounds.find((x) => x.key === 'maxKl')!;
    expect(kl.limit).toBeCloseTo(4e-6, 12);
    expect(kl.limit).toBeLessThan(END_TO_END.maxKl);
  });

  it('an incomplete run, a bad baseline file: exit 3; a run without a device side: 125', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), makeJudge({ deviceBound }), { now: NOW }), 'refuse.json');
    expect((await failure(gate(await makeRun({ manifest: { complete: false } }), { baseline: base }))).exitCode).toBe(3);
    const junk = path.join(root, 'junk.json');
    fs.writeFileSync(junk, '{"kind": "something else"}');
    expect((await failure(gate(await makeRun(), { baseline: junk }))).exitCode).toBe(3);
    const e = await failure(gate(await makeRun({ device: null }), { baseline: base }));
    expect(e.exitCode).toBe(125);
    expect(e.message).toMatch(/no 'device' dump/);
  });

  it('a malformed baseline is one line naming the file and the problem (exit 3), read only if it is a small regular file', async () => {
    const base = await recordBaseline(await makeRun(), makeJudge({ deviceBound }), { now: NOW });
    const bad = (name: string, edit: (b: Record<string, unknown>) => void): string => {
      const b = JSON.parse(stringifyJson(base)) as Record<string, unknown>;
      edit(b);
      const f = path.join(root, name);
      fs.writeFileSync(f, JSON.stringify(b));
      return f;
    };
    const own = (b: Record<string, unknown>) => (b.own as Array<Record<string, unknown>>)[0];
    const cases: Array<[string, RegExp]> = [
      [bad('null-own.json', (b) => ((b.own as unknown[])[0] = null)), /null-own\.json: not a valid baseline: own\[0\] needs a stage/],
      [bad('fallbacks-obj.json', (b) => (b.fallbacks = { swiglu: true })), /fallbacks-obj\.json: not a valid baseline: "fallbacks" must be an array/],
      [bad('relrms-str.json', (b) => (own(b).relRms = 'big')), /relrms-str\.json: not a valid baseline: own\[0\] \(\w+\) needs layer and a relRms ≥ 0/],
      // layers are int32 everywhere: 1e308 is an integer to JS, not a layer
      [bad('huge-layer.json', (b) => (own(b).layer = 1e308)), /huge-layer\.json: not a valid baseline: own\[0\] \(\w+\) needs layer and a relRms ≥ 0/],
      [bad('layers.json', (b) => ((b.case as Record<string, unknown>).layers = 'all')), /layers\.json: not a valid baseline: case needs backend and layers/],
      [bad('v1.json', (b) => (b.formatVersion = 1)), /v1\.json: baseline format version 1 is not supported \(expected 2; re-record it/],
      ['/dev/zero', /\/dev\/zero: not a regular file \(a character device\); a baseline is a JSON file/],
    ];
    for (const [f, re] of cases) {
      const e = await failure(gate(await makeRun(), { baseline: f }));
      expect(e.exitCode, f).toBe(3);
      expect(e.message, f).toMatch(re);
      expect(e.message).not.toContain('\n');
    }
    const huge = path.join(root, 'huge.json');
    fs.closeSync(fs.openSync(huge, 'w'));
    fs.truncateSync(huge, 2 ** 30); // sparse: nothing may read it
    expect((await failure(gate(await makeRun(), { baseline: huge }))).message).toMatch(/huge\.json: 1073741824 bytes is too large for a baseline \(at most 67108864\)/);
  });

  it('baseline diff shows what got worse', async () => {
    const j = makeJudge({ deviceBound });
    const a = await recordBaseline(await makeRun(), j, { now: NOW });
    const b = await recordBaseline(await makeRun({ teacher: candidate(8e-6) }), j, { now: NOW });
    const d = diffBaselines(a, b);
    const q = d.changes.find((c) => c.what === 'own q_rope@0 relRms')!;
    expect(q.worse).toBe(true);
    expect(q.new! / q.old!).toBeGreaterThan(3.5);
    expect(formatBaselineDiff(d)).toMatch(/WORSE own q_rope@0 relRms/);
    expect(formatBaselineDiff(diffBaselines(a, a))).toMatch(/identical/);
  });

  it('the shipped Atlas layer-0 baseline holds a matching engine run to the published free-running envelope', async () => {
    const file = path.join(import.meta.dirname, '..', 'baselines', 'atlas-300i-duo-q2-imatrix-layer0-hello.json');
    const b = loadBaseline(file);
    expect(b.inherited.map((e) => [e.stage, e.layer, e.bounds.maxAbs])).toEqual([
      ['hc_attn_post_w', 0, 2 * 0.0001559], ['hc_attn_comb', 0, 2 * 0.000204027], ['q_rope', 0, 2 * 0.00925317], ['after_attn_hc', 0, 2 * 0.00128685], ['logits', 43, 2 * 0.0489826],
    ]);
    expect(b.provenance.source).toMatch(/ds4-ascend/);
    const published: Record<string, number> = { hc_attn_post_w: 0.0001559, hc_attn_comb: 0.000204027, q_rope: 0.00925317, after_attn_hc: 0.00128685, logits: 0.0489826 };
    const recs = (dev: boolean, err: number): StageRecord[] => Object.entries(published).map(([stage, maxAbs]) => {
      const values = wave(stage === 'logits' ? 6 : 8, stage.length);
      if (stage === 'logits') values.set([0.1, 3, 1, -1, 0.5, 0]);
      if (dev) values[2] += err * maxAbs;
      return { stage, layer: stage === 'logits' ? 43 : 0, pos: 0, token: 0, dtype: 'f32', shape: [values.length], values };
    });
    const atlas = async (err: number) => {
      const dir = path.join(root, `atlas${runCount++}`);
      fs.mkdirSync(dir);
      const of = { fingerprint: 'real-gguf', tokens: [0, 1, 2] };
      await writeSide(dir, 'reference', recs(false, 0), of);
      await writeSide(dir, 'device', recs(true, err), of);
      writeManifest(dir, {
        formatVersion: 1, complete: true, createdAt: NOW.toISOString(), model: { path: `/models/${b.case.modelFile}`, fingerprint: 'real-gguf' }, prompt: 'Hello',
        promptTokens: [0, 1, 2], layers: { last: 0, all: false }, backend: 'ascend', options: {}, files: { reference: 'reference.arrow', device: 'device.arrow' },
        noHostFallback: true, fallbackLedger: [],
      });
      return dir;
    };
    const ok = await gateRunDir(await atlas(1.5), { deviceBound, now: NOW });
    expect(ok.baseline).toBe(file);
    expect(ok.verdict.exitCode).toBe(0);
    expect(ok.verdict.warnings.join()).toMatch(/no model fingerprint; matched by model file name/);
    const over = await gateRunDir(await atlas(3), { deviceBound, now: NOW });
    expect(over.verdict.exitCode).toBe(1);
    expect(over.verdict.reasons.join()).toMatch(/free-running rows past their envelope/);
  });
});

describe('host fallbacks', () => {
  const ledger: FallbackEntry[] = [{ primitive: 'hc_split_sinkhorn', calls: 2, bytesToHost: 768, bytesToDevice: 768, reason: 'n_hc != 4' }];

  it('an unaccepted fallback is exit 2; accepted passes; expired fails', async () => {
    const run = await makeRun({ ledger });
    expect((await gate(run)).verdict.exitCode).toBe(2);
    const plain = saveBaseline(await recordBaseline(run, makeJudge({ deviceBound }), { now: NOW }), 'fb-none.json');
    const g = await gate(run, { baseline: plain });
    expect(g.verdict.exitCode).toBe(2);
    expect(g.verdict.line).toMatch(/^FAIL \(host fallback\): host fallback 'hc_split_sinkhorn' .*not accepted by the baseline/);
    const accepted = await recordBaseline(run, makeJudge({ deviceBound }), { now: NOW, acceptFallbackDays: 30 });
    expect(accepted.fallbacks).toEqual([{ primitive: 'hc_split_sinkhorn', reason: 'n_hc != 4', expires: '2026-12-23' }]);
    const file = saveBaseline(accepted, 'fb-ok.json');
    expect((await gate(run, { baseline: file })).verdict.exitCode).toBe(0);
    const later = await gate(run, { baseline: file, now: new Date('2027-01-01T00:00:00Z') });
    expect(later.verdict.exitCode).toBe(2);
    expect(later.verdict.reasons[0]).toMatch(/expired on 2026-12-23/);
  });

  it('a host-fallback violation wins over a regression; a gate stop recorded by the run is exit 2', async () => {
    const both = await makeRun({ ledger, teacher: candidate(1e-2) });
    const g = await gate(both);
    expect(g.verdict.exitCode).toBe(2);
    expect(g.comparison.pass).toBe(false);
    expect((await gate(await makeRun({ manifest: { fallbackStop: 'host fallback disabled: swiglu (layer 0, pos 1, stage shared_mid)', noHostFallback: true } }))).verdict.exitCode).toBe(2);
    // a run directory written before fallbackStop records the stop as the ledger entry of the disabled primitive
    const stopEntry = { primitive: 'swiglu', calls: 0, bytesToHost: 0, bytesToDevice: 0, reason: 'host fallback disabled (no-host-fallback gate)' };
    expect((await gate(await makeRun({ manifest: { exitCode: 2, noHostFallback: true, fallbackLedger: [stopEntry] } }))).verdict.exitCode).toBe(2);
  });
});

describe('refusals and cannot-evaluate', () => {
  it('a baseline for another model, prompt or backend is refused with exit 3 saying what differs', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), makeJudge({ deviceBound }), { now: NOW }), 'case.json');
    const e = await failure(gate(await makeRun({ manifest: { model: { path: '/models/tiny.gguf', fingerprint: 'fp-2' }, backend: 'ascend' } }), { baseline: base }));
    expect(e.exitCode).toBe(3);
    expect(e.message).toMatch(/model fingerprint fp-2 \(baseline fp-1\)/);
    expect(e.message).toMatch(/backend ascend \(baseline sim\)/);
    expect((await failure(gate(await makeRun({ manifest: { promptTokens: [0, 43] } }), { baseline: base }))).message).toMatch(/prompt tokens \[0,43\] \(baseline \[0,42\]\)/);
  });

  it('a run whose own-error side has no reference facts is refused (exit 3), never passed unjudged', async () => {
    // a teacher-forced kernel 1 % off: with the facts it fails; with the facts left out of the manifest its rows would have no budget
    const off = candidate(2e-6, (r) => { if (r.stage === 'q_rope' && r.values instanceof Float32Array) r.values[0] *= 1.01; });
    expect((await gate(await makeRun({ teacher: off }))).verdict.exitCode).toBe(1);
    const files = { reference: 'reference.arrow', device: 'device.arrow', 'device-teacher': 'device-teacher.arrow' };
    const e = await failure(gate(await makeRun({ teacher: off, manifest: { files } })));
    expect(e.exitCode).toBe(3);
    expect(e.message).toMatch(/has an own-error side \(device-teacher\) but no reference-noise or reference-ties dump .*its own errors have no budget/);
  });

  it('an incomplete run, a malformed baseline: one line, exit 3; a run without a device side: 125', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), makeJudge({ deviceBound }), { now: NOW }), 'refuse.json');
    expect((await failure(gate(await makeRun({ manifest: { complete: false } }), { baseline: base }))).exitCode).toBe(3);
    const bad = (name: string, text: string) => {
      const f = path.join(root, name);
      fs.writeFileSync(f, text);
      return f;
    };
    const good = JSON.parse(fs.readFileSync(base, 'utf8')) as Record<string, unknown>;
    for (const [name, text, msg] of [
      ['junk.json', '{"kind": "something else"}', /not a ds4-diff baseline/],
      ['v1.json', JSON.stringify({ ...good, formatVersion: 1 }), /format version 1 is not supported/],
      ['null-own.json', JSON.stringify({ ...good, own: [null] }), /own\[0\] needs a stage/],
      ['fallbacks.json', JSON.stringify({ ...good, fallbacks: 'none' }), /"fallbacks" must be an array/],
      ['no-source.json', JSON.stringify({ ...good, provenance: {} }), /provenance\.source is missing/],
    ] as const) {
      const e = await failure(gate(await makeRun(), { baseline: bad(name, text) }));
      expect(e.exitCode, name).toBe(3);
      expect(e.message, name).toMatch(msg);
    }
    const e = await failure(gate(await makeRun({ device: null }), { baseline: base }));
    expect(e.exitCode).toBe(125);
    expect(e.message).toMatch(/no 'device' dump/);
  });
});

describe('policies', () => {
  it('a rule scoped to a role holds those rows to its bounds; its bounds say where they come from', async () => {
    const run = await makeRun({ device: candidate(1e-3) });
    expect((await gate(run)).verdict.exitCode).toBe(0);
    const policy: Policy = { version: 2, file: 'strict.json', rules: [{ stage: 'q_*', role: 'inherited', maxAbs: 1e-4 }] };
    const g = await gate(run, { policy });
    expect(g.verdict.exitCode).toBe(1);
    expect(g.comparison.rows.find((r) => r.free?.status === 'fail')!.stage).toBe('q_rope');
    expect(row(g.comparison, 'q_rope', 0, 0).free!.tolerance.bounds.find((b) => b.key === 'maxAbs')!.from).toBe('policy strict.json rule 0');
    // own rows are untouched by an inherited rule; an own rule may loosen the arithmetic budget (the user's word)
    const off = (r: StageRecord) => { if (r.stage === 'ffn_out' && r.values instanceof Float32Array) r.values[0] *= 1.01; };
    const offRun = await makeRun({ teacher: candidate(2e-6, off) });
    expect((await gate(offRun)).verdict.exitCode).toBe(1);
    expect((await gate(offRun, { policy: { version: 2, rules: [{ stage: 'ffn_out', role: 'own', maxRelRms: 0.05 }] } })).verdict.exitCode).toBe(0);
  });
});

describe('the command line and its reports print the one verdict', () => {
  it('gate / compare / baseline exit codes, and JUnit and Markdown that agree with them', async () => {
    const { main } = await import('../cli/main.ts');
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    const err = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stderr.write;
    const run = async (...args: string[]) => {
      process.exitCode = undefined;
      await main(['node', 'ds4-diff', ...args]);
      const code = process.exitCode ?? 0;
      process.exitCode = undefined;
      return code;
    };
    try {
      // the commands judge by the kernels' declared budgets (kernels/budgets.json, exact math): an own error
      // within the reference's rounding noise passes whatever the kernels declare
      const good = await makeRun({ teacher: candidate(NOISE / 2), device: candidate(NOISE / 2) });
      const file = path.join(root, 'cli-baseline.json');
      expect(await run('baseline', 'record', good, '--out', file, '--growth', '3'), out.join('')).toBe(0);
      expect(loadBaseline(file).growth).toBe(3);
      const junit = path.join(root, 'cli.xml');
      const md = path.join(root, 'cli.md');
      expect(await run('gate', good, '--baseline', file, '--junit', junit, '--markdown', md)).toBe(0);
      expect(fs.readFileSync(junit, 'utf8')).toMatch(/failures="0"/);
      expect(fs.readFileSync(md, 'utf8')).toMatch(/✅ PASS: every kernel within its own budget/);
      const bad = await makeRun({ teacher: candidate(NOISE / 2, (r) => { if (r.stage === 'q_rope') r.values[0] += 1; }), device: candidate(NOISE / 2) });
      expect(await run('gate', bad, '--baseline', file, '--json', '--junit', junit, '--markdown', md)).toBe(1);
      const json = JSON.parse(out.join('').slice(out.join('').lastIndexOf('{\n  "verdict"'))) as { verdict: { exitCode: number; line: string } };
      expect(json.verdict.exitCode).toBe(1);
      expect(fs.readFileSync(junit, 'utf8')).toMatch(/<testcase classname="ds4-diff.verdict" name="verdict \(exit 1\)"><failure message="FAIL: q_rope layer 0 pos 0 is wrong by itself/);
      expect(fs.readFileSync(md, 'utf8')).toContain(`❌ ${json.verdict.line}`);
      // compare: two bare dumps judge the end result and rows on one side only
      expect(await run('compare', path.join(bad, 'reference.arrow'), path.join(bad, 'device.arrow'))).toBe(0);
      const lost = await makeRun({ device: candidate(1e-6).slice(3) });
      expect(await run('compare', path.join(lost, 'reference.arrow'), path.join(lost, 'device.arrow'))).toBe(1);
      expect(await run('gate', await makeRun({ device: null }), '--baseline', file)).toBe(125);
      expect(await run('baseline', 'diff', file, file)).toBe(0);
      expect(await run('baseline', 'record', bad, '--out', path.join(root, 'refused.json'))).toBe(3);
      expect(out.join('')).toMatch(/no 'device' dump/);
    } finally {
      process.stdout.write = write;
      process.stderr.write = err;
    }
  });

  it('compareRun without a judge-worthy own side still judges missing rows', async () => {
    const c = await compareRun(await makeRun({ device: candidate(1e-6).slice(1), teacher: null }), makeJudge({ deviceBound }));
    expect(c.counts.missing).toBe(1);
    expect(c.pass).toBe(false);
    expect(F32_UNIT).toBe(2 ** -24);
  });
});
