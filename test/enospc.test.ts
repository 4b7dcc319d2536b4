// The environment failing while we write (disk full): one line naming the file, exit 125, and nothing
// already written is lost — a half dump is removed, a manifest being rewritten stays as it was.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';

// node:fs with a disk that fills up on demand: writeSync / writeFileSync throw ENOSPC while `full`
const disk = vi.hoisted(() => ({ full: false }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  const mocked = {
    ...real,
    writeSync: (...a: Parameters<typeof real.writeSync>) => {
      if (disk.full) throw enospc();
      return (real.writeSync as (...x: unknown[]) => number)(...a);
    },
    writeFileSync: (...a: Parameters<typeof real.writeFileSync>) => {
      if (disk.full) throw enospc();
      return real.writeFileSync(...a);
    },
  };
  return { ...mocked, default: mocked };
});

const { DumpWriter } = await import('../diff/dump.ts');
const { writeManifest } = await import('../diff/manifest.ts');
const { Ds4DiffError } = await import('../model/errors.ts');

const dir = fs.mkdtempSync(join(tmpdir(), 'ds4-enospc-'));

async function error(p: Promise<unknown> | (() => unknown)): Promise<InstanceType<typeof Ds4DiffError>> {
  const e = await (typeof p === 'function' ? Promise.resolve().then(p) : p).then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(Ds4DiffError);
  return e as InstanceType<typeof Ds4DiffError>;
}

describe('disk full while writing', () => {
  it('a dump: exit 125 naming it, no temp file, no final file', async () => {
    const file = join(dir, 'device.arrow');
    const w = await DumpWriter.open(file, { formatVersion: 1, modelFingerprint: 'f', promptTokens: [0], producer: { backend: 'x', version: '0' }, side: 'device' });
    w.write({ stage: 'attn_norm', layer: 0, pos: 0, token: 0, dtype: 'f32', shape: [4], values: new Float32Array(4) });
    disk.full = true;
    try {
      const e = await error(w.flush());
      expect(e.exitCode).toBe(125);
      expect(e.message).toBe(`${file}: cannot write the dump: no space left on the device (ENOSPC)`);
    } finally {
      disk.full = false;
    }
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('device.arrow'))).toEqual([]);
  });

  it('a manifest: exit 125 naming it; the previous manifest stays whole', async () => {
    const m = { formatVersion: 1, complete: true, createdAt: 'then', model: { path: 'm', fingerprint: 'f' }, promptTokens: [0], layers: { last: 0, all: false }, backend: 'sim', options: {}, files: {}, noHostFallback: true, fallbackLedger: [] };
    writeManifest(dir, m);
    const before = fs.readFileSync(join(dir, 'manifest.json'), 'utf8');
    disk.full = true;
    try {
      const e = await error(() => writeManifest(dir, { ...m, createdAt: 'now' }));
      expect(e.exitCode).toBe(125);
      expect(e.message).toBe(`${join(dir, 'manifest.json')}: cannot write the run manifest: no space left on the device (ENOSPC)`);
    } finally {
      disk.full = false;
    }
    expect(fs.readFileSync(join(dir, 'manifest.json'), 'utf8')).toBe(before);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('a report on a full device (/dev/full) through `run`: exit 125 naming it; the run stays incomplete, its dumps kept', () => {
    const out = join(dir, 'run');
    const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'cli', 'ds4-diff.js'), 'run', '--layer', '0', '-p', 'Hello', '--out', out, '--markdown', '/dev/full'], { encoding: 'utf8' });
    expect(r.status).toBe(125);
    // one error line; a loaded machine may also log progress lines (`run: ... (1.3 s)`) before it
    const lines = r.stderr.trim().split('\n');
    expect(lines.filter((l) => !/^run: .* \(\d+\.\d s\)$/.test(l))).toEqual(['ds4-diff: /dev/full: cannot write the report: no space left on the device (ENOSPC)']);
    const m = JSON.parse(fs.readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(m).toMatchObject({ complete: false, exitCode: 125, error: '/dev/full: cannot write the report: no space left on the device (ENOSPC)' });
    // the run directory's own reports are written before the asked-for copy fails
    expect(fs.readdirSync(out).sort()).toEqual(['device-teacher.arrow', 'device.arrow', 'junit.xml', 'manifest.json', 'reference-noise.arrow', 'reference-ties.arrow', 'reference.arrow', 'report.html', 'report.md']);
  });
});
