// Markdown report, for a CI job summary ($GITHUB_STEP_SUMMARY and the like).
import { buildView, type ReportInput, type Table } from './view.ts';

const esc = (s: string) => s.replace(/\|/g, '\\|');

export function mdTable(t: Table): string[] {
  const out = [`| ${t.columns.map(esc).join(' | ')} |`, `|${t.columns.map(() => '---').join('|')}|`];
  for (const r of t.rows) out.push(`| ${r.cells.map((c, i) => (i === 1 && r.fail ? `**${esc(c)}**` : esc(c))).join(' | ')} |`);
  return out;
}

export function renderMarkdown(input: ReportInput): string {
  const v = buildView(input);
  const out = [`## ${v.title}`, '', `**${v.pass ? '✅' : '❌'} ${v.verdict}**`, '', ...v.summary.map((s) => `- ${s}`), '', '### Stages (graph order; `>>` = the first stage wrong by itself)', '', ...mdTable(v.stages)];
  if (v.layers.rows.length > 1) out.push('', '### By layer', '', ...mdTable(v.layers));
  if (v.failures.rows.length) out.push('', '### Failing rows', '', ...mdTable(v.failures));
  if (v.notes.length) out.push('', ...v.notes.map((n) => `> ${n}`));
  return out.join('\n') + '\n';
}
