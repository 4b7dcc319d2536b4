// One view of a judged comparison and its verdict that every renderer draws: terminal, Markdown, HTML, JUnit
// and JSON show the same tables and the same verdict line, so no format knows something another does not
// and none can contradict the exit code.
import type { BisectVerdict } from '../diff/bisect.ts';
import { ratio, type CompareRow, type Comparison, type Judged, type StageSummary } from '../diff/compare.ts';
import { judgedText, type Verdict } from '../diff/gate.ts';
import { fmtNum } from '../diff/judge.ts';
import type { RunManifest } from '../diff/manifest.ts';
import type { Metrics } from '../diff/metrics.ts';
import { graphOrderKey } from '../model/stages.ts';

export interface ReportInput {
  title: string;
  comparison: Comparison;
  verdict: Verdict;
  /** what the tolerances came from (Judge.sources) */
  sources?: string[];
  /** the run directory's manifest, when the comparison is a run's: the case, the capture, the fallback ledger */
  manifest?: RunManifest;
  /** a bisect's verdict on the same case */
  bisect?: BisectVerdict;
}

export interface Table {
  columns: string[];
  rows: Array<{ cells: string[]; fail: boolean; first?: boolean }>;
}

export interface ReportView {
  title: string;
  /** the verdict line (diff/gate.ts verdictOf): the one every format prints */
  verdict: string;
  /** what the verdict means for the person reading it, and what to do next */
  meaning: string;
  exitCode: number;
  pass: boolean;
  summary: string[];
  stages: Table;
  /** per layer: the worst own error and the free-running drift, each as a multiple of the row's own budget */
  layers: Table;
  /** per (stage, layer): the stage table split by layer (`--by-layer`), the heatmaps' cells */
  stageLayers: Table;
  cells: Cell[];
  /** per position: the worst own error and drift, and the end result where the head was evaluated */
  positions: PositionSummary[];
  /** the end result over every evaluated position, as llama-perplexity's KL-divergence mode reports it */
  endResult?: EndResultSummary;
  failures: Table;
  /** the case (model, prompt, tokens, backend, kernel math, capture), when the report is a run's */
  case?: CaseView;
  /** host fallbacks: the ledger, or a statement that there were none */
  fallbacks?: { statement: string; table: Table };
  bisect?: BisectVerdict;
  notes: string[];
}

/** One (stage, layer): its worst own error and drift as multiples of the rows' own budgets, and how it was judged. */
export interface Cell {
  stage: string;
  layer: number;
  rows: number;
  /** worst own error / budget over the cell's rows (a lower bound where `ownByStats`) */
  own?: number;
  ownByStats: boolean;
  ownFail: boolean;
  /** worst free-running error / the row's own budget (drift) */
  drift?: number;
  driftByStats: boolean;
  driftFail: boolean;
  /** rows compared by statistics that proved nothing */
  undecided: number;
  /** the position of the worst own / drift row, and that row's judgement in words */
  ownPos?: number;
  driftPos?: number;
  ownText?: string;
  driftText?: string;
  /** the cell holds the first stage wrong by itself / the first divergence */
  firstOwn: boolean;
  firstDivergence: boolean;
  /** heatmap colours (heatColour) */
  ownColour: string;
  driftColour: string;
}

export interface PositionSummary {
  pos: number;
  token: number;
  own?: number;
  drift?: number;
  /** the end result at this position, where the head was evaluated */
  kl?: number;
  deltaP?: number;
  sameTop1?: boolean;
  nearTie?: boolean;
}

export interface EndResultSummary {
  positions: number;
  kl: { mean: number; median: number; p99: number; max: number };
  /** fraction of positions whose top-1 token is the reference's */
  sameTop1: number;
  /** top-1 flips at a near tie (passing) */
  nearTies: number;
  deltaP: { rms: number; max: number };
}

export interface CaseView {
  lines: Array<[string, string]>;
  tokens: Table;
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

/** The colour of a row that fails: the same in every heatmap. */
export const FAIL_COLOUR = '#d7191c';
/** The colour of a cell without rows. */
export const EMPTY_COLOUR = '#f0f0f0';

const mix = (a: number[], b: number[], t: number) => `#${a.map((x, i) => Math.round(x + (b[i] - x) * Math.min(1, Math.max(0, t))).toString(16).padStart(2, '0')).join('')}`;

/**
 * A heatmap cell's colour on a log scale of error / budget: within budget (≤ 1) pale to green over 10⁻⁴..1,
 * past it without failing (free-running drift) yellow to brown over 1..10³, a failing cell FAIL_COLOUR.
 */
export function heatColour(ratio: number | undefined, fail: boolean): string {
  if (fail) return FAIL_COLOUR;
  if (ratio === undefined) return EMPTY_COLOUR;
  const l = ratio > 0 ? Math.log10(ratio) : -Infinity;
  return l <= 0 ? mix([247, 252, 245], [35, 139, 69], (l + 4) / 4) : mix([254, 196, 79], [153, 52, 4], l / 3);
}

const cellKey = (stage: string, layer: number) => `${stage}@${layer}`;

/** The (stage, layer) cells in graph order: worst own error and drift against the rows' own budgets. */
type CellSums = Cell & { failed: number; ownRows: number; freeRows: number };

function cellsOf(c: Comparison): CellSums[] {
  const cells = new Map<string, CellSums>();
  const firstOwn = c.firstOwnFailure && cellKey(c.firstOwnFailure.stage, c.firstOwnFailure.layer);
  const firstDiv = c.firstDivergence && cellKey(c.firstDivergence.stage, c.firstDivergence.layer);
  for (const r of c.rows) {
    const k = cellKey(r.stage, r.layer);
    let x = cells.get(k);
    if (!x) {
      cells.set(k, (x = { stage: r.stage, layer: r.layer, rows: 0, failed: 0, ownRows: 0, freeRows: 0, ownByStats: false, ownFail: false, driftByStats: false, driftFail: false, undecided: 0, firstOwn: k === firstOwn, firstDivergence: k === firstDiv, ownColour: '', driftColour: '' }));
    }
    x.rows++;
    if (r.own) x.ownRows++;
    if (r.free) x.freeRows++;
    if (r.status === 'fail' || r.status === 'missing') x.failed++;
    if (r.own?.status === 'undecided' || r.free?.status === 'undecided') x.undecided++;
    const o = ratio(r.own), d = ratio(r.free);
    if (o !== undefined && (x.own === undefined || o > x.own)) Object.assign(x, { own: o, ownPos: r.pos, ownByStats: !!r.own?.byStats, ownText: judgedText(r.own) });
    if (d !== undefined && (x.drift === undefined || d > x.drift)) Object.assign(x, { drift: d, driftPos: r.pos, driftByStats: !!r.free?.byStats, driftText: judgedText(r.free) });
    if (r.own?.status === 'fail' || r.missing) x.ownFail = true;
    if (r.free?.status === 'fail' || r.missing) x.driftFail = true;
  }
  const out = [...cells.values()].sort((a, b) => {
    const ka = graphOrderKey(a.stage, a.layer, 0), kb = graphOrderKey(b.stage, b.layer, 0);
    return ka[1] - kb[1] || ka[2] - kb[2] || ka[3] - kb[3] || (a.stage < b.stage ? -1 : a.stage > b.stage ? 1 : 0);
  });
  // a judged cell without a ratio (ids, judged choice by choice) that passes is drawn as no error; EMPTY: nothing judged
  for (const x of out) {
    x.ownColour = heatColour(x.own ?? (x.ownRows ? 0 : undefined), x.ownFail);
    x.driftColour = heatColour(x.drift ?? (x.freeRows ? 0 : undefined), x.driftFail);
  }
  return out;
}

const atLeast = (v: number | undefined, byStats: boolean) => (v === undefined ? '-' : `${byStats ? '≥' : ''}${fmt(v)}×`);

function stageLayerTable(c: Comparison, cells: CellSums[]): Table {
  return {
    columns: ['', 'stage', 'layer', 'rows', 'fail', 'own ×budget', 'at pos', 'drift ×budget', 'at pos', 'undecided'],
    rows: cells.map((x) => ({
      cells: [x.firstOwn ? '>>' : x.failed ? 'x' : '', x.stage, String(x.layer), String(x.rows), String(x.failed), atLeast(x.own, x.ownByStats), x.ownPos === undefined ? '-' : String(x.ownPos), atLeast(x.drift, x.driftByStats), x.driftPos === undefined ? '-' : String(x.driftPos), x.undecided ? String(x.undecided) : ''],
      fail: x.failed > 0,
      first: x.firstOwn || (!c.firstOwnFailure && x.firstDivergence),
    })),
  };
}

/** Per position: the worst own error and drift, and the end result where the head was evaluated. */
function positionsOf(c: Comparison): PositionSummary[] {
  const at = new Map<number, PositionSummary>();
  for (const r of c.rows) {
    let p = at.get(r.pos);
    if (!p) at.set(r.pos, (p = { pos: r.pos, token: r.token }));
    if (p.token < 0) p.token = r.token;
    const o = ratio(r.own), d = ratio(r.free);
    if (o !== undefined) p.own = Math.max(p.own ?? 0, o);
    if (d !== undefined) p.drift = Math.max(p.drift ?? 0, d);
    const l = r.free?.role === 'end-to-end' && r.free.metrics?.kind === 'f32' ? r.free.metrics.logits : undefined;
    if (l) {
      p.kl = l.kl;
      p.deltaP = l.deltaP;
      p.sameTop1 = l.argmaxMatch;
      p.nearTie = !l.argmaxMatch && (r.free!.metrics!.nearTies ?? 0) > 0;
    }
  }
  return [...at.values()].sort((a, b) => a.pos - b.pos);
}

/** KL, same top-1 and Δp over the evaluated positions (llama-perplexity --kl-divergence's figures). */
export function endResultOf(positions: PositionSummary[]): EndResultSummary | undefined {
  const e = positions.filter((p) => p.kl !== undefined);
  if (!e.length) return undefined;
  const kl = e.map((p) => p.kl!).sort((a, b) => a - b);
  const q = (f: number) => kl[Math.min(kl.length - 1, Math.ceil(f * kl.length) - 1)];
  return {
    positions: e.length,
    kl: { mean: kl.reduce((a, b) => a + b, 0) / kl.length, median: q(0.5), p99: q(0.99), max: kl[kl.length - 1] },
    sameTop1: e.filter((p) => p.sameTop1).length / e.length,
    nearTies: e.filter((p) => p.nearTie).length,
    deltaP: { rms: Math.sqrt(e.reduce((a, p) => a + p.deltaP! ** 2, 0) / e.length), max: Math.max(...e.map((p) => p.deltaP!)) },
  };
}

function caseView(m: RunManifest): CaseView {
  const cap = m.capture;
  const lines: Array<[string, string]> = [
    ['model', m.model.path],
    ['fingerprint', m.model.fingerprint],
    ['prompt', m.prompt === undefined ? '(token ids given)' : JSON.stringify(m.prompt)],
    ['tokens', `${m.promptTokens.length}${m.generated?.length ? ` (+ ${m.generated.length} generated by the device)` : ''}`],
    ['layers', m.layers.all ? `all (0..${m.layers.last})` : `0..${m.layers.last}, then the head`],
    ['backend', m.backend],
    ['kernel math', m.kernelMath ?? '-'],
    ['capture', cap ? (cap.mode === 'full' ? 'every row in full' : `statistics; in full: ${(cap.full ?? []).join('; ')}`) : 'every row in full'],
    ['no-host-fallback gate', m.noHostFallback ? 'on' : 'off (--allow-host-fallback)'],
  ];
  const all = [...m.promptTokens, ...(m.generated ?? [])];
  return {
    lines,
    tokens: {
      columns: ['pos', 'id', 'piece', ''],
      rows: all.map((id, pos) => ({ cells: [String(pos), String(id), m.tokenPieces?.[pos] ?? '?', pos >= m.promptTokens.length ? 'generated' : ''], fail: false })),
    },
  };
}

function fallbackView(m: RunManifest): { statement: string; table: Table } {
  const table: Table = {
    columns: ['primitive', 'calls', 'bytes to host', 'bytes to device', 'where', 'reason'],
    rows: m.fallbackLedger.map((f) => ({
      cells: [f.primitive, String(f.calls), String(f.bytesToHost), String(f.bytesToDevice), f.stage ? `${f.stage} layer ${f.layer ?? '-'} pos ${f.pos ?? '-'}` : '-', f.reason ?? ''],
      fail: true,
    })),
  };
  const statement = m.fallbackLedger.length
    ? `${m.fallbackLedger.length} primitive${m.fallbackLedger.length > 1 ? 's' : ''} ran on the host: the rows they produced say nothing about the device kernels`
    : `no host fallback: every primitive ran on the device (no-host-fallback gate ${m.noHostFallback ? 'on' : 'off, and none was needed'})`;
  return { statement, table };
}

/** What the verdict means, and the next step. */
function meaningOf(c: Comparison, v: Verdict, m?: RunManifest): string {
  const where = (r: CompareRow) => `${r.stage} (layer ${r.layer}, pos ${r.pos})`;
  if (v.status === 'host-fallback') return 'Part of the run computed on the host instead of the device: those results say nothing about the device kernels. Port the primitive, or accept it in a baseline with an expiry.';
  if (v.status === 'cannot-evaluate') return 'No verdict: what could be compared passes, but the run did not give the judge enough to decide. The reasons say what is missing.';
  const undecided = c.rows.filter((r) => r.status === 'unjudged').length;
  const caveat = undecided ? ` ${undecided} rows were seen only through their statistics, which proved nothing either way; a run with --capture full judges them.` : '';
  if (v.status === 'pass' && !c.counts.own) return `Nothing failed what was judged: the end result, rows on one side only, non-finite values and the given bounds. No row's own error was judged, and drift has no budget here: this does not say the kernels are right (gate a run directory, or replay the dump).${caveat}`;
  if (v.status === 'pass') return `The device computes this case like the reference: every row judged is within the error its arithmetic allows, and the end result agrees.${caveat}`;
  const own = c.firstOwnFailure;
  if (own) return `A kernel is wrong by itself: given correct inputs, the device computes ${where(own)} outside its budget; the later rows that fail inherit its error.${m ? ' `ds4-diff bisect RUN_DIR` names the kernel.' : ''}`;
  const fd = c.firstDivergence;
  return `No row is wrong by itself, but the results diverge${fd ? ` from ${where(fd)}` : ''} beyond what is allowed: accumulated error, or a fault in a row the judge could not see by its own error.${caveat}`;
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
  const { comparison: c, verdict: v, manifest: m } = input;
  const n = c.counts;
  const summary = [
    `${c.b} vs ${c.a}: ${n.compared} rows compared (${n.own} judged by their own error${n.unjudged ? `, ${n.unjudged} not judged` : ''}), ${n.failed} failed, ${n.missing} on one side only, ${n.nearTies} near ties`,
  ];
  const fo = c.firstOwnFailure;
  if (fo) summary.push(`first stage wrong by itself: ${fo.stage} layer ${fo.layer} pos ${fo.pos} (token ${fo.token}): ${judgedText(fo.own)}`);
  const fd = c.firstDivergence;
  // two bare dumps (compare) carry no reference noise: their free-running rows have no own budget to be within
  const budgeted = c.rows.some((r) => r.free?.budget !== undefined);
  summary.push(
    fd ? `free-running drift first past a row's own budget: ${fd.stage} layer ${fd.layer} pos ${fd.pos}`
    : budgeted ? 'free-running: every row within its own budget'
    : 'free-running: no row has an own budget (no facts of the reference): drift is not judged, only non-finite values, rows on one side only, the end result and policy bounds',
  );
  const notes = [...c.notes, ...v.reasons.slice(1).map((r) => `reason: ${r}`), ...v.warnings.map((w) => `warning: ${w}`)];
  if (input.sources?.length) notes.push(`tolerances: ${input.sources.join('; ')}`);
  const failing = c.rows.filter((r) => r.status === 'fail' || r.status === 'missing').length;
  if (failing > MAX_FAILING_ROWS) notes.push(`${failing - MAX_FAILING_ROWS} more failing rows not listed (see --json)`);
  const cells = cellsOf(c);
  const positions = positionsOf(c);
  const endResult = endResultOf(positions);
  if (endResult && endResult.positions > 1) {
    summary.push(`end result over ${endResult.positions} positions: KL mean ${fmt(endResult.kl.mean)}, median ${fmt(endResult.kl.median)}, 99% ${fmt(endResult.kl.p99)}, max ${fmt(endResult.kl.max)}; same top-1 ${fmt(100 * endResult.sameTop1)} %${endResult.nearTies ? ` (${endResult.nearTies} near-tie flips)` : ''}; Δp RMS ${fmt(endResult.deltaP.rms)}, max ${fmt(endResult.deltaP.max)}`);
  }
  if (n.byStats) summary.push(`${n.byStats} rows compared by statistics only (min/max/mean/RMS/NaN/hash: they prove a failure or identity, never that an error is within its budget)`);
  const fallbacks = m && fallbackView(m);
  if (fallbacks) summary.push(fallbacks.statement);
  if (input.bisect) summary.push(`bisect: ${input.bisect.line}`);
  return {
    title: input.title, verdict: v.line, meaning: meaningOf(c, v, m), exitCode: v.exitCode, pass: v.exitCode === 0, summary,
    stages: stageTable(c), layers: layerTable(c), stageLayers: stageLayerTable(c, cells), cells: cells.map(({ failed: _f, ownRows: _o, freeRows: _r, ...x }) => x), positions, endResult,
    failures: failureTable(c), case: m && caseView(m), fallbacks, bisect: input.bisect, notes,
  };
}
