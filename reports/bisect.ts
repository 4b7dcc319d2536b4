// The bisect report (issue 6): the verdict line, the evidence table (first divergence, culprit, the
// rows that inherit), the swap trials made, in terminal, Markdown and JSON — one view, three renderers.
import type { BisectResult, EvidenceRow } from '../diff/bisect.ts';
import { stringifyJson } from '../diff/json.ts';
import type { Violation } from '../diff/judge.ts';
import { mdTable } from './markdown.ts';
import { colors, drawTable } from './terminal.ts';
import { fmt, metricCells, type Table } from './view.ts';

export interface BisectReportInput {
  title: string;
  result: BisectResult;
  /** where the tolerances came from (Judge.sources) */
  tolerances: string;
}

/** A row's decisive bound — its first violation, or for a passing row the closest bound — with the relation
 *  its numbers have: past a max bound is `>`, within it `≤` (a min bound: `<`, `≥`). */
const boundText = (v: Violation | undefined) => {
  if (!v) return '-';
  const min = v.key.startsWith('min');
  const past = min ? v.value < v.limit : v.value > v.limit;
  return `${v.key} ${fmt(v.value)} ${past ? (min ? '<' : '>') : min ? '≥' : '≤'} ${fmt(v.limit)}`;
};

function evidenceTable(rows: EvidenceRow[]): Table {
  return {
    columns: ['role', 'stage', 'layer', 'pos', 'kernels', 'inherited max_abs', 'inherited relRms', 'own max_abs', 'own relRms', 'own verdict', 'note'],
    rows: rows.map((r) => {
      const [im, , ir] = metricCells(r.inherited);
      const [om, , or] = metricCells(r.own);
      return {
        cells: [r.role, r.stage, String(r.layer), String(r.pos), r.kernels.join(',') || '-', im, ir, om, or, r.ownWorst ? boundText(r.ownWorst) : r.own ? 'within its budget' : '-', r.note ?? ''],
        fail: r.role !== 'inherits',
        first: r.role.includes('culprit'),
      };
    }),
  };
}

/** A search trial's device set, short enough for a table (the JSON has every name). */
function deviceText(d: string[]): string {
  if (d.length === 0) return 'every kernel on the host';
  return d.length <= 4 ? `only ${d.join(',')} on the device` : `${d.length} kernels on the device (${d.slice(0, 3).join(',')},…)`;
}

function trialsTable(r: BisectResult): Table {
  return {
    columns: ['purpose', 'kernels swapped', 'end result', 'failure'],
    rows: r.trials.map((t) => ({
      cells: [t.purpose, t.deviceOnly ? deviceText(t.deviceOnly) : `${t.hostKernels.join(',') || '(none)'} on the host`, t.pass ? 'within its budget' : 'diverges', t.detail ?? ''],
      fail: !t.pass,
    })),
  };
}

function summaryLines(i: BisectReportInput): string[] {
  const r = i.result;
  const out = [`tolerances: ${i.tolerances}`];
  if (r.firstDivergence) out.push(`first divergence (free-running): ${r.firstDivergence.stage} layer ${r.firstDivergence.layer} pos ${r.firstDivergence.pos}`);
  out.push(`rows judged: ${r.comparison.counts.compared}, failing: ${r.comparison.counts.failed}, device passes: ${r.devicePasses}`);
  return out;
}

export function renderBisectTerminal(i: BisectReportInput): string {
  const c = colors();
  const r = i.result;
  const out = [r.verdict.kernel ? c.red.bold(r.verdict.line) : r.verdict.method === 'none' ? c.green.bold(r.verdict.line) : c.yellow.bold(r.verdict.line), ''];
  out.push(...summaryLines(i).map((s) => `  ${s}`));
  if (r.evidence.length) out.push('', c.bold('evidence (graph order):'), ...drawTable(evidenceTable(r.evidence), c));
  if (r.trials.length) out.push('', c.bold('host swap trials:'), ...drawTable(trialsTable(r), c));
  if (r.notes.length) out.push('', ...r.notes.map((n) => c.yellow(n)));
  return out.join('\n') + '\n';
}

export function renderBisectMarkdown(i: BisectReportInput): string {
  const r = i.result;
  const out = [`# ${i.title}`, '', `**${r.verdict.line}**`, '', ...summaryLines(i).map((s) => `- ${s}`)];
  if (r.evidence.length) out.push('', '## Evidence (graph order)', '', ...mdTable(evidenceTable(r.evidence)));
  if (r.trials.length) out.push('', '## Host swap trials', '', ...mdTable(trialsTable(r)));
  if (r.notes.length) out.push('', ...r.notes.map((n) => `> ${n}`));
  return out.join('\n') + '\n';
}

export function renderBisectJson(i: BisectReportInput): string {
  const r = i.result;
  return stringifyJson({
    title: i.title,
    verdict: r.verdict,
    exit_code: r.exitCode,
    tolerances: i.tolerances,
    first_divergence: r.firstDivergence ?? null,
    evidence: r.evidence,
    trials: r.trials,
    notes: r.notes,
    counts: r.comparison.counts,
  });
}
