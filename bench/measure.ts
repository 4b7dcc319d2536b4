// Machine figures measured in the same run as a benchmark, so results are ratios to this machine.
import { spawnSync } from 'node:child_process';
import { openSync, readSync, closeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type Figures = Record<string, number | string>;

/**
 * Run a benchmark module's `measure` in a child process (so its peak RSS is its own): the module, run
 * as a script with the model path, prints its figures as JSON.
 */
export function measureInChild(moduleUrl: string, modelPath: string): Figures {
  const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(moduleUrl), modelPath], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (child.status !== 0) throw new Error(`benchmark ${fileURLToPath(moduleUrl)} failed: ${child.stderr.trim().split('\n').pop()}`);
  return JSON.parse(child.stdout) as Figures;
}

/** True when `moduleUrl` is the script being run (with a model path argument). */
export function isChildRun(moduleUrl: string): boolean {
  return process.argv[1] === fileURLToPath(moduleUrl) && process.argv[2] !== undefined;
}

/** Memory read bandwidth (bytes/s): summing a 256 MiB Float64Array, best of 3. */
export function memoryReadBandwidth(): number {
  const a = new Float64Array(32 << 20);
  for (let i = 0; i < a.length; i += 512) a[i] = i;
  let best = 0;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = process.hrtime.bigint();
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i];
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    if (s < 0) throw new Error('unreachable');
    best = Math.max(best, a.byteLength / dt);
  }
  return best;
}

/** File read bandwidth (bytes/s) of `length` bytes at `offset` through positional reads (page cache warm after the first pass). */
export function fileReadBandwidth(path: string, offset: number, length: number): number {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(Math.min(length, 64 << 20));
  let best = 0;
  try {
    for (let rep = 0; rep < 3; rep++) {
      const t0 = process.hrtime.bigint();
      for (let done = 0; done < length; ) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, length - done), offset + done);
        if (n <= 0) break;
        done += n;
      }
      best = Math.max(best, length / (Number(process.hrtime.bigint() - t0) / 1e9));
    }
  } finally {
    closeSync(fd);
  }
  return best;
}
