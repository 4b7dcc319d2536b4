// The judge's own power and false-alarm rate as benchmark figures: `ds4-diff calibrate` run as a whole
// process on the bundled tiny model (every launched kernel × layer kind × scale and bias faults, and 20
// generated prompts × both kernel maths), its wall time and what it found. The README's calibration table
// comes from this run's Markdown (`--markdown`).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Figures } from './measure.ts';

const CLI = fileURLToPath(new URL('../cli/ds4-diff.js', import.meta.url));

interface CalibrationJson {
  passes: boolean;
  thresholds: Array<{ kernel: string; detected: number | null; named: number | null }>;
  kernels: Array<{ invisible?: boolean }>;
  clean: Array<{ exitCode: number; closest?: { ratio: number }; kl?: number }>;
}

export async function benchCalibrate(): Promise<Figures> {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, 'calibrate', '--clean', '20', '--json'], { encoding: 'utf8', maxBuffer: 256 << 20 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0 && r.status !== 1) throw new Error(`calibrate failed (${r.status}): ${r.stderr.trim().split('\n').pop()}`);
  const c = JSON.parse(r.stdout) as CalibrationJson;
  const worst = (k: 'detected' | 'named') => (c.thresholds.some((t) => t[k] === null) ? 'missed' : Math.max(...c.thresholds.map((t) => t[k] as number)));
  return {
    'calibrate.wall_s': seconds,
    'calibrate.passes': String(c.passes),
    'calibrate.kernels': c.thresholds.length,
    'calibrate.faults_planted': c.kernels.length,
    'calibrate.faults_invisible': c.kernels.filter((k) => k.invisible).length,
    'calibrate.worst_detected': worst('detected'),
    'calibrate.worst_named': worst('named'),
    'calibrate.kernels_at_1e-4': c.thresholds.filter((t) => t.detected !== null && t.named !== null && Math.max(t.detected, t.named) <= 1e-4).length,
    'calibrate.clean_runs': c.clean.length,
    'calibrate.false_alarms': c.clean.filter((x) => x.exitCode !== 0).length,
    'calibrate.closest_own_ratio': Math.max(...c.clean.map((x) => x.closest?.ratio ?? 0)),
    'calibrate.max_clean_kl': Math.max(...c.clean.map((x) => x.kl ?? 0)),
  };
}
