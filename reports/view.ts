// One view of a comparison (and optionally a gate verdict) that every renderer draws: terminal,
// Markdown, HTML and JUnit show the same tables, so no format knows something another does not.
import type { Comparison, CompareRow, StageSummary } from '../diff/compare.ts';
import type { GateResult } from '../diff/gate.ts';
import type { Metrics } from '../diff/metrics.ts';
import type { Thresholds } from '../diff/policy.ts';

export interface ReportInput {
  title: string;
  comparison: Comparison;
  gate?: GateResult;
}

export interface Table {
  columns: string[];
  rows: Array<{ cells: string[]; fail: boolean; first?: boolean }>;
}

export interface ReportView {
  title: string;
  verdict: string;
  pass: boolean;
  summary: string[];
  stages: Table;
  /** layers with failing rows: where along the depth the error shows */
  layers: Table;
  failures: Table;
  checks?: Table;
  notes: string[];
}

/** Failing rows listed in full (the stage table already counts the rest). */
export const MAX_FAILING_ROWS = 50;

export function fmt(v: number | undefined): string {
  if (v === undefined) return '-';
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e4 ? Number(v.toPrecision(4)).toString() : v.toExponential(2);
}

/** Cosine near 1 is shown as 1-gap so a change in the 8th digit stays visible. */
export function cosineText(c: number): string {
  return c === 1 ? '1' : c > 0.999 ? `1-${fmt(1 - c)}` : c.toFixed(6);
}

function cosineCell(m: Metrics | undefined): string {
  return m?.kind === 'f32' ? cosineText(m.cosine) : '-';
}

export function metricCells(m: Metrics | undefined): [string, string, string] {
  if (!m) return ['-', '-', '-'];
  if (m.kind === 'i32') return [m.exact ? 'exact' : `${m.mismatches} diff`, '-', `overlap ${fmt(m.setOverlap)}`];
  return [fmt(m.maxAbs), cosineCell(m), fmt(m.nmse)];
}

export function worstText(w: CompareRow['worst'] | StageSummary['worst']): string {
  if (!w) return '-';
  if (w.threshold === 'nonFinite') return `NaN/Inf mismatch x${w.value}`;
  if (w.threshold === 'argmax') return `argmax flip (margin ${fmt(w.value)} >= ${fmt(w.limit)})`;
  if (w.threshold === 'exact') return `${w.value} ids differ`;
  if (w.threshold === 'shape' || w.threshold === 'dtype') return `${w.threshold} mismatch`;
  return `${w.threshold} ${fmt(w.value)} / ${fmt(w.limit)}`;
}

function minTolText(t: Thresholds | undefined): string {
  if (!t) return '-';
  if (t.exact !== undefined) return t.exact ? 'exact' : `overlap>=${fmt(t.minSetOverlap)}`;
  return `maxAbs<=${fmt(t.maxAbs)} cos>=${t.minCosine === undefined ? '-' : cosineText(t.minCosine)}`;
}

function stageTable(c: Comparison): Table {
  const hasOwn = c.stages.some((s) => s.ownMetrics);
  const columns = ['', 'stage', 'rows', 'fail', 'max_abs', 'cosine', 'nmse', 'worst metric', 'min tolerance to pass'];
  if (hasOwn) columns.push('own max_abs', 'own fail');
  const first = c.firstDivergence?.stage;
  return {
    columns,
    rows: c.stages.map((s) => {
      const [ma, cos, nmse] = metricCells(s.metrics);
      const mark = s.stage === first ? '>>' : s.failed ? 'x' : s.missing === s.rows ? '?' : '';
      const cells = [mark, s.known ? s.stage : `${s.stage} (unknown)`, String(s.rows), s.failed ? String(s.failed) : s.missing ? `${s.missing} missing` : '0', ma, cos, nmse, worstText(s.worst), minTolText(s.minTolerance)];
      if (hasOwn) cells.push(metricCells(s.ownMetrics)[0], String(s.ownFailed ?? '-'));
      if (s.nearTies) cells[7] += ` (${s.nearTies} near-tie)`;
      return { cells, fail: s.failed > 0, first: s.stage === first };
    }),
  };
}

function failureTable(c: Comparison): Table {
  const failing = c.rows.filter((r) => r.status === 'fail').slice(0, MAX_FAILING_ROWS);
  return {
    columns: ['', 'stage', 'layer', 'pos', 'token', 'max_abs', 'cosine', 'worst metric', 'own (teacher-forced)'],
    rows: failing.map((r) => {
      const [ma, cos] = metricCells(r.metrics);
      const own = r.own ? `${r.own.pass ? 'pass' : 'FAIL'} ${metricCells(r.own.metrics)[0]}` : '-';
      const first = r === c.firstDivergence;
      return { cells: [first ? '>>' : '', r.stage, String(r.layer), String(r.pos), String(r.token), ma, cos, worstText(r.worst) + (r.note ? ` (${r.note})` : ''), own], fail: true, first };
    }),
  };
}

function layerTable(c: Comparison): Table {
  return {
    columns: ['layer', 'rows', 'fail', 'worst stage', 'severity (x limit)'],
    rows: c.layers.filter((l) => l.failed > 0).map((l) => ({ cells: [String(l.layer), String(l.rows), String(l.failed), l.worstStage ?? '-', fmt(l.worstSeverity)], fail: true })),
  };
}

function checkTable(g: GateResult): Table {
  return {
    columns: ['stage', 'layer', 'recorded max_abs', 'allowed', 'measured', 'x noise floor', 'verdict'],
    rows: g.checks.map((k) => ({
      cells: [k.stage, k.pos !== undefined ? `${k.layer} (pos ${k.pos})` : String(k.layer), fmt(k.recordedMaxAbs), fmt(k.allowedMaxAbs), fmt(k.measuredMaxAbs), fmt(k.noiseRatio), k.pass ? 'pass' : `FAIL${k.note ? `: ${k.note}` : ''}`],
      fail: !k.pass,
    })),
  };
}

export function buildView(input: ReportInput): ReportView {
  const c = input.comparison;
  const g = input.gate;
  const pass = g ? g.exitCode === 0 : c.pass;
  const verdict = g ? `${g.verdict.toUpperCase()} (exit ${g.exitCode})` : c.pass ? 'PASS' : 'FAIL';
  const summary = [`${c.b} vs ${c.a}: ${c.counts.compared} rows compared, ${c.counts.failed} failed, ${c.counts.missing} missing on one side, ${c.counts.nearTies} logits near-tie(s)`];
  const fd = c.firstDivergence;
  summary.push(fd ? `first divergence: ${fd.stage} layer ${fd.layer} pos ${fd.pos} (token ${fd.token}): ${worstText(fd.worst)}` : 'no divergence beyond tolerance');
  const fo = c.firstOwnDivergence;
  if (fo) summary.push(`first stage wrong by itself (teacher-forced): ${fo.stage} layer ${fo.layer} pos ${fo.pos}`);
  const worstLayer = [...c.layers].sort((x, y) => y.worstSeverity - x.worstSeverity)[0];
  if (worstLayer && worstLayer.worstStage) summary.push(`worst layer: ${worstLayer.layer} (${worstLayer.worstStage}, ${worstLayer.failed} failing rows)`);
  const notes = [...c.notes];
  if (g) {
    summary.unshift(`gate ${g.runDir} against ${g.baseline}: ${verdict}`);
    notes.push(...g.reasons.map((r) => `reason: ${r}`), ...g.warnings.map((w) => `warning: ${w}`));
  }
  const failing = c.rows.filter((r) => r.status === 'fail').length;
  if (failing > MAX_FAILING_ROWS) notes.push(`${failing - MAX_FAILING_ROWS} more failing rows not listed (see --json)`);
  return { title: input.title, verdict, pass, summary, stages: stageTable(c), layers: layerTable(c), failures: failureTable(c), checks: g ? checkTable(g) : undefined, notes };
}
