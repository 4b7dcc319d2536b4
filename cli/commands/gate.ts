// `ds4-diff gate RUN_DIR --baseline FILE`: the CI verdict. Exit 0 pass, 1 tolerance regression,
// 2 host-fallback violation, 3 bad input or usage, 125 cannot evaluate (git bisect run skips).
import type { Command } from 'commander';
import { gate } from '../../diff/gate.ts';
import { loadPolicy } from '../../diff/policy.ts';
import { emitReports, type ReportOutputs } from '../../reports/write.ts';

export function register(program: Command): void {
  program
    .command('gate')
    .description('gate a run directory against a baseline (exit 0 pass, 1 regression, 2 host fallback, 3 bad input, 125 cannot evaluate)')
    .argument('<run-dir>', 'run directory (manifest.json + dumps)')
    .requiredOption('--baseline <file>', 'baseline JSON (ds4-diff baseline record)')
    .option('--policy <file>', 'extra tolerance rules for stages the baseline does not list')
    .option('--json', 'print the report as JSON instead of the table')
    .option('--markdown <file>', 'also write a Markdown report (CI job summary)')
    .option('--junit <file>', 'also write a JUnit XML report')
    .option('--html <file>', 'also write a static HTML report')
    .action(async (runDir: string, opts: ReportOutputs & { baseline: string; policy?: string }) => {
      const result = await gate(runDir, opts.baseline, { policy: opts.policy ? loadPolicy(opts.policy) : undefined });
      emitReports({ title: 'ds4-diff gate', comparison: result.comparison, gate: result }, opts);
      process.exitCode = result.exitCode;
    });
}
