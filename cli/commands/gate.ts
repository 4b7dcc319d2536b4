// `ds4-diff gate RUN_DIR [--baseline FILE]`: the CI verdict of a run directory. Exit 0 pass, 1 regression,
// 2 host-fallback violation, 3 bad input or usage, 125 cannot evaluate (git bisect run skips).
import type { Command } from 'commander';
import { runDeviceBounds } from '../../ascend/budgets.ts';
import { gateRunDir } from '../../diff/gate.ts';
import { readManifest } from '../../diff/manifest.ts';
import { loadPolicy } from '../../diff/policy.ts';
import { checkReportPaths, emitReports, type ReportOutputs } from '../../reports/write.ts';

export function register(program: Command): void {
  program
    .command('gate')
    .description('judge a run directory: every stage by its own error, the end result by KL / top-1 / Δp (exit 0 pass, 1 regression, 2 host fallback, 3 bad input, 125 cannot evaluate)')
    .argument('<run-dir>', 'run directory (manifest.json + dumps)')
    .option('--baseline <file>', 'a baseline of this case: tightens the budgets, names known deviations and accepted fallbacks (default: the shipped baseline whose case matches)')
    .option('--no-baseline', 'judge by the arithmetic budgets alone, even when a shipped baseline matches the case')
    .option('--policy <file>', 'your bounds on chosen rows, on top of the judge\'s')
    .option('--json', 'print the report as JSON instead of the table')
    .option('--markdown <file>', 'also write a Markdown report (CI job summary)')
    .option('--junit <file>', 'also write a JUnit XML report')
    .option('--html <file>', 'also write the HTML report (one self-contained file: heatmaps, plots, the case)')
    .option('--csv <file>', 'also write every (stage, layer, pos) row as CSV: both sides\' statistics, the metrics, the worst element')
    .option('--by-layer', 'split the terminal\'s stage table by layer')
    .action(async (runDir: string, opts: ReportOutputs & { baseline?: string | false; policy?: string }) => {
      checkReportPaths(opts);
      const m = readManifest(runDir);
      const r = await gateRunDir(runDir, {
        deviceBound: runDeviceBounds(m),
        baseline: opts.baseline || undefined,
        shipped: opts.baseline !== false,
        policy: opts.policy ? loadPolicy(opts.policy) : undefined,
      });
      emitReports({ title: `ds4-diff gate ${runDir}${r.baseline ? ` (baseline ${r.baseline})` : ''}`, comparison: r.comparison, verdict: r.verdict, sources: r.judge.sources, manifest: m }, opts);
      process.exitCode = r.verdict.exitCode;
    });
}
