// Renderers of a calibration (ascend/calibrate.ts): one line per (kernel, layer, fault) with the smallest
// magnitude the gate fails and bisect names, a per-kernel summary (its worst threshold over layer kinds and
// faults), the clean runs, and the one line that says whether the bar is met.
import { REQUIRED_MAGNITUDE, calibrationPasses, type Calibration, type KernelCalibration } from '../ascend/calibrate.ts';
import { stringifyJson } from '../diff/json.ts';

const mag = (m: number | null) => (m === null ? 'missed' : m.toExponential(0));
const cell = (k: KernelCalibration, m: number | null) => (k.invisible ? 'invisible' : mag(m));

/** Per kernel: the largest (worst) detection and naming threshold over its rows (invisible faults left out); null when one was missed. */
export function kernelThresholds(c: Calibration): Array<{ kernel: string; detected: number | null; named: number | null; rows: number }> {
  const by = new Map<string, KernelCalibration[]>();
  for (const k of c.kernels) if (!k.invisible) (by.get(k.kernel) ?? by.set(k.kernel, []).get(k.kernel)!).push(k);
  const worst = (xs: Array<number | null>) => (xs.some((x) => x === null) ? null : Math.max(...(xs as number[])));
  return [...by].map(([kernel, rows]) => ({ kernel, detected: worst(rows.map((r) => r.detected)), named: worst(rows.map((r) => r.named)), rows: rows.length }));
}

/** The one line: the bar (REQUIRED_MAGNITUDE everywhere, no false alarm) met or not, and why. */
export function calibrationLine(c: Calibration): string {
  const short = c.kernels.filter((k) => !k.invisible && !(k.detected !== null && k.detected <= REQUIRED_MAGNITUDE && k.named !== null && k.named <= REQUIRED_MAGNITUDE));
  const invisible = c.kernels.filter((k) => k.invisible);
  const alarms = c.clean.filter((r) => r.exitCode !== 0);
  const t = kernelThresholds(c);
  const best = t.filter((k) => k.detected !== null && k.named !== null && Math.max(k.detected, k.named) <= 1e-3).length;
  const parts = [
    short.length
      ? `${short.length} of ${c.kernels.length} planted faults not detected and named at ${REQUIRED_MAGNITUDE} (first: ${short[0].kernel} ${short[0].fault} at layer ${short[0].layer}, ${short[0].kind})`
      : `every planted fault (${c.kernels.length - invisible.length}: ${t.length} kernels × layer kinds × scale, bias) detected and named at ${REQUIRED_MAGNITUDE}; ${best} of ${t.length} kernels at 1e-3 or below`,
    ...(invisible.length ? [`${invisible.length} faults changed no capture (${[...new Set(invisible.map((k) => `${k.kernel} ${k.fault}`))].join(', ')}): nothing a diff could see`] : []),
    c.clean.length ? `${alarms.length} false alarms in ${c.clean.length} clean runs` : 'no clean runs',
  ];
  return `${calibrationPasses(c) ? 'CALIBRATED' : 'NOT CALIBRATED'}: ${parts.join('; ')}`;
}

function cleanLines(c: Calibration): string[] {
  if (!c.clean.length) return [];
  const worst = c.clean.filter((r) => r.closest).sort((a, b) => b.closest!.ratio - a.closest!.ratio)[0];
  const kl = Math.max(...c.clean.map((r) => r.kl ?? 0));
  const maths = [...new Set(c.clean.map((r) => r.kernelMath))].join(', ');
  const lines = [`clean runs: ${c.clean.filter((r) => r.exitCode !== 0).length} of ${c.clean.length} failed (${c.clean.length / maths.split(', ').length} generated prompts × ${maths}, all layers); closest own error ${worst ? `${worst.closest!.ratio.toPrecision(3)}× its budget (${worst.closest!.stage})` : '-'}; largest logits KL ${kl.toExponential(2)}`];
  for (const r of c.clean.filter((x) => x.exitCode !== 0)) lines.push(`  false alarm (${r.kernelMath}, "${r.prompt}"): ${r.line}`);
  return lines;
}

export function renderCalibrationTerminal(c: Calibration): string {
  const out = [`ds4-diff calibrate: ${c.kernelMath} kernel math, ${c.tokens.length} tokens, magnitudes ${c.magnitudes.map((m) => m.toExponential(0)).join(' ')}`, ''];
  if (c.kernels.length) {
    out.push(`${'kernel'.padEnd(28)}${'layer'.padEnd(7)}${'kind'.padEnd(14)}${'fault'.padEnd(7)}${'detected'.padEnd(10)}named`);
    for (const k of c.kernels) out.push(`${k.kernel.padEnd(28)}${String(k.layer).padEnd(7)}${k.kind.padEnd(14)}${k.fault.padEnd(7)}${cell(k, k.detected).padEnd(10)}${cell(k, k.named)}`);
    out.push('', 'per kernel (worst over layer kinds and faults):');
    for (const t of kernelThresholds(c)) out.push(`  ${t.kernel.padEnd(28)}detected ${mag(t.detected).padEnd(8)}named ${mag(t.named)}`);
    out.push('');
  }
  out.push(...cleanLines(c), '', calibrationLine(c));
  return out.join('\n') + '\n';
}

export function renderCalibrationMarkdown(c: Calibration): string {
  const out = [`# ds4-diff calibrate`, '', `**${calibrationLine(c)}**`, '', `${c.kernelMath} kernel math, ${c.tokens.length} tokens (${c.tokens.join(', ')}); magnitudes ${c.magnitudes.map((m) => m.toExponential(0)).join(', ')}.`, ''];
  if (c.kernels.length) {
    out.push('## Detection threshold per kernel', '', '| kernel | faults planted | detected at | named at |', '|---|---|---|---|');
    for (const t of kernelThresholds(c)) out.push(`| ${t.kernel} | ${t.rows} | ${mag(t.detected)} | ${mag(t.named)} |`);
    out.push('', '## Every planted fault', '', '| kernel | layer | kind | fault | detected at | named at | smallest trial |', '|---|---|---|---|---|---|---|');
    for (const k of c.kernels) out.push(`| ${k.kernel} | ${k.layer} | ${k.kind} | ${k.fault} | ${cell(k, k.detected)} | ${cell(k, k.named)} | \`${k.trials.at(-1)?.spec ?? ''}\` |`);
    out.push('');
  }
  if (c.clean.length) out.push('## Clean runs', '', ...cleanLines(c).map((l) => l.replace(/^ {2}/, '- ')), '');
  return out.join('\n');
}

export function renderCalibrationJson(c: Calibration): string {
  return stringifyJson({ line: calibrationLine(c), passes: calibrationPasses(c), thresholds: kernelThresholds(c), ...c });
}
