// Arguments a user can get wrong end in one line and a documented exit code; a filter that selects
// nothing is named (a warning when something else is still selected, exit 3 when nothing is).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDump } from '../diff/dump.ts';

const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
const tmp = () => mkdtempSync(join(tmpdir(), 'ds4-cli-'));

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('command-line input', () => {
  it('a wrong flag, a missing argument, an unknown command or flags that exclude each other: one line and exit 3, not the usage', () => {
    for (const [args, line] of [
      [['run', '--layer', '0', '-p', 'Hello', '--pos', '3'], "ds4-diff: unknown option '--pos' (see --help)"],
      [['run', '--lyer', '0'], "ds4-diff: unknown option '--lyer' (Did you mean --layer?) (see --help)"],
      [['gate'], "ds4-diff: missing required argument 'run-dir' (see --help)"],
      [['nosuchcmd'], "ds4-diff: unknown command 'nosuchcmd' (see --help)"],
      [['run', '--layer', '0', '-p', 'Hello', '--tokens', '1,2'], 'ds4-diff: -p and --tokens exclude each other (the prompt as text, or as token ids)'],
    ] as const) {
      const r = cli([...args]);
      expect(r.code, args.join(' ')).toBe(3);
      expect(r.err, args.join(' ')).toBe(`${line}\n`);
    }
  });

  it('an output path that cannot be written (a directory in the way) is one line naming it, exit 3, no temporary file left', () => {
    const d = tmp();
    const model = join(d, 'tiny.gguf');
    expect(cli(['fixture', '--preset', 'tiny', '--out', model]).code).toBe(0);
    const run = join(d, 'run');
    expect(cli(['run', '--layer', '0', '-p', 'Hello', '-m', model, '--out', run]).code).toBe(0);
    const dir = join(d, 'taken');
    mkdirSync(dir);
    for (const [args, what] of [
      [['inspect', model, '--tensor', 'token_embd.weight', '--rows', '0:2', '--dequant', '--out', dir], 'write the rows'],
      [['fixture', '--preset', 'tiny', '--out', dir], 'write the GGUF'],
      [['baseline', 'record', run, '--out', dir], 'write the baseline'],
    ] as const) {
      const r = cli([...args]);
      expect(r.code, args[0]).toBe(3);
      expect(r.err, args[0]).toBe(`ds4-diff: ${dir}: cannot ${what}: is a directory (EISDIR)\n`);
    }
    expect(readdirSync(d).sort()).toEqual(['run', 'taken', 'tiny.gguf']);
  });

  it('inspect --rows: a range whose first row is after its last, or that selects no row, says so (it said "outside tensor")', () => {
    const model = join(tmp(), 'tiny.gguf');
    expect(cli(['fixture', '--preset', 'tiny', '--out', model]).code).toBe(0);
    for (const [rows, line] of [
      ['5:2', "ds4-diff: --rows 5:2: selects no row (rows A..B-1 need A < B)"],
      ['3:3', "ds4-diff: --rows 3:3: selects no row (rows A..B-1 need A < B)"],
      ['0:99999', /^ds4-diff: --rows 0:99999: outside tensor token_embd\.weight \(\d+ rows\)\n$/],
    ] as const) {
      const r = cli(['inspect', model, '--tensor', 'token_embd.weight', '--rows', rows]);
      expect(r.code, rows).toBe(3);
      if (typeof line === 'string') expect(r.err, rows).toBe(`${line}\n`);
      else expect(r.err, rows).toMatch(line);
    }
  });

  it('--tokens with an empty element is refused, not read as token 0', () => {
    const r = cli(['reference', '--tokens', ',,,', '--layer', '0']);
    expect(r.code).toBe(3);
    expect(r.err.trim()).toBe("ds4-diff: --tokens: element 1 of ',,,' is empty (give comma-separated ids, e.g. 0,17,5)");
  });

  it('reference: a filter part that matches nothing is a warning; a filter that captures nothing is exit 3 before running', () => {
    const none = cli(['reference', '-p', 'Hello', '--layer', '0', '--stages', 'nonexistent', '--out', join(tmp(), 'r')]);
    expect(none.code).toBe(3);
    expect(none.err.trim()).toBe("ds4-diff: nothing would be captured: --stages 'nonexistent' matches no stage (see ds4-diff stages)");
    const far = cli(['reference', '-p', 'Hello', '--layer', '0', '--pos', '50']);
    expect(far.code).toBe(3);
    expect(far.err).toMatch(/nothing would be captured: --pos 50: the prompt has \d+ tokens \(positions 0\.\.\d+\)/);

    const dir = join(tmp(), 'r');
    const some = cli(['reference', '-p', 'Hello', '--layer', '1', '--capture-layers', '9', '--pos', '0,50', '--stages', 'q_rope,embed_hc,bogus*', '--out', dir]);
    expect(some.code).toBe(0);
    expect(some.err.split('\n').filter((l) => l.startsWith('ds4-diff: warning:'))).toEqual([
      "ds4-diff: warning: --stages 'bogus*' matches no stage (see ds4-diff stages)",
      'ds4-diff: warning: --capture-layers 9: the run has layers 0..1 (only the embedding and the head are captured)',
      expect.stringMatching(/^ds4-diff: warning: --pos 50: the prompt has \d+ tokens/),
    ]);
    expect(readdirSync(dir).sort()).toEqual(['manifest.json', 'reference.arrow']);
  });

  it('replay: a filter that selects no record is named (exit 3), not "nothing could be replayed"', async () => {
    const dir = join(tmp(), 'r');
    expect(cli(['reference', '-p', 'Hello', '--layer', '0', '--out', dir]).code).toBe(0);
    const dump = join(dir, 'reference.arrow');
    expect((await readDump(dump)).records.length).toBeGreaterThan(0);
    const r = cli(['replay', dump, '--stages', 'bogus', '--layers', '0']);
    expect(r.code).toBe(3);
    expect(r.err.trim()).toBe(`ds4-diff: ${dump}: nothing selected to replay: --stages 'bogus' matches no record`);
    const w = cli(['replay', dump, '--stages', 'q_rope,bogus', '--pos', '0']);
    expect(w.code).toBe(0);
    expect(w.err).toContain(`ds4-diff: warning: --stages 'bogus' matches no record of ${dump}`);
  });
});
