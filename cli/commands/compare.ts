// `ds4-diff compare A.arrow B.arrow`: the stage table for any two dumps (A is the reference side).
// Exit 0 when every compared row is within tolerance, 1 otherwise.
import type { Command } from 'commander';
import { compareFiles } from '../../diff/compare.ts';
import { EMPTY_POLICY, loadPolicy } from '../../diff/policy.ts';
import { checkDumpRunComplete } from '../../diff/rundir.ts';
import { EXIT } from '../../model/errors.ts';
import { emitReports, type ReportOutputs } from '../../reports/write.ts';

export function register(program: Command): void {
  program
    .command('compare')
    .description('compare two Arrow dumps stage by stage (A = reference): metrics, first divergence, tolerances')
    .argument('<a>', 'reference dump (.arrow)')
    .argument('<b>', 'candidate dump (.arrow)')
    .option('--policy <file>', 'tolerance policy (JSON rules; default: the registry tolerances)')
    .option('--json', 'print the report as JSON instead of the table')
    .option('--markdown <file>', 'also write a Markdown report')
    .option('--junit <file>', 'also write a JUnit XML report (one test case per stage)')
    .option('--html <file>', 'also write a static HTML report')
    .action(async (a: string, b: string, opts: ReportOutputs & { policy?: string }) => {
      const policy = opts.policy ? loadPolicy(opts.policy) : EMPTY_POLICY;
      for (const f of [a, b]) checkDumpRunComplete(f);
      const comparison = await compareFiles(a, b, policy);
      emitReports({ title: 'ds4-diff compare', comparison }, opts);
      process.exitCode = comparison.pass ? EXIT.ok : EXIT.regression;
    });
}
