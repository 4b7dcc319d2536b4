// Against real ds4.c output (test/fixtures/ds4-oracle-case, its README says how it was made): ds4's own CPU
// reference path on a seed-7 tiny model, "The quick brown fox" with -n 4, every stage dumped in ds4's
// graph-dump protocol. Nobody here wrote these numbers; the tests check the reference, import, replay and
// the engine command against them (llm.c's style: compare against dumped reference activations).
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { readDump } from '../diff/dump.ts';
import type { RunManifest } from '../diff/manifest.ts';
import { configFromGguf } from '../model/config.ts';
import { openGguf } from '../model/gguf.ts';
import { recordKey, type StageRecord } from '../model/stages.ts';
import { runReference } from '../reference/runner.ts';

const CASE = join(import.meta.dirname, 'fixtures', 'ds4-oracle-case');
const MODEL = join(CASE, 'tiny_seed7.gguf');
const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
const cli = (args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300_000, maxBuffer: 256 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
// tokens.txt: the rendered prompt ids, and the greedy ids ds4 generated (the first three fed back)
const ids = (line: string) => readFileSync(join(CASE, 'tokens.txt'), 'utf8').split('\n').find((l) => l.startsWith(line))!.split(' ').slice(1).map(Number);
const PROMPT = ids('prompt');
const GENERATED = ids('generated');
const EVALUATED = [...PROMPT, ...GENERATED.slice(0, -1)];
const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let e = 0, s = 0;
  for (let i = 0; i < a.length; i++) (e += (a[i] - b[i]) ** 2), (s += a[i] * a[i]);
  return s ? Math.sqrt(e / s) : Math.sqrt(e);
};
const argmax = (v: ArrayLike<number>) => {
  let b = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i;
  return b;
};

describe('ds4.c oracle case', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ds4-oracle-'));
  const prefix = join(dir, 'dumps', 'ds4');
  let ds4: Map<string, StageRecord>;

  beforeAll(async () => {
    expect(spawnSync('tar', ['xzf', join(CASE, 'graph_dumps.tar.gz'), '-C', dir]).status).toBe(0);
    for (const f of ['stderr.txt', 'stdout.txt']) copyFileSync(join(CASE, f), join(dir, f));
    // import with no token list: every evaluated token is recovered from ds4's own layer-0 dumps
    const imp = cli(['import', '--ds4-prefix', prefix, '-m', MODEL, '--out', join(dir, 'ds4.arrow')]);
    expect(imp.code, imp.err).toBe(0);
    expect(imp.err).toContain(`tokens at positions 0..23 recovered from the layer-0 dumps: ${EVALUATED.join(',')}`);
    ds4 = new Map((await readDump(join(dir, 'ds4.arrow'))).records.map((r) => [recordKey(r), r]));
  }, 300_000);

  it('import: every one of the 3411 files, the head at the last evaluated position (ds4 rewrites it at each decode step)', async () => {
    expect(ds4.size).toBe(3411);
    const { meta } = await readDump(join(dir, 'ds4.arrow'));
    expect(meta.promptTokens).toEqual(EVALUATED);
    const heads = [...ds4.values()].filter((r) => r.stage === 'logits');
    expect(heads.map((r) => r.pos)).toEqual([EVALUATED.length - 1]);
    // the file's head is the one that chose the last generated token
    expect(argmax(heads[0].values)).toBe(GENERATED.at(-1));
    // given only the prompt, the three decode steps' tokens are recovered
    const imp = cli(['import', '--ds4-prefix', prefix, '-m', MODEL, '--tokens', PROMPT.join(','), '--out', join(dir, 'prompt.arrow')]);
    expect(imp.err).toContain(`tokens at positions 21..23 recovered from the layer-0 dumps: ${GENERATED.slice(0, -1).join(',')}`);
    // tokens that are not the ones ds4 evaluated are refused by the dump that shows it, not imported for a reference of another case
    const wrong = [...PROMPT];
    wrong[5] = (wrong[5] + 1) % 512;
    const bad = cli(['import', '--ds4-prefix', prefix, '-m', MODEL, '--tokens', wrong.join(','), '--out', join(dir, 'wrong.arrow')]);
    expect(bad.code).toBe(3);
    expect(bad.err.trim()).toMatch(/^ds4-diff: \S+ds4_hc_attn_pre-0_pos5\.bin: position 5 is not token \d+'s embedding times a weight \(cosine [-\d.]+\): the run evaluated other tokens than \[/);
    expect(existsSync(join(dir, 'wrong.arrow'))).toBe(false);
  });

  it('replay: every row recomputed from ds4\'s own inputs, none skipped, each within 1e-5 relative and its own budget', () => {
    const r = cli(['replay', join(dir, 'ds4.arrow'), '-m', MODEL, '--kernel-math', 'exact', '--json']);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { counts: { rows: number; replayed: number; skipped: number; failed: number }; comparison: { rows: Array<{ stage: string; own?: { metrics?: { kind: string; relRms?: number; exact?: boolean } } }> } };
    expect(j.counts).toMatchObject({ rows: 3411, replayed: 3411, skipped: 0, failed: 0 });
    for (const row of j.comparison.rows) {
      const m = row.own!.metrics!;
      if (m.kind === 'f32') expect(m.relRms, row.stage).toBeLessThanOrEqual(1e-5);
      else expect(m.exact, row.stage).toBe(true);
    }
  });

  it('replay: ds4\'s Qcur of layer 1 pos 5 off by 1 % is that stage wrong by itself, and nothing before it', () => {
    const file = `${prefix}_Qcur-1_pos5.bin`;
    const bytes = readFileSync(file);
    const v = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    for (let i = 0; i < v.length; i++) v[i] *= 1.01;
    const bad = join(dir, 'bad');
    spawnSync('cp', ['-r', join(dir, 'dumps'), bad]);
    writeFileSync(join(bad, 'ds4_Qcur-1_pos5.bin'), Buffer.from(v.buffer));
    expect(cli(['import', '--ds4-prefix', join(bad, 'ds4'), '-m', MODEL, '--out', join(dir, 'bad.arrow')]).code).toBe(0);
    const r = cli(['replay', join(dir, 'bad.arrow'), '-m', MODEL, '--kernel-math', 'exact', '--json']);
    expect(r.code).toBe(1);
    const j = JSON.parse(r.out) as { firstOwnFailure: { stage: string; layer: number; pos: number }; counts: { failed: number } };
    expect(j.firstOwnFailure).toMatchObject({ stage: 'q_rope', layer: 1, pos: 5 });
  });

  it('the reference, free-running on the same tokens, agrees with ds4 in layer 0 at every position and reproduces its four greedy tokens', async () => {
    const model = await openGguf(MODEL);
    const cfg = configFromGguf(model);
    const heads: number[] = [];
    let compared = 0;
    await runReference({
      model, cfg, tokens: EVALUATED, headPositions: [20, 21, 22, 23],
      tap: (r) => {
        if (r.stage === 'logits') heads.push(argmax(r.values));
        const d = ds4.get(recordKey(r));
        if (r.layer !== 0 || !d) return;
        compared++;
        if (r.dtype === 'i32') expect([...d.values], recordKey(r)).toEqual([...r.values]);
        else expect(rel(r.values, d.values), recordKey(r)).toBeLessThanOrEqual(1e-5);
      },
    });
    model.close();
    expect(compared).toBe([...ds4.values()].filter((r) => r.layer === 0).length);
    expect(heads).toEqual(GENERATED);
  });

  it('engine: the recorded run played back as an engine, -p and -n 4 as ds4 ran, is judged end to end and passes', () => {
    const out = join(dir, 'run');
    const r = cli(['engine', '-m', MODEL, '--out', out, '--', process.execPath, join(import.meta.dirname, 'ds4-oracle-engine.mjs'), '--case', dir,
      '--cpu', '-m', MODEL, '-p', 'The quick brown fox', '-n', '4', '--temp', '0', '--nothink', '-c', '128']);
    expect(r.code, r.err).toBe(0);
    const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as RunManifest;
    // our rendering of -p is ds4's prompt, and the decode steps' tokens are ds4's
    expect(m.promptTokens).toEqual(EVALUATED);
    const e = m.options.engine as { replay: { counts: { replayed: number; skipped: number; failed: number } }; notes: string[] };
    expect(e.replay.counts).toMatchObject({ replayed: 3411, skipped: 0, failed: 0 });
    expect(e.notes.join('\n')).toMatch(/the engine evaluated positions 21\.\.23 past the 21 prompt tokens/);
    expect(r.out).toMatch(/^PASS: every kernel within its own budget \(3411 rows, .*logits KL \S+ within 0\.1, .*top-1 match/m);
  });
});

// Damaged copies of the recorded run, played back as an engine: what was not compared is never a pass, and
// each damage is named (the file, or the layer left out) with exit 1 (the engine wrote something broken).
describe('ds4.c oracle case, damaged', () => {
  const root = mkdtempSync(join(tmpdir(), 'ds4-oracle-damaged-'));
  beforeAll(() => {
    expect(spawnSync('tar', ['xzf', join(CASE, 'graph_dumps.tar.gz'), '-C', root]).status).toBe(0);
  }, 60_000);
  /** A copy of the case whose dumps and recorded `dumped` lines `damage` changed. */
  const damaged = (name: string, damage: (dumps: string, lines: string[]) => string[]) => {
    const dir = join(root, name);
    mkdirSync(dir);
    cpSync(join(root, 'dumps'), join(dir, 'dumps'), { recursive: true });
    copyFileSync(join(CASE, 'stdout.txt'), join(dir, 'stdout.txt'));
    const lines = readFileSync(join(CASE, 'stderr.txt'), 'utf8').match(/ds4: dumped \S+ layer \d+ pos \d+ to \S+/g)!;
    writeFileSync(join(dir, 'stderr.txt'), damage(join(dir, 'dumps'), lines).join('\n') + '\n');
    return dir;
  };
  const engine = (dir: string) => {
    const out = join(dir, 'run');
    const r = cli(['engine', '-m', MODEL, '--out', out, '--', process.execPath, join(import.meta.dirname, 'ds4-oracle-engine.mjs'), '--case', dir,
      '--cpu', '-m', MODEL, '-p', 'The quick brown fox', '-n', '4', '--temp', '0', '--nothink', '-c', '128']);
    const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as RunManifest;
    return { ...r, m, verdict: r.out.split('\n').find((l) => /^(PASS|FAIL|NO VERDICT)/.test(l)) ?? '' };
  };

  it('a layer the engine left out (no layer filter) is rows on one side only: FAIL, exit 1, not a pass on the other layers', () => {
    const dir = damaged('no-layer-2', (dumps, lines) => {
      for (const f of readdirSync(dumps)) if (/-2_pos\d+\./.test(f)) rmSync(join(dumps, f));
      return lines.filter((l) => !/ layer 2 pos /.test(l));
    });
    const r = engine(dir);
    expect(r.code, r.err).toBe(1);
    expect(r.verdict).toMatch(/^FAIL: \d+ rows on one side only \(first \S+ layer 2 pos 0: no candidate row\)/);
  });

  it('a dump at a position the run did not evaluate is rejected by name; the evaluated tokens and the head stay where they were', () => {
    const dir = damaged('stray-pos', (dumps, lines) => {
      renameSync(join(dumps, 'ds4_Qcur-1_pos5.bin'), join(dumps, 'ds4_Qcur-1_pos30.bin'));
      return lines.map((l) => l.replace(/dumped Qcur layer 1 pos 5 to (\S+)_pos5\.bin/, 'dumped Qcur layer 1 pos 30 to $1_pos30.bin'));
    });
    const r = engine(dir);
    expect(r.code, r.err).toBe(1);
    expect(r.m.promptTokens).toEqual(EVALUATED);
    expect(r.err).toMatch(/rejected dump ds4_Qcur-1_pos30\.bin: pos 30: the run evaluated positions 0\.\.23/);
    expect(r.out).not.toMatch(/wrong by itself|end result/);
    // the same directory imported alone: that file named, the rest written, exit 3
    const imp = cli(['import', '--ds4-prefix', join(dir, 'dumps', 'ds4'), '-m', MODEL, '--out', join(dir, 'ds4.arrow')]);
    expect(imp.code, imp.err).toBe(3);
    expect(imp.err).toMatch(/rejected dump \S+ds4_Qcur-1_pos30\.bin: pos 30/);
    expect(imp.err).toMatch(/1 of 3411 dump files rejected/);
  });

  it('a head dumped once too often is rejected by name; it does not move the head or lose the decode steps', () => {
    const dir = damaged('dup-head', (dumps, lines) => {
      copyFileSync(join(dumps, 'ds4_result_output-4_pos0.bin'), join(dumps, 'ds4_result_output-4_pos21.bin'));
      return [...lines, `ds4: dumped result_output layer 4 pos 21 to dumps/ds4_result_output-4_pos21.bin`];
    });
    const r = engine(dir);
    expect(r.code, r.err).toBe(1);
    expect(r.m.promptTokens).toEqual(EVALUATED);
    expect(r.verdict).toMatch(/^FAIL: rejected dump ds4_result_output-4_pos21\.bin: holds logits layer 4 pos 23/);
    expect(r.out).toMatch(/the engine evaluated positions 21\.\.23 past the 21 prompt tokens/);
  });
});
