// CSV: one line per (stage, layer, pos), what msprobe users load into a spreadsheet — both sides' statistics
// (min, max, mean, L2 norm, NaN count), the free-running metrics, the element where the two differ most and its
// two values, the own error against its budget and how each role judged the row. Rows compared by statistics
// have no metrics; the `*_at_least` columns are what their statistics prove, and the `x_budget` ratios of such
// rows are lower bounds too.
import type { CompareRow, Comparison } from '../diff/compare.ts';
import { ratio } from '../diff/compare.ts';
import type { RowStats } from '../model/stages.ts';
import type { ReportInput } from './view.ts';

const COLUMNS = [
  'stage', 'layer', 'pos', 'token', 'status', 'kind',
  'ref_min', 'ref_max', 'ref_mean', 'ref_norm', 'ref_nan',
  'dev_min', 'dev_max', 'dev_mean', 'dev_norm', 'dev_nan',
  'max_abs', 'mean_abs', 'rel_rms', 'rel_rms_at_least', 'cosine', 'nmse', 'max_rel', 'sqnr_db', 'ulp_max', 'ratio_1e3', 'ratio_5e3', 'id_mismatches',
  'worst_index', 'worst_ref', 'worst_dev',
  'drift_x_budget', 'own_rel_rms', 'own_rel_rms_at_least', 'own_budget', 'own_x_budget', 'free_status', 'own_status',
];

const cell = (v: unknown): string => {
  if (v === undefined || v === null) return '';
  const t = typeof v === 'number' ? (Number.isNaN(v) ? 'NaN' : v === Infinity ? 'inf' : v === -Infinity ? '-inf' : String(v)) : String(v);
  return /[",\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
};

const side = (s: RowStats | undefined): unknown[] => (s ? [s.min, s.max, s.mean, s.rms * Math.sqrt(s.n - s.nan - s.inf), s.nan] : [undefined, undefined, undefined, undefined, undefined]);

function line(r: CompareRow): unknown[] {
  const f = r.free?.metrics;
  const f32 = f?.kind === 'f32' ? f : undefined;
  const om = r.own?.metrics;
  const byStats = r.free?.byStats ?? r.own?.byStats;
  return [
    r.stage, r.layer, r.pos, r.token, r.status, byStats ? 'stats' : 'full',
    ...side(r.sides?.a), ...side(r.sides?.b),
    f32?.maxAbs, f32?.meanAbs, f32?.relRms, r.free?.byStats?.relRmsAtLeast, f32?.cosine, f32?.nmse, f32?.maxRel, f32?.sqnrDb, f32?.ulpMax, f32?.ratio1e3, f32?.ratio5e3, f?.kind === 'i32' ? f.mismatches : undefined,
    r.worstAt?.index, r.worstAt?.a, r.worstAt?.b,
    ratio(r.free), om?.kind === 'f32' ? om.relRms : undefined, r.own?.byStats?.relRmsAtLeast, r.own?.budget, ratio(r.own), r.free?.status ?? (r.missing ? `no ${r.missing} row` : ''), r.own?.status ?? '',
  ];
}

export function renderCsv(input: ReportInput): string {
  const c: Comparison = input.comparison;
  return [COLUMNS.join(','), ...c.rows.map((r) => line(r).map(cell).join(','))].join('\n') + '\n';
}
