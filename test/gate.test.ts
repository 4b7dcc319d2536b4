// The gate and baselines on synthetic run directories (DumpWriter + writeManifest, real stage names):
// every exit code, record -> gate round trip, expired allowances, case refusals, first divergence.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { diffBaselines, formatBaselineDiff, loadBaseline, recordBaseline, type Baseline } from '../diff/baseline.ts';
import { compareRun } from '../diff/compare.ts';
import { DumpWriter } from '../diff/dump.ts';
import { gate } from '../diff/gate.ts';
import { stringifyJson } from '../diff/json.ts';
import { writeManifest, type FallbackEntry, type RunManifest } from '../diff/manifest.ts';
import { EMPTY_POLICY } from '../diff/policy.ts';
import type { StageRecord } from '../diff/record.ts';
import { Ds4DiffError } from '../model/errors.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-gate-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const TOKENS = [0, 42];
const N_LAYER = 2;

/** Deterministic values in [-1, 1). */
function wave(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233));
}

/** A small graph: layer stages of both layers at both positions, routing ids, and the head. */
function referenceRecords(): StageRecord[] {
  const recs: StageRecord[] = [];
  const f32 = (stage: string, layer: number, pos: number, n: number, seed: number): StageRecord => ({ stage, layer, pos, token: TOKENS[pos], dtype: 'f32', shape: [n], values: wave(n, seed) });
  TOKENS.forEach((_, pos) => {
    recs.push(f32('embed_hc', 0, pos, 16, 1 + pos));
    for (let l = 0; l < N_LAYER; l++) {
      recs.push(f32('attn_norm', l, pos, 8, 10 + l + pos));
      recs.push(f32('q_rope', l, pos, 8, 20 + l + pos));
      recs.push(f32('after_attn_hc', l, pos, 16, 30 + l + pos));
      recs.push({ stage: 'router_topk', layer: l, pos, token: TOKENS[pos], dtype: 'i32', shape: [2], values: Int32Array.of(3 + l, 5) });
      recs.push(f32('ffn_out', l, pos, 8, 40 + l + pos));
    }
  });
  recs.push({ stage: 'logits', layer: N_LAYER, pos: 1, token: 42, dtype: 'f32', shape: [6], values: Float32Array.of(0.1, 2, 1.97, -1, 0.5, 0) });
  return recs;
}

/** The device side: the reference plus a small, stage-proportional error, then per-case edits. */
function deviceRecords(edit?: (r: StageRecord) => void, scale = 1e-5): StageRecord[] {
  return referenceRecords().map((r) => {
    const d = { ...r, values: r.values.slice() };
    if (d.values instanceof Float32Array) for (let i = 0; i < d.values.length; i++) d.values[i] += scale * Math.cos(i + r.layer);
    edit?.(d);
    return d;
  });
}

async function writeSide(dir: string, side: string, recs: StageRecord[], of: { fingerprint: string; tokens: number[] } = { fingerprint: 'fp-1', tokens: TOKENS }): Promise<void> {
  const w = await DumpWriter.open(path.join(dir, `${side}.arrow`), { formatVersion: 1, modelFingerprint: of.fingerprint, promptTokens: of.tokens, producer: { backend: side.startsWith('device') ? 'sim' : 'reference', version: '0.1.0' }, side });
  let layer = -1;
  for (const r of recs) {
    if (r.layer !== layer) await w.flush();
    layer = r.layer;
    w.write(r);
  }
  await w.close();
}

interface RunSpec {
  device?: StageRecord[] | null;
  teacher?: StageRecord[];
  f64?: StageRecord[];
  ledger?: FallbackEntry[];
  manifest?: Partial<RunManifest>;
}

let runCount = 0;
async function makeRun(spec: RunSpec = {}): Promise<string> {
  const dir = path.join(root, `run${runCount++}`);
  fs.mkdirSync(dir);
  const files: Record<string, string> = { reference: 'reference.arrow' };
  await writeSide(dir, 'reference', referenceRecords());
  if (spec.device !== null) {
    await writeSide(dir, 'device', spec.device ?? deviceRecords());
    files.device = 'device.arrow';
  }
  if (spec.teacher) {
    await writeSide(dir, 'device-teacher', spec.teacher);
    files['device-teacher'] = 'device-teacher.arrow';
  }
  if (spec.f64) {
    await writeSide(dir, 'reference-f64', spec.f64);
    files['reference-f64'] = 'reference-f64.arrow';
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

async function gateError(p: Promise<unknown>): Promise<Ds4DiffError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(Ds4DiffError);
  return e as Ds4DiffError;
}

const NOW = new Date('2026-11-23T00:00:00Z');

describe('baseline record -> gate', () => {
  it('two captures of the same run compare clean; the recorded baseline gates its own run with exit 0', async () => {
    const run = await makeRun({ device: referenceRecords() });
    const c = await compareRun(run, EMPTY_POLICY);
    expect(c.pass).toBe(true);
    expect(c.counts.failed).toBe(0);
    expect(c.counts.compared).toBe(referenceRecords().length);
    const noisy = await makeRun();
    const b = await recordBaseline(noisy, { now: NOW });
    expect(b.case).toMatchObject({ modelFingerprint: 'fp-1', promptTokens: TOKENS, backend: 'sim', kernelMath: 'exact', layers: { last: 1, all: true } });
    // one entry per (stage, layer); q_rope layer 0 maxAbs is the largest |1e-5 cos(i)| over i < 8 and both positions
    const q0 = b.entries.find((e) => e.stage === 'q_rope' && e.layer === 0)!;
    const expected = Math.max(...referenceRecords().filter((r) => r.stage === 'q_rope' && r.layer === 0).flatMap((r) => [...r.values].map((v, i) => Math.abs(Math.fround(v + 1e-5 * Math.cos(i)) - v))));
    expect(q0.metrics.maxAbs).toBe(expected);
    expect(b.entries.find((e) => e.stage === 'router_topk' && e.layer === 1)!.metrics).toEqual({ exact: true });
    const file = saveBaseline(b, 'roundtrip.json');
    const g = await gate(noisy, file, { now: NOW });
    expect(g.exitCode).toBe(0);
    expect(g.verdict).toBe('pass');
    expect(g.checks.every((k) => k.pass)).toBe(true);
    expect(loadBaseline(file)).toEqual(b);
  });

  it('a perturbed capture fails with exit 1 and names the first divergent stage', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), { now: NOW }), 'perturb.json');
    // layer 1 q_rope and layer 1 ffn_out perturbed: q_rope comes first in graph order
    const bad = await makeRun({ device: deviceRecords((r) => { if ((r.stage === 'q_rope' || r.stage === 'ffn_out') && r.layer === 1 && r.pos === 1) r.values[3] += 0.01; }) });
    const g = await gate(bad, base, { now: NOW });
    expect(g.exitCode).toBe(1);
    expect(g.verdict).toBe('regression');
    expect(g.comparison.firstDivergence).toMatchObject({ stage: 'q_rope', layer: 1, pos: 1 });
    expect(g.reasons[0]).toMatch(/first divergence: q_rope layer 1 pos 1/);
    expect(g.checks.filter((k) => !k.pass).map((k) => `${k.stage}@${k.layer}`)).toEqual(['q_rope@1', 'ffn_out@1']);
  });

  it('growth: up to factor x recorded passes, beyond fails; routing ids must stay exact; NaN fails', async () => {
    const b = await recordBaseline(await makeRun(), { now: NOW, growth: 2 });
    const base = saveBaseline(b, 'growth.json');
    expect((await gate(await makeRun({ device: deviceRecords(undefined, 1.5e-5) }), base, { now: NOW })).exitCode).toBe(0);
    expect((await gate(await makeRun({ device: deviceRecords(undefined, 3e-5) }), base, { now: NOW })).exitCode).toBe(1);
    const routed = await gate(await makeRun({ device: deviceRecords((r) => { if (r.stage === 'router_topk' && r.layer === 0 && r.pos === 1) r.values[0] = 7; }) }), base, { now: NOW });
    expect(routed.exitCode).toBe(1);
    expect(routed.comparison.firstDivergence).toMatchObject({ stage: 'router_topk', layer: 0, pos: 1 });
    const nan = await gate(await makeRun({ device: deviceRecords((r) => { if (r.stage === 'attn_norm' && r.layer === 1 && r.pos === 0) r.values[0] = NaN; }) }), base, { now: NOW });
    expect(nan.exitCode).toBe(1);
    expect(nan.comparison.firstDivergence!.violations.map((v) => v.threshold)).toContain('nonFinite');
  });

  it('a logits near tie passes, a real top-1 flip fails', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), { now: NOW }), 'logits.json');
    // reference logits: token 1 = 2.0, token 2 = 1.97 (margin 0.03 < the 0.1 default ε)
    const tie = deviceRecords((r) => { if (r.stage === 'logits') { r.values[1] = 1.96; r.values[2] = 1.97; } });
    const tieBase = saveBaseline({ ...loadBaseline(base), growth: { ...loadBaseline(base).growth, maxAbsCap: 1, factor: 1e9 } }, 'logits-loose.json');
    const g = await gate(await makeRun({ device: tie }), tieBase, { now: NOW });
    expect(g.comparison.rows.find((r) => r.stage === 'logits')!.nearTie).toBe(true);
    expect(g.exitCode).toBe(0);
    const flip = deviceRecords((r) => { if (r.stage === 'logits') r.values[4] = 2.5; });
    const f = await gate(await makeRun({ device: flip }), tieBase, { now: NOW });
    expect(f.exitCode).toBe(1);
    expect(f.comparison.firstDivergence!.stage).toBe('logits');
  });
});

describe('host fallbacks', () => {
  const ledger: FallbackEntry[] = [{ primitive: 'hc_split_sinkhorn', calls: 2, bytesToHost: 768, bytesToDevice: 768, reason: 'n_hc != 4' }];

  it('an unaccepted fallback is exit 2; accepted passes; expired fails', async () => {
    const run = await makeRun({ ledger });
    const plain = saveBaseline(await recordBaseline(run, { now: NOW }), 'fb-none.json');
    const g = await gate(run, plain, { now: NOW });
    expect(g.exitCode).toBe(2);
    expect(g.fallbackViolations[0]).toMatch(/hc_split_sinkhorn.*not accepted/);
    const accepted = await recordBaseline(run, { now: NOW, acceptFallbackDays: 30 });
    expect(accepted.fallbacks).toEqual([{ primitive: 'hc_split_sinkhorn', reason: 'n_hc != 4', expires: '2026-12-23' }]);
    const file = saveBaseline(accepted, 'fb-ok.json');
    expect((await gate(run, file, { now: NOW })).exitCode).toBe(0);
    const later = await gate(run, file, { now: new Date('2027-01-01T00:00:00Z') });
    expect(later.exitCode).toBe(2);
    expect(later.fallbackViolations[0]).toMatch(/expired on 2026-12-23/);
  });

  it('a host-fallback violation wins over a regression; a gate failure recorded by the run is exit 2', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), { now: NOW }), 'fb-base.json');
    const both = await makeRun({ ledger, device: deviceRecords(undefined, 1e-3) });
    const g = await gate(both, base, { now: NOW });
    expect(g.exitCode).toBe(2);
    expect(g.comparison.pass).toBe(false);
    const gated = await makeRun({ manifest: { exitCode: 2, noHostFallback: true } });
    expect((await gate(gated, base, { now: NOW })).exitCode).toBe(2);
  });
});

describe('refusals and cannot-evaluate', () => {
  it('a baseline for another model, prompt or backend is refused with exit 3 saying what differs', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), { now: NOW }), 'case.json');
    const other = await makeRun({ manifest: { model: { path: '/models/tiny.gguf', fingerprint: 'fp-2' }, backend: 'ascend' } });
    const e = await gateError(gate(other, base, { now: NOW }));
    expect(e.exitCode).toBe(3);
    expect(e.message).toMatch(/model fingerprint fp-2 \(baseline fp-1\)/);
    expect(e.message).toMatch(/backend ascend \(baseline sim\)/);
    const tokens = await makeRun({ manifest: { promptTokens: [0, 43] } });
    expect((await gateError(gate(tokens, base, { now: NOW }))).message).toMatch(/prompt tokens \[0,43\] \(baseline \[0,42\]\)/);
  });

  it('an incomplete run, a bad baseline file: exit 3; a run without a device side: 125', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), { now: NOW }), 'refuse.json');
    const partial = await makeRun({ manifest: { complete: false } });
    expect((await gateError(gate(partial, base))).exitCode).toBe(3);
    const junk = path.join(root, 'junk.json');
    fs.writeFileSync(junk, '{"kind": "something else"}');
    expect((await gateError(gate(await makeRun(), junk))).exitCode).toBe(3);
    const noDevice = await makeRun({ device: null });
    const e = await gateError(gate(noDevice, base));
    expect(e.exitCode).toBe(125);
    expect(e.message).toMatch(/no 'device' dump/);
  });

  it('a malformed baseline is one line naming the file and the problem (exit 3), read only if it is a small regular file', async () => {
    const base = await recordBaseline(await makeRun(), { now: NOW });
    const bad = (name: string, edit: (b: Record<string, unknown>) => void): string => {
      const b = JSON.parse(stringifyJson(base)) as Record<string, unknown>;
      edit(b);
      const f = path.join(root, name);
      fs.writeFileSync(f, JSON.stringify(b));
      return f;
    };
    const cases: Array<[string, RegExp]> = [
      [bad('null-entry.json', (b) => ((b.entries as unknown[])[0] = null)), /null-entry\.json: baseline entry 0 needs stage \(string\), layer \(integer\), metrics \(object\), found null/],
      [bad('fallbacks-obj.json', (b) => (b.fallbacks = { swiglu: true })), /fallbacks-obj\.json: baseline fallbacks must be a list of allowances/],
      [bad('metric-str.json', (b) => (((b.entries as Array<{ metrics: Record<string, unknown> }>)[0].metrics.maxAbs) = 'big')), /metric-str\.json: baseline entry 0 \(.*\): metric 'maxAbs' must be a number/],
      [bad('layers.json', (b) => ((b.case as Record<string, unknown>).layers = 'all')), /layers\.json: baseline case needs backend and layers/],
      ['/dev/zero', /\/dev\/zero: not a regular file \(a character device\); a baseline is a JSON file/],
    ];
    for (const [f, re] of cases) {
      const e = await gateError(gate(await makeRun(), f));
      expect(e.exitCode, f).toBe(3);
      expect(e.message, f).toMatch(re);
      expect(e.message).not.toContain('\n');
    }
    const huge = path.join(root, 'huge.json');
    fs.closeSync(fs.openSync(huge, 'w'));
    fs.truncateSync(huge, 2 ** 30); // sparse: nothing may read it
    expect((await gateError(gate(await makeRun(), huge))).message).toMatch(/huge\.json: 1073741824 bytes is too large for a baseline \(at most 67108864\)/);
  });

  it('a baseline entry the run no longer produces is a regression', async () => {
    const base = saveBaseline(await recordBaseline(await makeRun(), { now: NOW }), 'missing.json');
    const g = await gate(await makeRun({ device: deviceRecords().filter((r) => r.stage !== 'ffn_out') }), base, { now: NOW });
    expect(g.exitCode).toBe(1);
    expect(g.checks.find((k) => k.stage === 'ffn_out' && !k.pass)!.note).toBe('missing from the run');
  });
});

describe('noise floor, own vs inherited, baseline diff, shipped Atlas baseline', () => {
  it('records the reference noise floor from a reference-f64 side and reports the ratio', async () => {
    const f64 = referenceRecords().map((r) => (r.values instanceof Float32Array ? { ...r, values: r.values.map((v) => v + 4e-6) } : r));
    const run = await makeRun({ f64 });
    const b = await recordBaseline(run, { now: NOW });
    const e = b.entries.find((x) => x.stage === 'attn_norm' && x.layer === 0)!;
    expect(e.noiseFloor!.maxAbs).toBeGreaterThan(3.5e-6);
    expect(e.noiseFloor!.maxAbs).toBeLessThan(4.5e-6);
    const g = await gate(run, saveBaseline(b, 'noise.json'), { now: NOW });
    const k = g.checks.find((x) => x.stage === 'attn_norm' && x.layer === 0)!;
    expect(k.noiseRatio).toBeCloseTo(k.measuredMaxAbs! / e.noiseFloor!.maxAbs, 12);
  });

  it('own (teacher-forced) error is reported next to the inherited one', async () => {
    // free-running: attn_norm layer 1 is off and everything after inherits it; teacher-forced: only attn_norm is off
    const broken = (r: StageRecord) => { if (r.layer === 1 && r.stage === 'attn_norm' && r.values instanceof Float32Array) r.values[0] += 0.5; };
    const inherits = (r: StageRecord) => { broken(r); if (r.layer === 1 && r.stage !== 'attn_norm' && r.values instanceof Float32Array) r.values[0] += 0.5; };
    const run = await makeRun({ device: deviceRecords(inherits), teacher: deviceRecords(broken) });
    const c = await compareRun(run, EMPTY_POLICY);
    expect(c.firstDivergence).toMatchObject({ stage: 'attn_norm', layer: 1, pos: 0 });
    const q = c.rows.find((r) => r.stage === 'q_rope' && r.layer === 1 && r.pos === 0)!;
    expect(q.status).toBe('fail');
    expect(q.own!.pass).toBe(true);
    expect(c.firstOwnDivergence).toMatchObject({ stage: 'attn_norm', layer: 1 });
    expect(c.stages.find((s) => s.stage === 'q_rope')!.ownFailed).toBe(0);
  });

  it('baseline diff shows what got worse', async () => {
    const a = await recordBaseline(await makeRun(), { now: NOW });
    const b = await recordBaseline(await makeRun({ device: deviceRecords(undefined, 4e-5) }), { now: NOW, acceptFallbackDays: 1 });
    const d = diffBaselines(a, b);
    const q = d.changes.find((c) => c.stage === 'q_rope' && c.layer === 0 && c.metric === 'maxAbs')!;
    expect(q.worse).toBe(true);
    expect(q.ratio).toBeGreaterThan(3.5);
    expect(formatBaselineDiff(d)).toMatch(/WORSE q_rope@0 maxAbs/);
    expect(formatBaselineDiff(diffBaselines(a, a))).toMatch(/identical/);
  });

  it('the shipped Atlas layer-0 baseline gates a matching run by file name and prompt', async () => {
    const file = path.join(import.meta.dirname, '..', 'baselines', 'atlas-300i-duo-q2-imatrix-layer0-hello.json');
    const b = loadBaseline(file);
    expect(b.entries.map((e) => [e.stage, e.layer, e.metrics.maxAbs])).toEqual([
      ['hc_attn_post_w', 0, 0.0001559], ['hc_attn_comb', 0, 0.000204027], ['q_rope', 0, 0.00925317], ['after_attn_hc', 0, 0.00128685], ['logits', 43, 0.0489826],
    ]);
    const recs = (dev: boolean, err: number): StageRecord[] => ['hc_attn_post_w', 'hc_attn_comb', 'q_rope', 'after_attn_hc', 'logits'].map((stage) => {
      const e = b.entries.find((x) => x.stage === stage)!;
      const values = wave(8, stage.length);
      if (dev) values[2] += err * e.metrics.maxAbs!;
      return { stage, layer: e.layer, pos: 0, token: 0, dtype: 'f32', shape: [8], values };
    });
    const atlas = async (err: number) => {
      const dir = path.join(root, `atlas${runCount++}`);
      fs.mkdirSync(dir);
      // the run's sides are of its model and prompt (the manifest's), as a real run's are
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
    const ok = await gate(await atlas(1.5), file, { now: NOW });
    expect(ok.exitCode).toBe(0);
    expect(ok.warnings.join()).toMatch(/no model fingerprint; matched by model file name/);
    expect((await gate(await atlas(3), file, { now: NOW })).exitCode).toBe(1);
  });
});

describe('policy for rows the baseline does not list, and the CLI', () => {
  it('--policy holds unlisted rows to its thresholds; without it they only fail on hard errors', async () => {
    const b = await recordBaseline(await makeRun(), { now: NOW });
    b.entries = b.entries.filter((e) => e.stage !== 'ffn_out');
    const base = saveBaseline(b, 'partial.json');
    const run = await makeRun({ device: deviceRecords((r) => { if (r.stage === 'ffn_out' && r.layer === 0) r.values[0] += 0.01; }) });
    expect((await gate(run, base, { now: NOW })).exitCode).toBe(0);
    const strict = await gate(run, base, { now: NOW, policy: { version: 1, rules: [{ stage: 'ffn_*', maxAbs: 1e-3 }] } });
    expect(strict.exitCode).toBe(1);
    expect(strict.reasons.join('\n')).toMatch(/ffn_out layer 0 pos 0: maxAbs/);
  });

  it('ds4-diff gate / compare / baseline exit codes and report files through the command line', async () => {
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
      const good = await makeRun();
      const file = path.join(root, 'cli-baseline.json');
      expect(await run('baseline', 'record', good, '--out', file, '--growth', '3')).toBe(0);
      expect(loadBaseline(file).growth.factor).toBe(3);
      const junit = path.join(root, 'cli.xml');
      const md = path.join(root, 'cli.md');
      expect(await run('gate', good, '--baseline', file, '--junit', junit, '--markdown', md)).toBe(0);
      expect(fs.readFileSync(junit, 'utf8')).toMatch(/failures="0"/);
      expect(fs.readFileSync(md, 'utf8')).toMatch(/PASS \(exit 0\)/);
      const bad = await makeRun({ device: deviceRecords((r) => { if (r.stage === 'q_rope') r.values[0] += 1; }) });
      expect(await run('gate', bad, '--baseline', file, '--json')).toBe(1);
      const json = parseJsonOut(out);
      expect(json.gate.exitCode).toBe(1);
      expect(await run('compare', path.join(bad, 'reference.arrow'), path.join(bad, 'device.arrow'))).toBe(1);
      expect(await run('compare', path.join(good, 'reference.arrow'), path.join(good, 'device.arrow'))).toBe(0);
      expect(await run('gate', good)).toBe(3); // --baseline missing: usage
      expect(await run('gate', await makeRun({ device: null }), '--baseline', file)).toBe(125);
      expect(await run('baseline', 'diff', file, file)).toBe(0);
      expect(out.join('')).toMatch(/no 'device' dump/);
    } finally {
      process.stdout.write = write;
      process.stderr.write = err;
    }
  });
});

function parseJsonOut(out: string[]): { gate: { exitCode: number } } {
  const text = out.join('');
  const start = text.lastIndexOf('{\n  "view"');
  return JSON.parse(text.slice(start, text.indexOf('\n}\n', start) + 2)) as { gate: { exitCode: number } };
}
