// `ds4-diff run` as a user runs it: a child process, exit codes, the run directory and its reports.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDump, DumpWriter } from '../diff/dump.ts';
import type { RunManifest } from '../diff/manifest.ts';

const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', ...env }, timeout: 120_000, maxBuffer: 256 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const tmp = () => mkdtempSync(join(tmpdir(), 'ds4-run-'));
const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as RunManifest;

describe('ds4-diff run', () => {
  it('runs the main job on the bundled model and passes its shipped baseline', () => {
    const dir = tmp();
    const r = cli(['run', '--layer', '0', '-p', 'Hello', '--out', dir]);
    expect(r.err).not.toMatch(/at .*\.ts:\d+/); // no stack trace
    expect(r.code).toBe(0);
    // the shipped baseline of this case is found and named; the verdict is the last line of the report
    expect(r.out.split('\n')[0]).toMatch(/, baseline \S*baselines\/tiny-sim-hello-layer0\.json$/);
    expect(r.out).toMatch(/^PASS: every kernel within its own budget/m);
    const m = manifestOf(dir);
    expect(m.complete).toBe(true);
    expect(Object.keys(m.files).sort()).toEqual(['device', 'device-teacher', 'reference', 'reference-noise', 'reference-ties']);
    // the kernels each stage was produced by, which its device bound sums over
    expect(m.producers!.attn_heads).toEqual(['attention_decode']);
    expect(m.fallbackLedger).toEqual([]);
    for (const f of ['report.md', 'junit.xml', 'report.html']) expect(existsSync(join(dir, f)), f).toBe(true);
    expect(readFileSync(join(dir, 'junit.xml'), 'utf8')).toContain('<testcase');
  });

  it('--markdown/--junit/--html copies leave the run directory its own reports; a report path that cannot be written is refused before the run', () => {
    const dir = tmp(), copies = tmp();
    const [md, xml, html] = ['r.md', 'r.xml', 'r.html'].map((f) => join(copies, f));
    const r = cli(['run', '--layer', '0', '-p', 'Hello', '--markdown', md, '--junit', xml, '--html', html, '--out', join(dir, 'run')]);
    expect(r.code, r.err).toBe(0);
    for (const f of ['report.md', 'junit.xml', 'report.html']) expect(existsSync(join(dir, 'run', f)), f).toBe(true);
    expect(readFileSync(md, 'utf8')).toBe(readFileSync(join(dir, 'run', 'report.md'), 'utf8'));
    for (const f of [xml, html]) expect(existsSync(f), f).toBe(true);
    // no such directory / a directory in the way: one line, exit 3, nothing run (no run directory made)
    for (const [flag, file, msg] of [['--csv', join(dir, 'no-such-dir', 'rows.csv'), /cannot write the report: no such file or directory \(ENOENT\)$/], ['--html', copies, /cannot write the report: it is a directory$/]] as const) {
      const bad = cli(['run', '--layer', '0', '-p', 'Hello', flag, file, '--out', join(dir, 'refused')]);
      expect(bad.code, flag).toBe(3);
      expect(bad.err.trim().split('\n'), flag).toHaveLength(1);
      expect(bad.err.trim(), flag).toMatch(msg);
      expect(existsSync(join(dir, 'refused')), flag).toBe(false);
    }
  });

  it('stops with exit 2 naming the primitive, layer, pos and stage when a kernel is missing', async () => {
    const dir = tmp();
    const r = cli(['run', '--layer', '0', '-p', 'Hello', '--disable-kernel', 'swiglu', '--out', dir]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('host fallback disabled: swiglu (layer 0, pos 0, stage shared_mid)');
    const m = manifestOf(dir);
    expect(m.fallbackLedger[0]).toMatchObject({ primitive: 'swiglu', layer: 0, pos: 0, stage: 'shared_mid' });
    // what was captured before the stop is kept, readable
    const dev = await readDump(join(dir, m.files.device));
    expect(dev.records.some((x) => x.stage === 'q_rope')).toBe(true);
    expect(dev.records.some((x) => x.stage === 'shared_mid')).toBe(false);
  });

  it('a run stopped on the no-host-fallback gate prints and writes its verdict like any run (exit 2), a generating one too', () => {
    for (const extra of [[], ['--generate', '2']]) {
      const dir = tmp();
      const r = cli(['run', '--layer', '0', '-p', 'Hello', '--disable-kernel', 'swiglu', ...extra, '--out', dir]);
      expect(r.code, extra.join(' ') + r.err).toBe(2);
      const line = r.out.split('\n').find((l) => /^(PASS|FAIL|NO VERDICT)/.test(l));
      expect(line, extra.join(' ')).toMatch(/^FAIL \(host fallback\): host fallback 'swiglu' /);
      expect(readFileSync(join(dir, 'report.md'), 'utf8')).toContain(line!);
      expect(readFileSync(join(dir, 'junit.xml'), 'utf8')).toContain('name="verdict (exit 2)"');
      expect(manifestOf(dir)).toMatchObject({ complete: true, exitCode: 2 });
    }
  });

  it('with --allow-host-fallback records the fallback with bytes in the ledger; the baseline (accepting none) gates exit 2', () => {
    const dir = tmp();
    const r = cli(['run', '--layer', '0', '-p', 'Hello', '--disable-kernel', 'swiglu', '--allow-host-fallback', '--out', dir]);
    expect(r.code).toBe(2);
    const e = manifestOf(dir).fallbackLedger.find((x) => x.primitive === 'swiglu')!;
    expect(e.calls).toBeGreaterThan(0);
    expect(e.bytesToHost).toBeGreaterThan(0);
    expect(e.bytesToDevice).toBeGreaterThan(0);
  });

  it('refuses contradictions and unavailable backends with one line and exit 3', () => {
    const a = cli(['run', '--layer', '0', '-p', 'Hello', '--backend', 'ascend']);
    expect(a.code).toBe(3);
    expect(a.err.trim().split('\n')).toHaveLength(1);
    expect(a.err).toContain('CANN');
    const b = cli(['run', '--layer', '0', '-p', 'Hello', '--allow-host-fallback'], { DS4_ASCEND_NO_HOST_FALLBACK: '1' });
    expect(b.code).toBe(3);
    const c = cli(['run', '--layer', '99', '-p', 'Hello']);
    expect(c.code).toBe(3);
    expect(c.err).toContain('layer 99');
    const bad = join(tmp(), 'bad.gguf');
    writeFileSync(bad, Buffer.from('GGUF\x03\x00\x00\x00garbage'));
    const d = cli(['run', '-m', bad, '-p', 'Hello']);
    expect(d.code).toBe(3);
    expect(d.err).toContain(bad);
    expect(d.err.trim().split('\n')).toHaveLength(1);
  });

  it('--allow-host-fallback without a baseline accepting the fallback is a host-fallback failure (exit 2) in every report, never a pass', () => {
    const dir = tmp();
    const r = cli(['run', '--layer', '0', '-p', 'Hello', '--disable-kernel', 'router_select', '--allow-host-fallback', '--no-baseline', '--out', dir]);
    expect(r.code, r.out).toBe(2);
    const line = r.out.split('\n').find((l) => /^(PASS|FAIL|NO VERDICT)/.test(l))!;
    expect(line).toMatch(/^FAIL \(host fallback\): host fallback 'router_select' \(10 calls, .*\): no baseline accepts it$/);
    expect(readFileSync(join(dir, 'report.md'), 'utf8')).toContain(line);
    expect(manifestOf(dir).exitCode).toBe(2);
    const g = cli(['gate', dir, '--no-baseline']);
    expect(g.code).toBe(2);
  });

  it('a fallback a baseline accepts passes `gate` on the run directory until the allowance expires; a run the gate stopped never does', () => {
    const dir = tmp(), stopped = tmp(), bl = join(tmp(), 'accepting.json');
    expect(cli(['run', '--layer', '0', '-p', 'Hello', '--disable-kernel', 'router_select', '--allow-host-fallback', '--no-baseline', '--out', dir]).code).toBe(2);
    expect(cli(['baseline', 'record', dir, '--out', bl, '--accept-fallbacks', '30']).code).toBe(0);
    // the run's own exit (2: nothing accepted it then) is not a gate stop: the baseline's allowance judges it now
    const g = cli(['gate', dir, '--baseline', bl]);
    expect(g.code, g.out).toBe(0);
    expect(g.out).toMatch(/^PASS: /m);
    const expired = JSON.parse(readFileSync(bl, 'utf8'));
    expired.fallbacks[0].expires = '2020-01-01';
    writeFileSync(bl, JSON.stringify(expired));
    const e = cli(['gate', dir, '--baseline', bl]);
    expect(e.code).toBe(2);
    expect(e.out).toMatch(/^FAIL \(host fallback\): host fallback 'router_select' .*: its allowance expired on 2020-01-01/m);
    // stopped by the gate (no --allow-host-fallback): a host-fallback failure whatever a baseline accepts
    expired.fallbacks[0].expires = '2099-01-01';
    writeFileSync(bl, JSON.stringify(expired));
    expect(cli(['run', '--layer', '0', '-p', 'Hello', '--disable-kernel', 'router_select', '--no-baseline', '--out', stopped]).code).toBe(2);
    const s = cli(['gate', stopped, '--baseline', bl]);
    expect(s.code).toBe(2);
    expect(s.out).toMatch(/^FAIL \(host fallback\): the no-host-fallback gate stopped the run/m);
  });

  it('--capture stats keeps statistics, re-captures the region around the first divergence in full and still names the planted fault', async () => {
    const full = tmp(), stats = tmp();
    const args = ['run', '--layer', '0', '-p', 'Hello', '--inject', 'rope_tail:pairs-halves', '--no-baseline'];
    const a = cli([...args, '--capture', 'full', '--out', full]);
    const b = cli([...args, '--capture', 'stats', '--out', stats]);
    expect([a.code, b.code]).toEqual([1, 1]);
    // the same verdict line: the kernel's first own failure, judged in full in the re-captured region
    const verdict = (out: string) => out.split('\n').find((l) => l.startsWith('FAIL'))!;
    expect(verdict(b.out)).toMatch(/^FAIL: q_rope layer 0 pos 1 is wrong by itself: own error relRms [\d.e+-]+ vs/);
    expect(verdict(b.out)).toBe(verdict(a.out));
    const m = manifestOf(stats);
    expect(m.capture).toMatchObject({ mode: 'stats', region: { layers: [0], pos: [0, 1] } });
    const dev = await readDump(join(stats, m.files['device-teacher']));
    expect(dev.meta.capture!.mode).toBe('stats');
    const kind = (stage: string, pos: number) => dev.records.find((r) => r.stage === stage && r.pos === pos && r.layer === 0)!.kind ?? 'full';
    expect([kind('q_rope', 1), kind('q_rope', 0), kind('q_rope', 5), kind('router_topk', 5)]).toEqual(['full', 'full', 'stats', 'full']);
    // every side is smaller than the full capture of the same case
    const size = (dir: string, side: string) => statSync(join(dir, manifestOf(dir).files[side])).size;
    for (const side of ['reference', 'reference-noise', 'device', 'device-teacher']) expect(size(stats, side)).toBeLessThan(size(full, side) / 2);
  });

  it('--capture stats fails a 1 % kernel fault past layer 0 as --capture full does: the noise keeps the approximation twin, and a decision row past its budget is re-captured', () => {
    // attention_decode's Ascend worst-case bound (~1.2 %) would pass a 1 % fault: only the approximation twin of
    // the row keeps the budget tight; the compressor's pooled row ends in FP8 codes, undecided by statistics
    for (const spec of ['attention_decode:scale=1.01@2', 'compressor_update_pool:bias=0.01@2']) {
      const full = tmp(), stats = tmp();
      const args = ['run', '--layer', '2', '-p', 'Hello', '--inject', spec, '--no-baseline'];
      const a = cli([...args, '--capture', 'full', '--out', full]);
      const b = cli([...args, '--capture', 'stats', '--out', stats]);
      expect([a.code, b.code], spec).toEqual([1, 1]);
      // the same first row wrong by itself, with the same own error (how many more fail: the region's rows only)
      const verdict = (out: string) => out.split('\n').find((l) => /^(PASS|FAIL)/.test(l))?.split(';')[0];
      expect(verdict(b.out), spec).toBe(verdict(a.out));
      // the region's rows written again in full are the first pass's rows: no false note of a non-deterministic producer
      expect(b.out, spec).not.toMatch(/not deterministic/);
    }
  });

  it('writes a CSV row per (stage, layer, pos) and splits the terminal table by layer, for run, gate and compare alike', () => {
    const dir = tmp();
    const r = cli(['run', '--layer', '1', '-p', 'Hello', '--out', dir, '--csv', join(dir, 'run.csv'), '--by-layer']);
    expect(r.code).toBe(0);
    // by layer: the stage table has a layer column, one line per (stage, layer)
    expect(r.out).toMatch(/\n\s+q_rope\s+0\s+10\s+0\s/);
    expect(r.out).toMatch(/\n\s+q_rope\s+1\s+10\s+0\s/);
    const csv = readFileSync(join(dir, 'run.csv'), 'utf8').trimEnd().split('\n');
    const g = cli(['gate', dir, '--csv', join(dir, 'gate.csv')]);
    expect(g.code).toBe(0);
    expect(readFileSync(join(dir, 'gate.csv'), 'utf8').trimEnd().split('\n')).toEqual(csv);
    const m = manifestOf(dir);
    const c = cli(['compare', join(dir, m.files.reference), join(dir, m.files.device), '--csv', join(dir, 'compare.csv')]);
    const rows = readFileSync(join(dir, 'compare.csv'), 'utf8').trimEnd().split('\n');
    expect(c.code).toBe(0);
    // the same rows, one per (stage, layer, pos) of the run, with the worst element where the sides differ
    expect(rows.length).toBe(csv.length);
    expect(rows.map((l) => l.split(',').slice(0, 3).join(','))).toEqual(csv.map((l) => l.split(',').slice(0, 3).join(',')));
    const head = rows[0].split(',');
    const attnOut = rows.find((l) => l.startsWith('attn_out,1,3,'))!.split(',');
    expect(Number(attnOut[head.indexOf('worst_index')])).toBeGreaterThanOrEqual(0);
    expect(Math.abs(Number(attnOut[head.indexOf('worst_ref')]) - Number(attnOut[head.indexOf('worst_dev')]))).toBe(Number(attnOut[head.indexOf('max_abs')]));
  });

  it('--generate N: the device generates greedily, the reference follows its tokens, every position is judged, the end result over the steps', async () => {
    const dir = tmp();
    const r = cli(['run', '--layer', '1', '-p', 'Hello', '--generate', '4', '--out', dir, '--json']);
    expect(r.code).toBe(0);
    const m = manifestOf(dir);
    const T = m.promptTokens.length;
    expect(m.generated).toHaveLength(4);
    expect(m.tokenPieces).toHaveLength(T + 4);
    const dev = await readDump(join(dir, m.files.device));
    const ref = await readDump(join(dir, m.files.reference));
    // the prompt stays the dumps' prompt; the rows carry the generated tokens at their positions
    expect(dev.meta.promptTokens).toEqual(m.promptTokens);
    for (let k = 0; k < 3; k++) {
      for (const d of [dev, ref]) expect(d.records.find((x) => x.stage === 'embed_hc' && x.pos === T + k)!.token).toBe(m.generated![k]);
    }
    expect(dev.records.some((x) => x.pos === T + 3)).toBe(false); // the last generated token is never run
    // the head at every generating step, on both sides; each step's device top-1 is the next token
    const logits = (d: typeof dev) => d.records.filter((x) => x.stage === 'logits').map((x) => x.pos);
    expect(logits(dev)).toEqual([T - 1, T, T + 1, T + 2]);
    expect(logits(ref)).toEqual(logits(dev));
    for (const x of dev.records.filter((y) => y.stage === 'logits')) {
      const v = x.values as Float32Array;
      expect(v.indexOf(Math.max(...v))).toBe(m.generated![x.pos - (T - 1)]);
    }
    const report = JSON.parse(r.out) as { view: { endResult: { positions: number; sameTop1: number }; summary: string[] }; comparison: { counts: { own: number } } };
    expect(report.view.endResult.positions).toBe(4);
    expect(report.view.summary.some((l) => /^end result over 4 positions: KL mean \S+, median \S+, 99% \S+, max \S+; same top-1 \S+ %/.test(l))).toBe(true);
    // the teacher-forced pass judged every position's own error, decode steps included
    const teacher = await readDump(join(dir, m.files['device-teacher']));
    expect(new Set(teacher.records.map((x) => x.pos)).size).toBe(T + 3);
    expect(cli(['run', '--layer', '0', '-p', 'Hello', '--generate', '0']).err.trim()).toBe("ds4-diff: --generate: '0' is not a number of tokens (1..4096)");
  });

  it('--full and --capture refuse what they do not know with one line and exit 3', () => {
    const a = cli(['run', '--layer', '0', '-p', 'Hello', '--capture', 'stats', '--full', 'no_such_stage@0']);
    expect(a.code).toBe(3);
    expect(a.err.trim()).toBe("ds4-diff: --full 'no_such_stage@0': 'no_such_stage' matches no stage (see ds4-diff stages)");
    const b = cli(['run', '--layer', '0', '-p', 'Hello', '--capture', 'most']);
    expect(b.code).toBe(3);
    expect(b.err.trim()).toBe("ds4-diff: --capture must be full, stats or auto, not 'most'");
  });

  it('a perturbed device capture fails the gate with exit 1 and names the first divergent stage', async () => {
    const dir = tmp();
    expect(cli(['run', '--layer', '0', '-p', 'Hello', '--out', dir]).code).toBe(0);
    const m = manifestOf(dir);
    const { meta, records } = await readDump(join(dir, m.files.device));
    const w = await DumpWriter.open(join(dir, m.files.device), meta);
    for (const rec of records) {
      if (rec.stage === 'attn_out' && rec.pos === 2) rec.values = Float32Array.from(rec.values, (v) => v * 1.5);
      w.write(rec);
    }
    await w.close();
    const g = cli(['gate', dir, '--baseline', join(import.meta.dirname, '..', 'baselines', 'tiny-sim-hello-layer0.json')]);
    // the teacher-forced pass is untouched (no own error); the free-running row is past the baseline's drift envelope
    expect(g.code).toBe(1);
    expect(g.out).toMatch(/^FAIL: 1 free-running rows past their envelope \(first attn_out layer 0 pos 2/m);
  });
});
