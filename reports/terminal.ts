// Terminal table: stages in graph order (or, `--by-layer`, each stage per layer), failing stages in red, the
// first divergence marked `>>`.
// Colour follows chalk's terminal detection and is off whenever NO_COLOR is set (no-color.org).
import { Chalk, type ChalkInstance } from 'chalk';
import { buildView, type ReportInput, type Table } from './view.ts';

export function colors(): ChalkInstance {
  return process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '' ? new Chalk({ level: 0 }) : new Chalk();
}

export function drawTable(t: Table, c: ChalkInstance): string[] {
  const widths = t.columns.map((h, i) => Math.max(h.length, ...t.rows.map((r) => r.cells[i].length)));
  const line = (cells: string[]) => cells.map((s, i) => s.padEnd(widths[i])).join('  ').trimEnd();
  const out = [c.bold(line(t.columns))];
  for (const r of t.rows) {
    const text = line(r.cells);
    out.push(r.first ? c.bgRed.white.bold(text) : r.fail ? c.red(text) : text);
  }
  return out;
}

export function renderTerminal(input: ReportInput, o: { byLayer?: boolean } = {}): string {
  const c = colors();
  const v = buildView(input);
  const out: string[] = [c.bold(v.title)];
  out.push(...v.summary.map((s) => `  ${s}`), '');
  out.push(...drawTable(o.byLayer ? v.stageLayers : v.stages, c));
  if (v.layers.rows.length > 1) out.push('', c.bold('by layer (error growth with depth):'), ...drawTable(v.layers, c));
  if (v.failures.rows.length) out.push('', c.bold('failing rows (graph order):'), ...drawTable(v.failures, c));
  if (v.notes.length) out.push('', ...v.notes.map((n) => c.yellow(n)));
  // the verdict last, where the eye lands
  out.push('', v.pass ? c.green.bold(v.verdict) : c.red.bold(v.verdict));
  return out.join('\n') + '\n';
}
