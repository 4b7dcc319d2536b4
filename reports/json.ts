// JSON report: the view (same tables as the other formats) plus the full structured comparison and
// gate result, with non-finite metrics as "Infinity" / "-Infinity" / "NaN" strings (diff/json.ts).
import { stringifyJson } from '../diff/json.ts';
import { buildView, type ReportInput } from './view.ts';

export function renderJson(input: ReportInput): string {
  const { gate, comparison } = input;
  return stringifyJson({
    view: buildView(input),
    comparison,
    gate: gate ? { exitCode: gate.exitCode, verdict: gate.verdict, reasons: gate.reasons, warnings: gate.warnings, checks: gate.checks, fallbackViolations: gate.fallbackViolations, baseline: gate.baseline, runDir: gate.runDir } : undefined,
  });
}
