// `ds4-diff replay DUMP.arrow`: recompute every dumped stage from that dump's own inputs with the
// reference and report each stage's own error (diff/replay.ts). Exit 0 when every replayed row is
// within tolerance, 1 on an own-error failure, 3 on bad input (unreadable dump, wrong model, a filter
// that selects no record), 125 when nothing selected could be replayed.
import type { Command } from 'commander';
import { Ds4DiffError, EXIT, badInput } from '../../model/errors.ts';
import { stringifyJson } from '../../diff/json.ts';
import { EMPTY_POLICY, loadPolicy, type Thresholds } from '../../diff/policy.ts';
import { replayDump, type ReplayResult, type ReplayRow } from '../../diff/replay.ts';
import { checkDumpRunComplete } from '../../diff/rundir.ts';
import { parseIntList, trackedFilter } from '../../reference/capture.ts';
import { colors, drawTable } from '../../reports/terminal.ts';
import { fmt, metricCells, type Table } from '../../reports/view.ts';
import { loadModel, progress } from '../common.ts';

interface ReplayCliOptions {
  model?: string;
  policy?: string;
  stages?: string;
  layers?: string;
  pos?: string;
  failures?: boolean;
  json?: boolean;
}

function toleranceText(t: Thresholds | undefined): string {
  if (!t) return '-';
  const parts: string[] = [];
  if (t.exact) parts.push('exact');
  if (t.maxAbs !== undefined) parts.push(`maxAbs<=${fmt(t.maxAbs)}`);
  if (t.minCosine !== undefined) parts.push(`cos>=${t.minCosine}`);
  if (t.maxNmse !== undefined) parts.push(`nmse<=${fmt(t.maxNmse)}`);
  return parts.join(' ') || '-';
}

function rowTable(rows: ReplayRow[], first: ReplayRow | undefined): Table {
  return {
    columns: ['stage', 'layer', 'pos', 'own maxAbs', 'own cosine', 'own nmse', 'tolerance', 'status'],
    rows: rows.map((r) => {
      const status = r.status === 'skipped' ? `skipped: ${r.reason}` : r.status === 'fail' ? `FAIL ${r.reason ?? r.violations.map((v) => `${v.threshold} ${fmt(v.value)}/${fmt(v.limit)}`).join(', ')}` : 'pass';
      return { cells: [r.stage, String(r.layer), String(r.pos), ...metricCells(r.metrics), r.status === 'skipped' ? '-' : toleranceText(r.thresholds), status], fail: r.status === 'fail', first: r === first };
    }),
  };
}

function summaryLines(res: ReplayResult): string[] {
  const { counts: c, firstOwnFailure: f } = res;
  const lines = [`replayed ${c.replayed} stages: ${c.passed} within tolerance, ${c.failed} own-error failures, ${c.skipped} skipped`];
  if (f) lines.push(`first own failure: ${f.stage} layer ${f.layer} pos ${f.pos}`);
  return lines;
}

export function register(program: Command): void {
  program
    .command('replay')
    .description("recompute each dumped stage from the dump's own inputs with the reference: every stage's own error")
    .argument('<dump>', 'Arrow dump (.arrow): ours, an imported ds4 dump, anyone\'s')
    .option('-m, --model <gguf>', 'the DS4 GGUF the dump was made with (default: the bundled tiny synthetic model)')
    .option('--policy <file>', 'tolerance policy (JSON rules; default: the registry tolerances)')
    .option('--stages <globs>', 'replay only these stages (globs over canonical names and ds4 aliases, comma-separated)')
    .option('--layers <list>', 'replay only these layers ("0,2,5:7"); the embedding and head are kept')
    .option('--pos <list>', 'replay only these positions ("0", "3:5")')
    .option('--failures', 'list only failed and skipped rows (the summary still counts all)')
    .option('--json', 'print {file, rows, counts, firstOwnFailure} as JSON')
    .addHelpText('after', '\nExamples:\n  ds4-diff replay runs/r1/device.arrow\n  ds4-diff replay imported.arrow -m ds4flash.gguf --layers 0:3 --failures')
    .action(async (file: string, opts: ReplayCliOptions) => {
      const filter = trackedFilter({
        stages: opts.stages?.split(',').map((s) => s.trim()).filter(Boolean),
        layers: parseIntList(opts.layers, '--layers'),
        pos: parseIntList(opts.pos, '--pos'),
      }, '--layers', '--pos');
      const policy = opts.policy ? loadPolicy(opts.policy) : EMPTY_POLICY;
      checkDumpRunComplete(file);
      const { model, cfg } = await loadModel(opts.model);
      const prog = progress('replay');
      let res: ReplayResult;
      try {
        res = await replayDump(file, { model, cfg, policy, filter: filter.keep, onProgress: prog.tick });
      } finally {
        prog.done();
      }
      // a filter part that selected nothing is named; a filter that selected nothing at all is bad input
      const unmatched = filter.unmatched();
      if (res.counts.rows === 0 && (opts.stages || opts.layers || opts.pos)) {
        throw badInput(`${file}: nothing selected to replay: ${unmatched.length ? unmatched.join('; ') : '--stages, --layers and --pos together match no record'}`);
      }
      for (const u of unmatched) process.stderr.write(`ds4-diff: warning: ${u} of ${file}\n`);
      if (opts.json) {
        process.stdout.write(stringifyJson(res));
      } else {
        const c = colors();
        const shown = opts.failures ? res.rows.filter((r) => r.status !== 'pass') : res.rows;
        const lines = [c.bold(`ds4-diff replay ${file}`), ''];
        if (shown.length) lines.push(...drawTable(rowTable(shown, res.firstOwnFailure), c), '');
        lines.push(...summaryLines(res).map((l, i) => (i === 0 && res.counts.failed === 0 ? c.green(l) : c.red(l))));
        process.stdout.write(lines.join('\n') + '\n');
      }
      if (res.counts.replayed === 0) {
        const first = res.rows.find((r) => r.status === 'skipped');
        throw new Ds4DiffError(`${file}: nothing could be replayed (${res.counts.rows} rows selected${first ? `; first skipped: ${first.stage} layer ${first.layer} pos ${first.pos}: ${first.reason}` : ''})`, EXIT.cannotEvaluate);
      }
      process.exitCode = res.counts.failed ? EXIT.regression : EXIT.ok;
    });
}
