// Report renderers: the same content (stages in graph order, failing stages, first divergence, worst
// metric) in terminal, Markdown, JUnit, JSON and HTML.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compareDumps } from '../diff/compare.ts';
import { parseJson } from '../diff/json.ts';
import { EMPTY_POLICY } from '../diff/policy.ts';
import type { StageRecord } from '../model/stages.ts';
import { renderHtml } from '../reports/html.ts';
import { renderJson } from '../reports/json.ts';
import { renderJunit } from '../reports/junit.ts';
import { renderMarkdown } from '../reports/markdown.ts';
import { renderTerminal } from '../reports/terminal.ts';
import { buildView, fmt, type ReportView } from '../reports/view.ts';

const rec = (stage: string, layer: number, values: number[]): StageRecord => ({ stage, layer, pos: 0, token: 5, dtype: 'f32', shape: [values.length], values: Float32Array.from(values) });

// given out of graph order on purpose; ffn_norm (layer 0) is the first failing stage in graph order
// kv_norm appears only at pos 1 (like an emission-only stage) and must still sort before q_rope
const REF = [{ ...rec('kv_norm', 0, [1]), pos: 1 }, rec('q_rope', 1, [1, 2, 3]), rec('ffn_norm', 0, [1, 2, 3]), rec('attn_norm', 0, [1, 2, 3]), rec('my_probe', 0, [1]), rec('embed_hc', 0, [4, 4])];
const DEV = [{ ...rec('kv_norm', 0, [1]), pos: 1 }, rec('q_rope', 1, [1, 2, 3.5]), rec('ffn_norm', 0, [1, 2.2, 3]), rec('attn_norm', 0, [1, 2, 3]), rec('my_probe', 0, [1])];

let saved: string | undefined;
beforeEach(() => {
  saved = process.env.NO_COLOR;
  process.env.NO_COLOR = '1';
});
afterEach(() => {
  if (saved === undefined) delete process.env.NO_COLOR;
  else process.env.NO_COLOR = saved;
});

async function input() {
  return { title: 'test report', comparison: await compareDumps(REF, DEV, EMPTY_POLICY, { a: 'ref', b: 'dev' }) };
}

describe('reports', () => {
  it('the view lists stages in graph order, unknown stages last, and marks the first divergence', async () => {
    const v = buildView(await input());
    expect(v.stages.rows.map((r) => r.cells[1])).toEqual(['embed_hc', 'attn_norm', 'kv_norm', 'q_rope', 'ffn_norm', 'my_probe (unknown)']);
    expect(v.stages.rows.map((r) => r.cells[0])).toEqual(['?', '', '', 'x', '>>', '']);
    expect(v.stages.rows.map((r) => r.fail)).toEqual([false, false, false, true, true, false]);
    // ffn_norm's registry tolerance is maxAbs 0.05: 0.2 is 4x over (f32 of 2.2 is 2.2000000477)
    expect(v.stages.rows[4].cells[7]).toMatch(/^maxAbs 0\.2 \/ 0\.05$/);
    expect(v.summary.join('\n')).toMatch(/first divergence: ffn_norm layer 0 pos 0 \(token 5\)/);
    expect(v.summary[0]).toMatch(/5 rows compared, 2 failed, 1 missing/);
    expect(v.pass).toBe(false);
    // per-layer aggregation: layer 0 (ffn_norm, 4x) and layer 1 (q_rope, 0.5/0.05 = 10x) both fail
    expect(v.layers.rows.map((r) => r.cells.slice(0, 4))).toEqual([['0', '5', '1', 'ffn_norm'], ['1', '1', '1', 'q_rope']]);
  });

  it('terminal: no colour codes under NO_COLOR, same rows', async () => {
    const t = renderTerminal(await input());
    expect(t).not.toMatch(/\u001b\[/);
    expect(t).toMatch(/test report: FAIL/);
    expect(t.split('\n').find((l) => l.startsWith('>>'))).toMatch(/ffn_norm/);
    expect(t).toMatch(/failing rows \(graph order\)/);
  });

  it('markdown carries the same stage table', async () => {
    const i = await input();
    const md = renderMarkdown(i);
    const rows = md.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('|  | stage'));
    expect(md).toMatch(/^## test report: ❌ FAIL/);
    expect(rows.some((l) => l.includes('**ffn_norm**') && l.startsWith('| >> '))).toBe(true);
    expect(md).toMatch(/\| embed_hc \| 1 \| 1 missing \|/);
  });

  it('JUnit: one test case per stage, failures counted', async () => {
    const x = renderJunit(await input());
    expect(x.match(/<testcase /g)!.length).toBe(6);
    expect(x).toMatch(/<testsuites name="ds4-diff" tests="6" failures="2">/);
    expect(x).toMatch(/<testcase classname="ds4-diff.stages" name="ffn_norm"><failure message="maxAbs 0.2 \/ 0.05">/);
    expect(x).toMatch(/<testcase classname="ds4-diff.stages" name="attn_norm"\/>/);
  });

  it('JSON: the view plus the structured comparison, non-finite numbers preserved', async () => {
    const i = await input();
    const j = parseJson<{ view: ReportView; comparison: { firstDivergence: { stage: string }; rows: Array<{ stage: string; metrics?: { sqnrDb: number } }> } }>(renderJson(i));
    expect(j.view).toEqual(buildView(i));
    expect(j.comparison.firstDivergence.stage).toBe('ffn_norm');
    // attn_norm is identical: SQNR is +Infinity and survives the JSON round trip
    expect(j.comparison.rows.find((r) => r.stage === 'attn_norm')!.metrics!.sqnrDb).toBe(Infinity);
  });

  it('HTML: a static page with the same tables, escaped', async () => {
    const h = renderHtml(await input());
    expect(h).toMatch(/^<!doctype html>/);
    expect(h).toMatch(/<tr class="first"><td>&gt;&gt;<\/td><td>ffn_norm<\/td>/);
    expect(h).not.toMatch(/<script/);
  });

  it('numbers are formatted readably', () => {
    expect([fmt(0), fmt(0.25), fmt(1e-7), fmt(Infinity), fmt(NaN), fmt(undefined), fmt(123456)]).toEqual(['0', '0.25', '1.00e-7', 'inf', 'NaN', '-', '1.23e+5']);
  });
});
