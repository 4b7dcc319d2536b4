// `ds4-diff compare A.arrow B.arrow`: any two dumps, B judged as a free-running candidate of A (the
// reference side): metrics per row, the end result (logits) by its end-to-end budget, rows on one side only
// and non-finite values as failures, and any --policy bounds. Own errors need a run directory (`gate`) or a
// replay (`replay B -m MODEL`): two bare dumps cannot say which kernel erred.
import type { Command } from 'commander';
import { deviceBounds } from '../../ascend/budgets.ts';
import { compareFiles } from '../../diff/compare.ts';
import { makeJudge, verdictOf } from '../../diff/gate.ts';
import { loadPolicy } from '../../diff/policy.ts';
import { checkDumpRunComplete } from '../../diff/rundir.ts';
import { checkReportPaths, emitReports, type ReportOutputs } from '../../reports/write.ts';

export function register(program: Command): void {
  program
    .command('compare')
    .description('compare two Arrow dumps stage by stage (A = reference): metrics, drift, the end result, your policy')
    .argument('<a>', 'reference dump (.arrow)')
    .argument('<b>', 'candidate dump (.arrow)')
    .option('--policy <file>', 'bounds on chosen rows (JSON rules, see the README)')
    .option('--json', 'print the report as JSON instead of the table')
    .option('--markdown <file>', 'also write a Markdown report')
    .option('--junit <file>', 'also write a JUnit XML report (one test case per stage)')
    .option('--html <file>', 'also write the HTML report (one self-contained file: heatmaps, plots, the case)')
    .option('--csv <file>', 'also write every (stage, layer, pos) row as CSV: both sides\' statistics, the metrics, the worst element')
    .option('--by-layer', 'split the terminal\'s stage table by layer')
    .action(async (a: string, b: string, opts: ReportOutputs & { policy?: string }) => {
      checkReportPaths(opts);
      for (const f of [a, b]) checkDumpRunComplete(f);
      // without the reference's facts no own budget exists: the device bound is never consulted
      const judge = makeJudge({ deviceBound: deviceBounds('exact'), policy: opts.policy ? loadPolicy(opts.policy) : undefined });
      const comparison = await compareFiles(a, b, judge);
      const verdict = verdictOf(comparison);
      emitReports({ title: 'ds4-diff compare', comparison, verdict, sources: judge.sources }, opts);
      process.exitCode = verdict.exitCode;
    });
}
