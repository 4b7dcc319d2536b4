// The HTML report: one self-contained file (inline CSS, inline script, inline data; nothing fetched), built from
// the same view as every other format (reports/view.ts) so it cannot contradict them. On top of the tables it
// draws what a table hides:
//   - two layer × stage heatmaps — each cell's worst own error and worst free-running (inherited) error, as
//     multiples of the rows' own budgets, on a log colour scale (heatColour), failing cells in FAIL_COLOUR, the
//     first stage wrong by itself and the first divergence outlined; hover shows the numbers, a click lists the
//     cell's rows;
//   - error growth by layer and by position (the worst own error and drift per layer / per position, the budget
//     at 1×, the first divergence marked), and the end result (KL) per position when the head ran at several;
//   - the verdict in words, the case (model, fingerprint, prompt, tokens with their pieces, backend, kernel math,
//     capture), the host-fallback ledger (or that there was none) and a bisect's verdict when there is one.
import { judgedText } from '../diff/gate.ts';
import { ratio } from '../diff/compare.ts';
import { buildView, FAIL_COLOUR, fmt, heatColour, type ReportInput, type ReportView, type Table } from './view.ts';

const h = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Rows a click on a cell lists (failing rows first); the JSON report and the CSV have every row. */
export const ROWS_PER_CELL = 40;

function htmlTable(t: Table, cls = ''): string {
  const head = `<tr>${t.columns.map((c) => `<th>${h(c)}</th>`).join('')}</tr>`;
  const body = t.rows.map((r) => `<tr class="${r.first ? 'first' : r.fail ? 'fail' : ''}">${r.cells.map((c) => `<td>${h(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table${cls ? ` class="${cls}"` : ''}>\n${head}\n${body}\n</table>`;
}

/** Numbers for the page's script: non-finite ones as strings the script turns back with Number(). */
const num = (v: number | undefined) => (v === undefined ? null : Number.isFinite(v) ? Number(v.toPrecision(4)) : String(v));

/** The data the script draws from: the view's cells and positions, and each cell's rows. */
function pageData(input: ReportInput, v: ReportView) {
  const c = input.comparison;
  const rows: Record<string, { list: unknown[][]; more: number }> = {};
  const byCell = new Map<string, typeof c.rows>();
  for (const r of c.rows) {
    const k = `${r.stage}@${r.layer}`;
    const l = byCell.get(k) ?? [];
    l.push(r);
    byCell.set(k, l);
  }
  for (const [k, list] of byCell) {
    const failing = list.filter((r) => r.status === 'fail' || r.status === 'missing');
    const shown = [...failing, ...list.filter((r) => !failing.includes(r))].slice(0, ROWS_PER_CELL);
    rows[k] = {
      list: shown.map((r) => [r.pos, r.token, r.status, r.missing ? `no ${r.missing} row` : judgedText(r.own), r.missing ? '' : judgedText(r.free), num(ratio(r.own)), num(ratio(r.free))]),
      more: list.length - shown.length,
    };
  }
  const first = (r?: { stage: string; layer: number; pos: number }) => r && { stage: r.stage, layer: r.layer, pos: r.pos };
  return {
    // the columns: stages in graph order (a stage first seen in a later layer keeps its place)
    stages: c.stages.map((s) => s.stage),
    cells: v.cells.map((x) => ({ ...x, own: num(x.own), drift: num(x.drift) })),
    positions: v.positions.map((p) => ({ ...p, own: num(p.own), drift: num(p.drift), kl: num(p.kl), deltaP: num(p.deltaP) })),
    firstOwn: first(c.firstOwnFailure),
    firstDivergence: first(c.firstDivergence),
    rows,
  };
}

const CSS = `
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-family:ui-monospace,monospace;font-size:12px}
td,th{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
tr.fail{color:#b00}tr.first{background:#fdd;font-weight:bold}
.verdict{font-weight:bold;font-size:1.15em;padding:.6em;border-radius:4px}
.verdict.pass{background:#e5f5e0;color:#064}.verdict.bad{background:#fde0dd;color:#900}
.meaning{font-size:1.05em}.muted{color:#666}
.kv td:first-child{font-weight:bold;white-space:nowrap}
.maps{display:flex;flex-wrap:wrap;gap:2em}
svg text{font-family:ui-monospace,monospace;font-size:10px}
rect.cell{stroke:#fff;stroke-width:1;cursor:pointer}
rect.cell.first-own{stroke:#000;stroke-width:2.5}rect.cell.first-div{stroke:#7b3294;stroke-width:2.5}
#tip{position:fixed;pointer-events:none;background:#fffff5;border:1px solid #999;padding:4px 8px;font:12px ui-monospace,monospace;display:none;white-space:pre;z-index:9}
.legend span{display:inline-block;width:14px;height:12px;vertical-align:middle;margin:0 2px 0 10px;border:1px solid #ccc}
`;

// The page's script: heatmaps, plots, tooltip, a cell's rows. Plain DOM + SVG, no library.
const SCRIPT = `
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('report-data').textContent);
  var SVG = 'http://www.w3.org/2000/svg';
  var N = function (v) { return v === null || v === undefined ? undefined : Number(v); };
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, s, attrs) {
    var t = el('text', Object.assign({ x: x, y: y }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  function fmt(v) {
    if (v === undefined) return '-';
    if (!isFinite(v)) return v > 0 ? 'inf' : 'NaN';
    if (v === 0) return '0';
    var a = Math.abs(v);
    return a >= 1e-3 && a < 1e4 ? String(Number(v.toPrecision(3))) : v.toExponential(1);
  }
  var tip = document.getElementById('tip');
  function showTip(ev, s) { tip.textContent = s; tip.style.display = 'block'; tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 10) + 'px'; }
  function hideTip() { tip.style.display = 'none'; }

  var stages = D.stages, layers = [];
  D.cells.forEach(function (c) { if (layers.indexOf(c.layer) < 0) layers.push(c.layer); });
  layers.sort(function (a, b) { return a - b; });

  function heatmap(id, which) {
    var svg = document.getElementById(id);
    var cw = 14, ch = 14, left = 44, top = 110;
    svg.setAttribute('width', left + stages.length * cw + 10);
    svg.setAttribute('height', top + layers.length * ch + 10);
    stages.forEach(function (s, i) { text(svg, 0, 0, s, { transform: 'translate(' + (left + i * cw + 10) + ',' + (top - 4) + ') rotate(-65)' }); });
    layers.forEach(function (l, j) { text(svg, 2, top + j * ch + 11, 'L' + l); });
    D.cells.forEach(function (c) {
      var own = which === 'own';
      var cls = 'cell' + (own && c.firstOwn ? ' first-own' : '') + (!own && c.firstDivergence ? ' first-div' : '');
      var r = el('rect', { x: left + stages.indexOf(c.stage) * cw, y: top + layers.indexOf(c.layer) * ch, width: cw, height: ch, fill: own ? c.ownColour : c.driftColour, 'class': cls, 'data-stage': c.stage, 'data-layer': c.layer }, svg);
      var v = N(own ? c.own : c.drift), pos = own ? c.ownPos : c.driftPos, stat = own ? c.ownByStats : c.driftByStats, fail = own ? c.ownFail : c.driftFail;
      var lines = [c.stage + ' layer ' + c.layer + ' (' + c.rows + ' rows)',
        (own ? 'own error' : 'free-running error') + ' / own budget: ' + (v === undefined ? '-' : (stat ? '>= ' : '') + fmt(v) + 'x') + (pos === undefined ? '' : ' at pos ' + pos),
        fail ? 'FAILS' : 'no failure'];
      var said = own ? c.ownText : c.driftText;
      if (said) lines.push(said);
      if (stat) lines.push('(a lower bound: compared by statistics only)');
      if (c.undecided) lines.push(c.undecided + ' rows undecided (statistics only)');
      if (own && c.firstOwn) lines.push('first stage wrong by itself');
      if (!own && c.firstDivergence) lines.push('first divergence');
      r.addEventListener('mousemove', function (ev) { showTip(ev, lines.join('\\n')); });
      r.addEventListener('mouseleave', hideTip);
      r.addEventListener('click', function () { showRows(c.stage, c.layer); });
    });
  }

  function showRows(stage, layer) {
    var k = stage + '@' + layer, cell = D.rows[k];
    var panel = document.getElementById('rows-panel');
    var title = document.getElementById('rows-title');
    title.textContent = 'Rows of ' + stage + ' layer ' + layer + (cell && cell.more ? ' (first ' + cell.list.length + '; ' + cell.more + ' more in the JSON report / CSV)' : '');
    var body = document.getElementById('rows-body');
    while (body.firstChild) body.removeChild(body.firstChild);
    (cell ? cell.list : []).forEach(function (r) {
      var tr = document.createElement('tr');
      if (r[2] === 'fail' || r[2] === 'missing') tr.className = 'fail';
      [r[0], r[1], r[2], fmt(N(r[5])) + 'x', r[3], fmt(N(r[6])) + 'x', r[4]].forEach(function (v) { var td = document.createElement('td'); td.textContent = String(v); tr.appendChild(td); });
      body.appendChild(tr);
    });
    panel.style.display = 'block';
    panel.scrollIntoView({ block: 'nearest' });
  }

  // a line plot on a log y axis: the budget at 1x dashed, a marker line at x = mark
  function plot(id, xs, series, opts) {
    var svg = document.getElementById(id);
    if (!svg) return;
    var W = 620, H = 240, l = 56, r = 12, t = 14, b = 34;
    svg.setAttribute('width', W); svg.setAttribute('height', H);
    var vals = [];
    series.forEach(function (s) { s.ys.forEach(function (y) { if (y !== undefined && y > 0 && isFinite(y)) vals.push(y); }); });
    if (opts.ref) vals.push(opts.ref);
    if (!vals.length || !xs.length) { text(svg, l, H / 2, 'nothing to plot'); return; }
    var lo = Math.floor(Math.log10(Math.min.apply(null, vals))), hi = Math.ceil(Math.log10(Math.max.apply(null, vals)));
    if (hi <= lo) hi = lo + 1;
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var X = function (x) { return l + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - l - r); };
    var Y = function (y) { return t + (1 - (Math.log10(Math.max(y, Math.pow(10, lo))) - lo) / (hi - lo)) * (H - t - b); };
    el('line', { x1: l, y1: H - b, x2: W - r, y2: H - b, stroke: '#999' }, svg);
    el('line', { x1: l, y1: t, x2: l, y2: H - b, stroke: '#999' }, svg);
    for (var e = lo; e <= hi; e++) { text(svg, 2, Y(Math.pow(10, e)) + 3, '1e' + e); el('line', { x1: l, y1: Y(Math.pow(10, e)), x2: W - r, y2: Y(Math.pow(10, e)), stroke: '#eee' }, svg); }
    var step = Math.max(1, Math.ceil(xs.length / 16));
    xs.forEach(function (x, i) { if (i % step === 0) text(svg, X(x) - 4, H - b + 14, String(x)); });
    text(svg, W / 2 - 20, H - 4, opts.xlabel);
    if (opts.ref) el('line', { x1: l, y1: Y(opts.ref), x2: W - r, y2: Y(opts.ref), stroke: '#555', 'stroke-dasharray': '4 3' }, svg);
    if (opts.mark !== undefined) { el('line', { x1: X(opts.mark), y1: t, x2: X(opts.mark), y2: H - b, stroke: '#7b3294', 'stroke-dasharray': '2 2' }, svg); text(svg, X(opts.mark) + 3, t + 10, opts.markLabel, { fill: '#7b3294' }); }
    series.forEach(function (s, si) {
      var d = '';
      xs.forEach(function (x, i) { var y = s.ys[i]; if (y === undefined || !(y > 0)) return; d += (d ? 'L' : 'M') + X(x).toFixed(1) + ' ' + Y(isFinite(y) ? y : Math.pow(10, hi)).toFixed(1) + ' '; el('circle', { cx: X(x), cy: Y(isFinite(y) ? y : Math.pow(10, hi)), r: 2.5, fill: s.colour }, svg); });
      if (d) el('path', { d: d, fill: 'none', stroke: s.colour, 'stroke-width': 1.5 }, svg);
      text(svg, W - r - 150, t + 12 + si * 13, s.name, { fill: s.colour });
    });
  }

  heatmap('own-map', 'own');
  heatmap('drift-map', 'drift');
  var byLayer = layers.map(function (l) {
    var o, d;
    D.cells.forEach(function (c) { if (c.layer !== l) return; var a = N(c.own), b = N(c.drift); if (a !== undefined) o = Math.max(o || 0, a); if (b !== undefined) d = Math.max(d || 0, b); });
    return { o: o, d: d };
  });
  var fd = D.firstDivergence, fo = D.firstOwn;
  plot('layer-plot', layers, [{ name: 'worst own error', colour: '#1b7837', ys: byLayer.map(function (x) { return x.o; }) }, { name: 'worst drift', colour: '#b35806', ys: byLayer.map(function (x) { return x.d; }) }],
    { xlabel: 'layer', ref: 1, mark: fo ? fo.layer : fd ? fd.layer : undefined, markLabel: fo ? 'first own failure' : 'first divergence' });
  var ps = D.positions.map(function (p) { return p.pos; });
  plot('pos-plot', ps, [{ name: 'worst own error', colour: '#1b7837', ys: D.positions.map(function (p) { return N(p.own); }) }, { name: 'worst drift', colour: '#b35806', ys: D.positions.map(function (p) { return N(p.drift); }) }],
    { xlabel: 'position', ref: 1, mark: fo ? fo.pos : fd ? fd.pos : undefined, markLabel: fo ? 'first own failure' : 'first divergence' });
  var kl = D.positions.filter(function (p) { return p.kl !== null; });
  if (kl.length > 1) plot('kl-plot', kl.map(function (p) { return p.pos; }), [{ name: 'KL (nats)', colour: '#2166ac', ys: kl.map(function (p) { return N(p.kl); }) }, { name: '|dp|', colour: '#762a83', ys: kl.map(function (p) { return N(p.deltaP); }) }], { xlabel: 'position' });
})();
`;

export function renderHtml(input: ReportInput): string {
  const v = buildView(input);
  const data = JSON.stringify(pageData(input, v)).replace(/</g, '\\u003c');
  const legend = [[1e-4, 'tiny'], [1e-2, '1e-2×'], [1, 'budget'], [10, '10× (drift)'], [1000, '1000×']] as const;
  const parts = [
    '<!doctype html>',
    `<html lang="en"><head><meta charset="utf-8"><title>${h(v.title)}</title>`,
    `<style>${CSS}</style>`,
    '</head><body>',
    `<h1>${h(v.title)}</h1>`,
    `<p class="verdict ${v.pass ? 'pass' : 'bad'}" id="verdict">${h(v.verdict)}</p>`,
    `<p class="meaning">${h(v.meaning)}</p>`,
    `<ul>${v.summary.map((s) => `<li>${h(s)}</li>`).join('')}</ul>`,
  ];
  if (input.verdict.reasons.length > 1) parts.push('<h2>Reasons</h2>', `<ol>${input.verdict.reasons.map((r) => `<li>${h(r)}</li>`).join('')}</ol>`);
  if (v.bisect) {
    const b = v.bisect;
    parts.push('<h2 id="bisect">Bisect</h2>', `<p class="verdict ${b.kernel ? 'bad' : 'pass'}">${h(b.line)}</p>`,
      htmlTable({ columns: ['kernel', 'method', 'stage', 'layer', 'pos', 'own error', 'tolerance', 'confirmed'], rows: [{ cells: [b.kernel ?? '-', b.method, b.stage ?? '-', String(b.layer ?? '-'), String(b.pos ?? '-'), fmt(b.own_error ?? undefined), fmt(b.tolerance ?? undefined), b.confirmed === null ? '-' : String(b.confirmed)], fail: !!b.kernel }] }));
  }
  parts.push(
    '<h2>Error by layer and stage</h2>',
    '<p class="muted">Each cell: the worst row of that stage in that layer, as a multiple of the row\'s own budget (its arithmetic error allowance). Left: the own error (the device fed the reference\'s inputs: the kernel\'s own error). Right: the free-running error (what it inherits from earlier stages), which may grow past 1× without failing. Hover for the numbers, click for the rows.</p>',
    `<p class="legend">${legend.map(([r, t]) => `<span style="background:${heatColour(r, false)}"></span>${h(t)}`).join('')}<span style="background:${FAIL_COLOUR}"></span>fails<span style="border:2.5px solid #000"></span>first stage wrong by itself<span style="border:2.5px solid #7b3294"></span>first divergence</p>`,
    '<div class="maps"><div><h3>own error / budget</h3><svg id="own-map"></svg></div><div><h3>free-running (inherited) error / own budget</h3><svg id="drift-map"></svg></div></div>',
    '<div id="rows-panel" style="display:none"><h3 id="rows-title"></h3><table><thead><tr><th>pos</th><th>token</th><th>status</th><th>own ×budget</th><th>own error</th><th>drift ×budget</th><th>free-running</th></tr></thead><tbody id="rows-body"></tbody></table></div>',
    '<h2>Error growth</h2>',
    '<div class="maps"><div><h3>by layer</h3><svg id="layer-plot"></svg></div><div><h3>by position</h3><svg id="pos-plot"></svg></div></div>',
  );
  if (v.endResult) {
    const e = v.endResult;
    parts.push('<h2>End result</h2>', htmlTable({
      columns: ['positions', 'KL mean', 'KL median', 'KL 99%', 'KL max', 'same top-1', 'near-tie flips', 'Δp RMS', 'Δp max'],
      rows: [{ cells: [String(e.positions), fmt(e.kl.mean), fmt(e.kl.median), fmt(e.kl.p99), fmt(e.kl.max), `${fmt(100 * e.sameTop1)} %`, String(e.nearTies), fmt(e.deltaP.rms), fmt(e.deltaP.max)], fail: false }],
    }));
    if (e.positions > 1) parts.push('<svg id="kl-plot"></svg>');
  }
  if (v.case) {
    parts.push('<h2 id="case">Case</h2>', `<table class="kv">${v.case.lines.map(([k, x]) => `<tr><td>${h(k)}</td><td>${h(x)}</td></tr>`).join('')}</table>`, '<h3>Tokens</h3>', htmlTable(v.case.tokens));
  }
  if (v.fallbacks) {
    parts.push('<h2 id="fallbacks">Host fallbacks</h2>', `<p class="${v.fallbacks.table.rows.length ? 'bad' : 'pass'}" id="fallback-statement">${h(v.fallbacks.statement)}</p>`);
    if (v.fallbacks.table.rows.length) parts.push(htmlTable(v.fallbacks.table));
  }
  parts.push('<h2>Stages (graph order; &gt;&gt; = the first stage wrong by itself)</h2>', htmlTable(v.stages));
  if (v.layers.rows.length > 1) parts.push('<h2>By layer</h2>', htmlTable(v.layers));
  if (v.failures.rows.length) parts.push('<h2>Failing rows</h2>', htmlTable(v.failures));
  if (v.notes.length) parts.push('<h2>Notes</h2>', `<ul>${v.notes.map((n) => `<li>${h(n)}</li>`).join('')}</ul>`);
  parts.push('<div id="tip"></div>', `<script type="application/json" id="report-data">${data}</script>`, `<script>${SCRIPT}</script>`, '</body></html>', '');
  return parts.join('\n');
}
