// JSON report: the verdict, the view (same tables as the other formats) and the full judged comparison,
// with non-finite metrics as "Infinity" / "-Infinity" / "NaN" strings (diff/json.ts).
import { stringifyJson } from '../diff/json.ts';
import { buildView, type ReportInput } from './view.ts';

export function renderJson(input: ReportInput): string {
  return stringifyJson({ verdict: input.verdict, view: buildView(input), sources: input.sources, comparison: input.comparison });
}
