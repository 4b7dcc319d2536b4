// One view of a judged comparison and its verdict that every renderer draws: terminal, Markdown, HTML, JUnit
// and JSON show the same tables and the same verdict line, so no format knows something another does not
// and none can contradict the exit code.
import type { CompareRow, Comparison, Judged, StageSummary } from '../diff/compare.ts';
import { judgedText, type Verdict } from '../diff/gate.ts';
import { fmtNum } from '../diff/judge.ts';
import type { Metrics } from '../diff/metrics.ts';

export interface ReportInput {
  title: string;
  comparison: Comparison;
  verdict: Verdict;
  /** what the tolerances came from (Judge.sources) */
  sources?: string[];
}

export interface Table {
  columns: string[];
  rows: Array<{ cells: string[]; fail: boolean; first?: boolean }>;
}

export interface ReportView {
  title: string;
  /** the verdict line (diff/gate.ts verdictOf): the one every format prints */
  verdict: string;
  exitCode: number;
  pass: boolean;
  summary: string[];
  stages: Table;
  /** per layer: the worst own error and the free-running drift, each as a multiple of the row's own budget */
  layers: Table;
  failures: Table;
  notes: string[];
}

/** Failing rows listed in full (the stage table already counts the rest). */
export const MAX_FAILING_ROWS = 50;

export const fmt = (v: number | undefined): string => (v === undefined ? '-' : fmtNum(v));

/** Cosine near 1 is shown as 1-gap so a change in the 8th digit stays visible. */
export function cosineText(c: number): string {
  return c === 1 ? '1' : c > 0.999 ? `1-${fmt(1 - c)}` : c.toFixed(6);
}

/** max_abs, cosine and relative RMS of a row (i32 rows: how many ids differ). */
export function metricCells(m: Metrics | undefined): [string, string, string] {
  if (!m) return ['-', '-', '-'];
  if (m.kind === 'i32') return [m.exact ? 'exact' : `${m.mismatches} diff`, '-', `overlap ${fmt(m.setOverlap)}`];
  return [fmt(m.maxAbs), cosineText(m.cosine), fmt(m.relRms)];
}

const times = (v: number | undefined) => (v === undefined ? '-' : `${fmt(v)}×`);

function stageTable(c: Comparison): Table {
  const first = c.firstOwnFailure?.stage ?? c.firstFailure?.stage;
  return {
    columns: ['', 'stage', 'rows', 'fail', 'own relRms', 'own ×budget', 'drift ×budget', 'free max_abs', 'free cosine', 'near ties', 'closest bound'],
    rows: c.stages.map((s: StageSummary) => {
      const [ma, cos] = metricCells(s.metrics);
      const own = s.ownMetrics?.kind === 'f32' ? fmt(s.ownMetrics.relRms) : s.ownMetrics?.kind === 'i32' ? (s.ownMetrics.exact ? 'exact' : `${s.ownMetrics.mismatches} diff`) : '-';
      const mark = s.stage === first ? '>>' : s.failed ? 'x' : '';
      const fails = s.failed ? `${s.failed}${s.missing ? ` (${s.missing} missing)` : ''}` : '0';
      const closest = s.worst ? `${s.worst.key} ${fmt(s.worst.value)} / ${fmt(s.worst.limit)}` : '-';
      return {
        cells: [mark, s.known ? s.stage : `${s.stage} (unknown)`, String(s.rows), fails, own, times(s.ownRatio), times(s.driftRatio), ma, cos, s.nearTies ? String(s.nearTies) : '', closest],
        fail: s.failed > 0,
        first: s.stage === first,
      };
    }),
  };
}

function layerTable(c: Comparison): Table {
  return {
    columns: ['layer', 'rows', 'fail', 'own ×budget', 'worst own stage', 'drift ×budget'],
    rows: c.layers.map((l) => ({ cells: [String(l.layer), String(l.rows), String(l.failed), times(l.ownRatio), l.worstStage ?? '-', times(l.driftRatio)], fail: l.failed > 0 })),
  };
}

const roleText = (j: Judged | undefined) => (j ? `${j.status === 'fail' ? 'FAIL' : 'pass'} ${judgedText(j)}` : '-');

function failureTable(c: Comparison): Table {
  const failing = c.rows.filter((r) => r.status === 'fail' || r.status === 'missing').slice(0, MAX_FAILING_ROWS);
  return {
    columns: ['', 'stage', 'layer', 'pos', 'token', 'own error', 'free-running'],
    rows: failing.map((r: CompareRow) => {
      const first = r === c.firstOwnFailure || (!c.firstOwnFailure && r === c.firstFailure);
      const free = r.missing ? `no ${r.missing} row` : roleText(r.free);
      return { cells: [first ? '>>' : '', r.stage, String(r.layer), String(r.pos), String(r.token), roleText(r.own), free], fail: true, first };
    }),
  };
}

export function buildView(input: ReportInput): ReportView {
  const { comparison: c, verdict: v } = input;
  const n = c.counts;
  const summary = [
    `${c.b} vs ${c.a}: ${n.compared} rows judged (${n.own} by their own error), ${n.failed} failed, ${n.missing} on one side only${n.unjudged ? `, ${n.unjudged} not judged` : ''}, ${n.nearTies} near ties`,
  ];
  const fo = c.firstOwnFailure;
  if (fo) summary.push(`first stage wrong by itself: ${fo.stage} layer ${fo.layer} pos ${fo.pos} (token ${fo.token}): ${judgedText(fo.own)}`);
  const fd = c.firstDivergence;
  summary.push(fd ? `free-running drift first past a row's own budget: ${fd.stage} layer ${fd.layer} pos ${fd.pos}` : 'free-running: every row within its own budget');
  const notes = [...c.notes, ...v.reasons.slice(1).map((r) => `reason: ${r}`), ...v.warnings.map((w) => `warning: ${w}`)];
  if (input.sources?.length) notes.push(`tolerances: ${input.sources.join('; ')}`);
  const failing = c.rows.filter((r) => r.status === 'fail' || r.status === 'missing').length;
  if (failing > MAX_FAILING_ROWS) notes.push(`${failing - MAX_FAILING_ROWS} more failing rows not listed (see --json)`);
  return { title: input.title, verdict: v.line, exitCode: v.exitCode, pass: v.exitCode === 0, summary, stages: stageTable(c), layers: layerTable(c), failures: failureTable(c), notes };
}
