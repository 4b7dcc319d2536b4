// Report renderers: the same content (stages in graph order, own errors against their budgets, drift, the
// first stage wrong by itself, the one verdict) in terminal, Markdown, JUnit, JSON and HTML.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compare } from '../diff/compare.ts';
import { makeJudge, verdictOf } from '../diff/gate.ts';
import { parseJson } from '../diff/json.ts';
import type { RowFacts } from '../diff/judge.ts';
import { stageKey, type StageRecord } from '../model/stages.ts';
import { renderHtml } from '../reports/html.ts';
import { renderJson } from '../reports/json.ts';
import { renderJunit } from '../reports/junit.ts';
import { renderMarkdown } from '../reports/markdown.ts';
import { renderTerminal } from '../reports/terminal.ts';
import { renderCsv } from '../reports/csv.ts';
import type { RunManifest } from '../diff/manifest.ts';
import { buildView, EMPTY_COLOUR, endResultOf, FAIL_COLOUR, fmt, heatColour, type ReportInput, type ReportView } from '../reports/view.ts';

const rec = (stage: string, layer: number, values: number[], pos = 0): StageRecord => ({ stage, layer, pos, token: 5, dtype: 'f32', shape: [values.length], values: Float32Array.from(values) });

// given out of graph order on purpose; kv_norm appears only at pos 1 (like an emission-only stage) and must
// still sort before q_rope; embed_hc has no candidate row; my_probe is a name the registry does not know
const REF = [rec('kv_norm', 0, [1], 1), rec('q_rope', 1, [1, 2, 3]), rec('ffn_norm', 0, [1, 2, 3]), rec('attn_norm', 0, [1, 2, 3]), rec('my_probe', 0, [1]), rec('embed_hc', 0, [4, 4])];
// the teacher-forced pass: ffn_norm is 10 % off by itself
const OWN = [rec('kv_norm', 0, [1], 1), rec('q_rope', 1, [1, 2, 3]), rec('ffn_norm', 0, [1, 2.2, 3]), rec('attn_norm', 0, [1, 2, 3]), rec('my_probe', 0, [1])];
// free-running: q_rope drifts (inherited), ffn_norm carries its own error
const FREE = [rec('kv_norm', 0, [1], 1), rec('q_rope', 1, [1, 2, 3.5]), rec('ffn_norm', 0, [1, 2.2, 3]), rec('attn_norm', 0, [1, 2, 3]), rec('my_probe', 0, [1])];

let saved: string | undefined;
beforeEach(() => {
  saved = process.env.NO_COLOR;
  process.env.NO_COLOR = '1';
});
afterEach(() => {
  if (saved === undefined) delete process.env.NO_COLOR;
  else process.env.NO_COLOR = saved;
});

async function input(): Promise<ReportInput> {
  const facts = new Map<string, RowFacts>(REF.map((r) => [stageKey(r.stage, r.layer, r.pos), { noise: (r.values as Float32Array).map((v) => 1e-7 * Math.abs(v)) }]));
  const judge = makeJudge({ deviceBound: () => ({ rel: 1e-5, from: 'test 1e-5' }) });
  const comparison = await compare({ reference: REF, free: FREE, own: OWN, facts, labels: { a: 'ref', b: 'dev' } }, judge);
  return { title: 'test report', comparison, verdict: verdictOf(comparison), sources: judge.sources };
}

describe('reports', () => {
  it('the view lists stages in graph order, unknown stages last, marks the first stage wrong by itself, and carries the verdict', async () => {
    const v = buildView(await input());
    expect(v.stages.rows.map((r) => r.cells[1])).toEqual(['embed_hc', 'attn_norm', 'kv_norm', 'q_rope', 'ffn_norm', 'my_probe (unknown)']);
    expect(v.stages.rows.map((r) => r.cells[0])).toEqual(['x', '', '', '', '>>', '']);
    expect(v.stages.rows.map((r) => r.fail)).toEqual([true, false, false, false, true, false]);
    // ffn_norm's own error: 0.2 in sqrt(14) → relRms 0.2/sqrt(14) = 0.0535, its budget 10 × 1e-7 + 1e-5
    const ffn = v.stages.rows[4].cells;
    expect(ffn[4]).toBe(fmt(Math.fround(2.2) - 2 === 0 ? 0 : Math.abs(Math.fround(2.2) - 2) / Math.sqrt(14)));
    expect(Number(ffn[5].replace('×', ''))).toBeGreaterThan(4000);
    // q_rope drifts free-running past its own budget without failing
    expect(Number(v.stages.rows[3].cells[6].replace('×', ''))).toBeGreaterThan(1);
    expect(v.stages.rows[3].fail).toBe(false);
    expect(v.summary[0]).toMatch(/5 rows compared \(5 judged by their own error\), 1 failed, 1 on one side only/);
    expect(v.summary[1]).toMatch(/^first stage wrong by itself: ffn_norm layer 0 pos 0 \(token 5\): relRms 0\.0535 vs 1\.1e-5/);
    expect(v.verdict).toMatch(/^FAIL: ffn_norm layer 0 pos 0 is wrong by itself/);
    expect(v.exitCode).toBe(1);
    expect(v.pass).toBe(false);
    expect(v.layers.rows.map((r) => r.cells.slice(0, 3))).toEqual([['0', '5', '2'], ['1', '1', '0']]);
  });

  it('two bare dumps (no facts, no own side): the report does not call drift within a budget it does not have', async () => {
    const judge = makeJudge({ deviceBound: () => ({ rel: 1e-5, from: 'test 1e-5' }) });
    // with the logits, which agree: the end result is judged
    const logits = rec('logits', 2, [2, 1, 0, -1]);
    const free = [...FREE.filter((r) => r.stage !== 'ffn_norm'), logits];
    const comparison = await compare({ reference: [...REF.filter((r) => r.stage !== 'ffn_norm' && r.stage !== 'embed_hc'), logits], free, labels: { a: 'ref', b: 'dev' } }, judge);
    const verdict = verdictOf(comparison);
    expect(verdict.status).toBe('pass');
    const v = buildView({ title: 'compare', comparison, verdict, sources: judge.sources });
    // q_rope is 14 % off: no budget says that is fine
    expect(v.summary.join('\n')).not.toMatch(/every row within its own budget/);
    expect(v.summary[1]).toMatch(/^free-running: no row has an own budget/);
    expect(v.meaning).not.toMatch(/within the error its arithmetic allows/);
  });

  it('terminal: no colour codes under NO_COLOR, same rows, the verdict last', async () => {
    const i = await input();
    const t = renderTerminal(i);
    expect(t).not.toMatch(/\u001b\[/);
    expect(t.split('\n').find((l) => l.startsWith('>>'))).toMatch(/ffn_norm/);
    expect(t).toMatch(/failing rows \(graph order\)/);
    expect(t.trimEnd().split('\n').at(-1)).toBe(i.verdict.line);
  });

  it('markdown carries the verdict and the same stage table', async () => {
    const i = await input();
    const md = renderMarkdown(i);
    expect(md).toContain(`**❌ ${i.verdict.line}**`);
    const rows = md.split('\n').filter((l) => l.startsWith('| '));
    expect(rows.some((l) => l.includes('**ffn_norm**') && l.startsWith('| >> '))).toBe(true);
    expect(md).toMatch(/\| \*\*embed_hc\*\* \| 1 \| 1 \(1 missing\) \|/);
    expect(md).toMatch(/\| >> \| \*\*ffn_norm\*\* \| 0 \| 0 \| 5 \| FAIL relRms 0\.0535 .* \| pass relRms 0\.0535 \(4860× its own budget\) \|/);
  });

  it('JUnit: one test case per stage and one for the verdict, failing exactly when the exit code is not 0', async () => {
    const x = renderJunit(await input());
    expect(x.match(/<testcase /g)!.length).toBe(7);
    expect(x).toMatch(/<testsuites name="ds4-diff" tests="7" failures="3">/);
    expect(x).toMatch(/<testcase classname="ds4-diff.stages" name="ffn_norm"><failure message="maxRelRms 0\.0535 \/ 1\.1e-5">/);
    expect(x).toMatch(/<testcase classname="ds4-diff.stages" name="attn_norm"\/>/);
    expect(x).toMatch(/<testcase classname="ds4-diff.verdict" name="verdict \(exit 1\)"><failure message="FAIL: ffn_norm/);
  });

  it('JSON: the verdict, the view and the judged comparison, non-finite numbers preserved', async () => {
    const i = await input();
    const j = parseJson<{ verdict: { exitCode: number; line: string }; view: ReportView; comparison: { firstOwnFailure: { stage: string }; rows: Array<{ stage: string; own?: { metrics?: { sqnrDb: number } } }> } }>(renderJson(i));
    expect(j.verdict).toMatchObject({ exitCode: 1, line: i.verdict.line });
    expect(j.view).toEqual(buildView(i));
    expect(j.comparison.firstOwnFailure.stage).toBe('ffn_norm');
    // attn_norm is identical: SQNR is +Infinity and survives the JSON round trip
    expect(j.comparison.rows.find((r) => r.stage === 'attn_norm')!.own!.metrics!.sqnrDb).toBe(Infinity);
  });

  it('HTML: one self-contained page with the verdict, the same tables, escaped, and its data inline', async () => {
    const i = await input();
    const h = renderHtml(i);
    expect(h).toMatch(/^<!doctype html>/);
    expect(h).toMatch(/<tr class="first"><td>&gt;&gt;<\/td><td>ffn_norm<\/td>/);
    expect(h).toContain('<p class="verdict bad" id="verdict">FAIL: ffn_norm layer 0 pos 0 is wrong by itself');
    // nothing is fetched: no external script, stylesheet, image or URL (the SVG namespace is a name, not a fetch)
    expect(h.replaceAll('http://www.w3.org/2000/svg', '')).not.toMatch(/<script[^>]+src=|<link|<img|url\(|@import|https?:\/\//);
    const data = JSON.parse(/<script type="application\/json" id="report-data">(.*?)<\/script>/s.exec(h)![1]);
    expect(data.stages).toEqual(buildView(i).stages.rows.map((r) => r.cells[1].replace(' (unknown)', '')));
    expect(data.firstOwn).toEqual({ stage: 'ffn_norm', layer: 0, pos: 0 });
    expect(data.rows['ffn_norm@0'].list[0].slice(0, 3)).toEqual([0, 5, 'fail']);
  });

  it('CSV: one line per row with both sides\' statistics, the metrics and the worst element with its two values', async () => {
    const lines = renderCsv(await input()).trimEnd().split('\n').map((l) => l.split(','));
    const head = lines[0];
    const row = (stage: string) => Object.fromEntries(head.map((h, i) => [h, lines.find((l) => l[0] === stage)![i]]));
    expect(lines.length).toBe(1 + 6);
    const q = row('q_rope');
    // reference [1, 2, 3] vs free-running [1, 2, 3.5]: the worst element is the third
    expect([q.ref_min, q.ref_max, q.ref_mean, q.dev_max, q.worst_index, q.worst_ref, q.worst_dev, q.max_abs]).toEqual(['1', '3', '2', '3.5', '2', '3', '3.5', '0.5']);
    expect(Number(q.ref_norm)).toBeCloseTo(Math.sqrt(14), 6);
    expect(Number(q.dev_norm)).toBeCloseTo(Math.sqrt(1 + 4 + 12.25), 6);
    expect([q.kind, q.free_status, q.own_status]).toEqual(['full', 'pass', 'pass']);
    expect(row('ffn_norm').own_status).toBe('fail');
    expect(row('embed_hc').status).toBe('missing');
  });

  it('--by-layer: the terminal\'s stage table per (stage, layer), the first stage wrong by itself marked', async () => {
    const t = renderTerminal(await input(), { byLayer: true });
    const header = t.split('\n').find((l) => l.includes('stage') && l.includes('layer') && l.includes('at pos'))!;
    expect(header).toBeDefined();
    expect(t.split('\n').find((l) => l.startsWith('>>'))).toMatch(/^>>\s+ffn_norm\s+0\s+1\s+1\s+4860×\s+0/);
    expect(t).toMatch(/\n\s+q_rope\s+1\s+1\s+0\s+0×\s+0\s+1\.2e\+4×\s+0/);
  });

  it('heatmap colours: failing cells in the failing colour, a log scale below and above the budget', () => {
    expect(heatColour(1e-6, true)).toBe(FAIL_COLOUR);
    expect(heatColour(undefined, false)).toBe(EMPTY_COLOUR);
    const green = (c: string) => parseInt(c.slice(3, 5), 16);
    // within budget: darker green the closer to the budget; past it (drift): another hue, darker further out
    expect(green(heatColour(1e-3, false))).toBeGreaterThan(green(heatColour(0.1, false)));
    expect(heatColour(10, false)).not.toBe(heatColour(0.5, false));
    expect(green(heatColour(10, false))).toBeGreaterThan(green(heatColour(1000, false)));
    expect(new Set([1e-5, 1e-2, 1, 10, 1e4].map((r) => heatColour(r, false))).has(FAIL_COLOUR)).toBe(false);
  });

  it('the end result over positions: KL mean, median, 99 %, max, same top-1 and Δp, as llama-perplexity reports them', () => {
    const e = endResultOf([
      { pos: 0, token: 1 },
      { pos: 1, token: 2, kl: 0.01, deltaP: 0.02, sameTop1: true },
      { pos: 2, token: 3, kl: 0.03, deltaP: 0.04, sameTop1: false, nearTie: true },
      { pos: 3, token: 4, kl: 0.02, deltaP: 0, sameTop1: true },
    ])!;
    expect(e.positions).toBe(3);
    expect(e.kl.mean).toBeCloseTo(0.02, 12);
    expect([e.kl.median, e.kl.p99, e.kl.max]).toEqual([0.02, 0.03, 0.03]);
    expect(e.sameTop1).toBeCloseTo(2 / 3, 12);
    expect(e.nearTies).toBe(1);
    expect(e.deltaP.rms).toBeCloseTo(Math.sqrt((0.0004 + 0.0016) / 3), 12);
    expect(e.deltaP.max).toBe(0.04);
    expect(endResultOf([{ pos: 0, token: 1 }])).toBeUndefined();
  });

  it('a run\'s report has its case with the tokens\' pieces and its fallback ledger, or says there was none', async () => {
    const manifest: RunManifest = {
      formatVersion: 1, complete: true, createdAt: '2026-01-01T00:00:00Z', model: { path: '/m/tiny.gguf', fingerprint: 'f00d' }, prompt: 'Hi',
      promptTokens: [0, 42], tokenPieces: ['<BOS>', 'Hi'], layers: { last: 0, all: false }, backend: 'sim', kernelMath: 'exact', options: {}, files: {},
      noHostFallback: true, fallbackLedger: [], capture: { mode: 'stats', full: ['always: logits'] },
    };
    const v = buildView({ ...(await input()), manifest });
    expect(Object.fromEntries(v.case!.lines)).toMatchObject({ fingerprint: 'f00d', prompt: '"Hi"', backend: 'sim', 'kernel math': 'exact', capture: 'statistics; in full: always: logits' });
    expect(v.case!.tokens.rows.map((r) => r.cells.slice(0, 3))).toEqual([['0', '0', '<BOS>'], ['1', '42', 'Hi']]);
    expect(v.fallbacks!.statement).toBe('no host fallback: every primitive ran on the device (no-host-fallback gate on)');
    expect(v.summary).toContain(v.fallbacks!.statement);
    const ledger = buildView({ ...(await input()), manifest: { ...manifest, noHostFallback: false, fallbackLedger: [{ primitive: 'swiglu', calls: 3, bytesToHost: 96, bytesToDevice: 48 }] } });
    expect(ledger.fallbacks!.statement).toMatch(/^1 primitive ran on the host/);
    expect(ledger.fallbacks!.table.rows[0].cells.slice(0, 4)).toEqual(['swiglu', '3', '96', '48']);
    expect(renderTerminal({ ...(await input()), manifest })).toContain('no host fallback: every primitive ran on the device');
  });

  it('numbers are formatted readably', () => {
    expect([fmt(0), fmt(0.25), fmt(1e-7), fmt(Infinity), fmt(NaN), fmt(undefined), fmt(123456)]).toEqual(['0', '0.25', '1.0e-7', 'inf', 'NaN', '-', '1.2e+5']);
  });
});
