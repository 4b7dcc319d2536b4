// JUnit XML: one test case per stage (failures carry the worst metric and the first failing row),
// plus one per baseline check and one for the host-fallback gate when gating.
import { buildView, type ReportInput } from './view.ts';

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export function renderJunit(input: ReportInput): string {
  const v = buildView(input);
  const cases: string[] = [];
  const col = (name: string) => v.stages.columns.indexOf(name);
  for (const r of v.stages.rows) {
    const name = r.cells[col('stage')];
    const detail = v.stages.columns.map((h, i) => `${h || 'mark'}=${r.cells[i]}`).join(' ');
    cases.push(r.fail
      ? `    <testcase classname="ds4-diff.stages" name="${xml(name)}"><failure message="${xml(r.cells[col('worst metric')])}">${xml(detail)}</failure></testcase>`
      : `    <testcase classname="ds4-diff.stages" name="${xml(name)}"/>`);
  }
  for (const r of v.checks?.rows ?? []) {
    const name = `${r.cells[0]} layer ${r.cells[1]}`;
    cases.push(r.fail
      ? `    <testcase classname="ds4-diff.baseline" name="${xml(name)}"><failure message="${xml(r.cells[6])}">${xml(v.checks!.columns.map((h, i) => `${h}=${r.cells[i]}`).join(' '))}</failure></testcase>`
      : `    <testcase classname="ds4-diff.baseline" name="${xml(name)}"/>`);
  }
  const g = input.gate;
  if (g) {
    cases.push(g.fallbackViolations.length
      ? `    <testcase classname="ds4-diff.gate" name="no host fallback"><failure message="${xml(g.fallbackViolations[0])}">${xml(g.fallbackViolations.join('\n'))}</failure></testcase>`
      : `    <testcase classname="ds4-diff.gate" name="no host fallback"/>`);
  }
  const failures = cases.filter((c) => c.includes('<failure')).length;
  const summary = xml([...v.summary, ...v.notes].join('\n'));
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="ds4-diff" tests="${cases.length}" failures="${failures}">`,
    `  <testsuite name="${xml(v.title)}" tests="${cases.length}" failures="${failures}" errors="0">`,
    `    <system-out>${summary}</system-out>`,
    ...cases,
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n');
}
