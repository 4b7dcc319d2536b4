// A single static HTML page with the same tables (no scripts, no external assets).
import { buildView, type ReportInput, type Table } from './view.ts';

const h = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function htmlTable(t: Table): string {
  const head = `<tr>${t.columns.map((c) => `<th>${h(c)}</th>`).join('')}</tr>`;
  const body = t.rows.map((r) => `<tr class="${r.first ? 'first' : r.fail ? 'fail' : ''}">${r.cells.map((c) => `<td>${h(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table>\n${head}\n${body}\n</table>`;
}

export function renderHtml(input: ReportInput): string {
  const v = buildView(input);
  const parts = [
    '<!doctype html>',
    `<html><head><meta charset="utf-8"><title>${h(v.title)}</title>`,
    '<style>body{font-family:sans-serif}table{border-collapse:collapse;font-family:monospace}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}tr.fail{color:#b00}tr.first{background:#fdd;font-weight:bold}.pass{color:#070}.bad{color:#b00}.verdict{font-weight:bold;font-size:1.2em}</style>',
    '</head><body>',
    `<h1>${h(v.title)}</h1>`,
    `<p class="verdict ${v.pass ? 'pass' : 'bad'}">${h(v.verdict)}</p>`,
    `<ul>${v.summary.map((s) => `<li>${h(s)}</li>`).join('')}</ul>`,
    '<h2>Stages (graph order; &gt;&gt; = the first stage wrong by itself)</h2>',
    htmlTable(v.stages),
  ];
  if (v.layers.rows.length > 1) parts.push('<h2>By layer</h2>', htmlTable(v.layers));
  if (v.failures.rows.length) parts.push('<h2>Failing rows</h2>', htmlTable(v.failures));
  if (v.notes.length) parts.push(`<ul>${v.notes.map((n) => `<li>${h(n)}</li>`).join('')}</ul>`);
  parts.push('</body></html>', '');
  return parts.join('\n');
}
