// How bench/ measures: whole processes, each run by the native launcher (native/measure/ds4_measure.cc:
// fork + wait4, that child's own wall time, CPU time and peak RSS, whatever else the machine runs), the two
// sides of a comparison alternated within each repetition so both see the same machine, medians over the
// repetitions; and the machine itself: its CPU, its load, its memory read bandwidth measured natively.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultAddonPath, loadAddon, type NativeAddon } from '../ascend/native.ts';

/** One child process's exit and usage, as the launcher reports it. */
export interface ProcessUsage {
  /** exit code, or 128 + the signal that ended it */
  status: number;
  wallS: number;
  userS: number;
  sysS: number;
  maxRssBytes: number;
}

const LAUNCHER = join(defaultAddonPath, '..', 'ds4_measure');

export type Figures = Record<string, number | string>;

export function addon(): NativeAddon {
  const a = loadAddon();
  if (!a.ok) throw new Error(`bench needs the addon (it measures memory bandwidth): ${a.reason}`);
  return a.addon;
}

/** One command line: what runs, and what the report calls it. */
export interface Command {
  label: string;
  argv: string[];
}

export interface Measured extends ProcessUsage {
  /** the command's stdout */
  stdout: string;
}

/** Runs a command once, measured; a failure (non-zero exit) stops the benchmark with its stderr's last line. */
export function measure(c: Command): Measured {
  const dir = mkdtempSync(join(tmpdir(), 'ds4-bench-'));
  try {
    const out = join(dir, 'stdout'), err = join(dir, 'stderr');
    if (!existsSync(LAUNCHER)) throw new Error(`bench needs the native build (${LAUNCHER}): node native/install.mjs`);
    const launched = spawnSync(LAUNCHER, [out, err, ...c.argv], { encoding: 'utf8' });
    if (launched.status !== 0) throw new Error(`${c.label}: the launcher failed: ${launched.stderr.trim()}`);
    const u = JSON.parse(launched.stdout) as ProcessUsage;
    if (u.status !== 0) throw new Error(`${c.label}: ${c.argv.join(' ')} exited ${u.status}: ${readFileSync(err, 'utf8').trim().split('\n').pop()}`);
    return { ...u, stdout: readFileSync(out, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The medians of a command's repetitions: wall and CPU seconds, peak RSS. */
export interface Summary {
  wallS: number;
  cpuS: number;
  maxRssBytes: number;
  reps: number;
}

export function summarize(runs: ProcessUsage[]): Summary {
  return {
    wallS: median(runs.map((r) => r.wallS)),
    cpuS: median(runs.map((r) => r.userS + r.sysS)),
    maxRssBytes: median(runs.map((r) => r.maxRssBytes)),
    reps: runs.length,
  };
}

/**
 * Each command of `group` once per repetition, in turn (a, b, a, b, ...): commands compared with one
 * another see the same machine. `check` sees every run's stdout (a pairing must compute the same thing).
 */
export function alternate(group: Command[], reps: number, check?: (label: string, stdout: string) => void): Map<string, ProcessUsage[]> {
  const runs = new Map<string, ProcessUsage[]>(group.map((c) => [c.label, []]));
  for (let r = 0; r < reps; r++) {
    for (const c of group) {
      const m = measure(c);
      check?.(c.label, m.stdout);
      runs.get(c.label)!.push(m);
    }
  }
  return runs;
}

/** The machine a run was measured on: CPU, cores, load, native memory read bandwidth. */
export function machine(): Figures {
  const a = addon();
  const c = cpus();
  return {
    'machine.cpu': c[0]?.model ?? 'unknown',
    'machine.cores': c.length,
    'machine.load_1min': loadavg()[0],
    'machine.memory_read_bytes_per_s_1_thread': a.readBandwidth(256 << 20, 1, 5),
    [`machine.memory_read_bytes_per_s_${c.length}_threads`]: a.readBandwidth(256 << 20, c.length, 5),
  };
}

/** A scratch directory for the run directories the measured commands write; removed when done. */
export function scratch(): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'ds4-bench-runs-'));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}
