// Run-directory lifecycle (diff/rundir.ts): fresh or --force, the lock, complete written last, sides
// checked against the manifest, and SIGINT / SIGTERM honoured within a second (a real child process).
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DumpWriter } from '../diff/dump.ts';
import { readManifest, type RunManifest } from '../diff/manifest.ts';
import { LOCK_NAME, checkDumpRunComplete, checkRunSides, openRunDir, withRunDir } from '../diff/rundir.ts';

const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
const tmp = () => mkdtempSync(join(tmpdir(), 'ds4-rundir-'));
const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as RunManifest;

const newManifest = (): RunManifest => ({
  formatVersion: 1, complete: false, createdAt: new Date().toISOString(), model: { path: '/m/tiny.gguf', fingerprint: 'fp-a' },
  promptTokens: [0, 1], layers: { last: 0, all: false }, backend: 'sim', options: {}, files: {}, noHostFallback: true, fallbackLedger: [],
});

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A pid that is certainly not running: a child that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('run directory lifecycle', () => {
  it('a second writer is refused naming the holder; the lock goes with the run', async () => {
    const dir = tmp();
    await withRunDir({ out: dir, manifest: newManifest(), command: 'ds4-diff run -p Hello' }, async (rd) => {
      const lock = JSON.parse(readFileSync(join(dir, LOCK_NAME), 'utf8'));
      expect(lock).toMatchObject({ pid: process.pid, host: hostname(), command: 'ds4-diff run -p Hello' });
      expect(() => openRunDir({ out: dir, force: true, manifest: newManifest() })).toThrow(new RegExp(`in use by pid ${process.pid} on ${hostname()} \\(ds4-diff run -p Hello, since `));
      rd.finish(0);
    });
    expect(existsSync(join(dir, LOCK_NAME))).toBe(false);
    expect(manifestOf(dir)).toMatchObject({ complete: true, exitCode: 0 });
  });

  it('a stale lock of a process that is gone is taken over with a warning; another host\'s is not', () => {
    const dir = tmp();
    const pid = deadPid();
    writeFileSync(join(dir, LOCK_NAME), JSON.stringify({ pid, host: hostname(), command: 'ds4-diff run', startedAt: '2026-01-01T00:00:00Z' }));
    const warnings: string[] = [];
    const rd = openRunDir({ out: dir, force: true, manifest: newManifest(), warn: (m) => warnings.push(m) });
    expect(warnings).toEqual([expect.stringContaining(`taking over the lock of pid ${pid} on ${hostname()}`)]);
    expect(JSON.parse(readFileSync(join(dir, LOCK_NAME), 'utf8')).pid).toBe(process.pid);
    rd.release();

    const dir2 = tmp();
    writeFileSync(join(dir2, LOCK_NAME), JSON.stringify({ pid, host: 'elsewhere', command: 'ds4-diff engine', startedAt: '2026-01-01T00:00:00Z' }));
    expect(() => openRunDir({ out: dir2, force: true, manifest: newManifest() })).toThrow(/in use by pid \d+ on elsewhere .*delete .*\.ds4-diff\.lock/);
  });

  it('an old run needs --force, which clears it; a directory holding no run is never cleared', () => {
    const dir = tmp();
    const a = openRunDir({ out: dir, manifest: newManifest() });
    writeFileSync(join(dir, 'report.md'), 'stale report: PASS');
    a.finish(0);
    a.release();
    expect(() => openRunDir({ out: dir, manifest: newManifest() })).toThrow(/already holds a run \(complete, exit 0, created .*\); give --force/);
    const b = openRunDir({ out: dir, force: true, manifest: newManifest() });
    expect(readdirSync(dir).sort()).toEqual([LOCK_NAME, 'manifest.json'].sort());
    b.release();

    const foreign = tmp();
    writeFileSync(join(foreign, 'thesis.tex'), 'precious');
    expect(() => openRunDir({ out: foreign, force: true, manifest: newManifest() })).toThrow(/not empty and holds no ds4-diff run .*--force only clears run directories/);
    expect(readdirSync(foreign)).toEqual(['thesis.tex']);
  });

  it('complete is written last: an error leaves the manifest incomplete with why, and readers refuse it', async () => {
    const dir = tmp();
    await expect(withRunDir({ out: dir, manifest: newManifest() }, async () => {
      // while it is being written, the run's own gate may read its manifest
      expect(readManifest(dir).complete).toBe(false);
      throw new Error('disk on fire');
    })).rejects.toThrow('disk on fire');
    expect(manifestOf(dir)).toMatchObject({ complete: false, exitCode: 125, error: 'disk on fire' });
    expect(() => readManifest(dir)).toThrow(/the run is incomplete: it ended with exit 125 \(disk on fire\)/);
  });

  it('a dump of an incomplete run is refused by compare and replay (checkDumpRunComplete); of a finished one, read', async () => {
    const dir = tmp();
    const rd = openRunDir({ out: dir, manifest: newManifest() });
    const file = join(dir, 'reference.arrow');
    const w = await DumpWriter.open(file, { formatVersion: 1, modelFingerprint: 'fp-a', promptTokens: [0, 1], producer: { backend: 'x', version: '0' }, side: 'reference' });
    await w.close();
    rd.manifest.files.reference = 'reference.arrow';
    rd.save();
    rd.release(); // ended without finish: interrupted or failed
    expect(() => checkDumpRunComplete(file)).toThrow(/manifest\.json: the run is incomplete \(interrupted, crashed or still running\)/);
    const again = openRunDir({ out: dir, force: true, manifest: { ...newManifest(), files: {} } });
    await (await DumpWriter.open(file, { formatVersion: 1, modelFingerprint: 'fp-a', promptTokens: [0, 1], producer: { backend: 'x', version: '0' }, side: 'reference' })).close();
    again.manifest.files.reference = 'reference.arrow';
    again.finish(0);
    again.release();
    expect(() => checkDumpRunComplete(file)).not.toThrow();
  });

  it('each side must be of the manifest\'s model and prompt', async () => {
    const dir = tmp();
    const write = async (side: string, fp: string, tokens: number[]) => {
      const w = await DumpWriter.open(join(dir, `${side}.arrow`), { formatVersion: 1, modelFingerprint: fp, promptTokens: tokens, producer: { backend: 'x', version: '0' }, side });
      w.write({ stage: 'attn_norm', layer: 0, pos: 0, token: 0, dtype: 'f32', shape: [2], values: new Float32Array([1, 2]) });
      await w.close();
    };
    const m = { ...newManifest(), complete: true, files: { reference: 'reference.arrow', device: 'device.arrow' } };
    await write('reference', 'fp-a', [0, 1]);
    await write('device', 'fp-b', [0, 1]);
    await expect(checkRunSides(dir, m)).rejects.toThrow(/device\.arrow: made with model fp-b, but the run's manifest names fp-a .*not this run's device dump/);
    await write('device', 'fp-a', [0, 1, 7]);
    await expect(checkRunSides(dir, m)).rejects.toThrow(/device\.arrow: made on prompt tokens \[0,1,7\] \(3\), but the run's manifest has \[0,1\] \(2\)/);
    await write('device', 'fp-a', [0, 1]);
    await expect(checkRunSides(dir, m)).resolves.toBeUndefined();
  });

  it('`run` into a directory another run holds is refused (exit 3) naming that run', () => {
    const dir = tmp();
    writeFileSync(join(dir, LOCK_NAME), JSON.stringify({ pid: process.pid, host: hostname(), command: 'ds4-diff run --layer 0 -p Hello', startedAt: '2026-01-01T00:00:00Z' }));
    const r = cli(['run', '--layer', '0', '-p', 'Hello', '--out', dir, '--force']);
    expect(r.code).toBe(3);
    expect(r.err.trim()).toBe(`ds4-diff: ${dir} is in use by pid ${process.pid} on ${hostname()} (ds4-diff run --layer 0 -p Hello, since 2026-01-01T00:00:00Z); wait for it or use another --out`);
  });
});

// a prompt long enough that a run takes tens of seconds on the tiny model (each layer well under a second)
const LONG = Array.from({ length: 9 }, () => 'the quick brown fox jumps over the lazy dog').join(' ');

/** Starts `args`, signals it 1 s after its run directory appears, returns exit code and time to exit. */
async function interrupt(args: string[], dir: string, signal: NodeJS.Signals): Promise<{ code: number | null; exitSeconds: number; err: string }> {
  const child = spawn(process.execPath, [CLI, ...args, '--out', dir], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const t0 = Date.now();
  while (!existsSync(join(dir, 'manifest.json')) && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 1000));
  const sent = Date.now();
  child.kill(signal);
  const code = await exited;
  return { code, exitSeconds: (Date.now() - sent) / 1000, err };
}

describe('SIGINT / SIGTERM during a run', () => {
  it('run: SIGINT 1 s in ends it within 2 s with exit 130, an incomplete manifest, no report, no temp file', async () => {
    const dir = join(tmp(), 'run');
    const r = await interrupt(['run', '-p', LONG], dir, 'SIGINT');
    expect(r.code).toBe(130);
    expect(r.exitSeconds).toBeLessThan(2);
    expect(r.err).toContain(`ds4-diff: interrupted by SIGINT; the run directory ${dir} is incomplete (manifest complete: false)`);
    expect(manifestOf(dir)).toMatchObject({ complete: false, interrupted: 'SIGINT' });
    const files = readdirSync(dir);
    expect(files.filter((f) => /report|junit|\.tmp-|\.lock/.test(f))).toEqual([]);
    expect(cli(['gate', dir, '--baseline', join(import.meta.dirname, '..', 'baselines', 'tiny-sim-hello-all.json')]).err).toContain('the run is incomplete: it was interrupted by SIGINT');
  });

  it('reference --out: SIGTERM ends it with exit 143 and leaves no partial dump', async () => {
    const dir = join(tmp(), 'ref');
    mkdirSync(dir);
    const r = await interrupt(['reference', '-p', `${LONG} ${LONG}`, '--mode', 'decode'], dir, 'SIGTERM');
    expect(r.code).toBe(143);
    expect(r.exitSeconds).toBeLessThan(2);
    expect(manifestOf(dir)).toMatchObject({ complete: false, interrupted: 'SIGTERM' });
    expect(readdirSync(dir).sort()).toEqual(['manifest.json']);
  });
});
