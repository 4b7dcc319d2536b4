// JUnit XML: one test case per stage (failures carry the stage's closest bound), one for the end result,
// and one for the verdict itself, which fails exactly when the exit code is not 0 — a CI system reading
// only the XML reaches the same verdict.
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
      ? `    <testcase classname="ds4-diff.stages" name="${xml(name)}"><failure message="${xml(r.cells[col('closest bound')])}">${xml(detail)}</failure></testcase>`
      : `    <testcase classname="ds4-diff.stages" name="${xml(name)}"/>`);
  }
  cases.push(v.pass
    ? `    <testcase classname="ds4-diff.verdict" name="verdict (exit ${v.exitCode})"/>`
    : `    <testcase classname="ds4-diff.verdict" name="verdict (exit ${v.exitCode})"><failure message="${xml(v.verdict)}">${xml(input.verdict.reasons.join('\n'))}</failure></testcase>`);
  const failures = cases.filter((c) => c.includes('<failure')).length;
  const summary = xml([v.verdict, ...v.summary, ...v.notes].join('\n'));
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
