// `ds4-diff replay DUMP.arrow`: recompute every dumped stage from that dump's own inputs with the
// reference and report each stage's own error (diff/replay.ts). Exit 0 when every replayed row is
// within tolerance, 1 on an own-error failure, 3 on bad input (unreadable dump, wrong model, a filter
// that selects no record), 125 when nothing selected could be replayed.
import type { Command } from 'commander';
import { deviceBounds, kernelMathOf } from '../../ascend/budgets.ts';
import type { CompareRow } from '../../diff/compare.ts';
import { readDumpMeta } from '../../diff/dump.ts';
import { judgedText, makeJudge } from '../../diff/gate.ts';
import { stringifyJson } from '../../diff/json.ts';
import { loadPolicy } from '../../diff/policy.ts';
import { replayDump, type ReplayResult } from '../../diff/replay.ts';
import { checkDumpRunComplete } from '../../diff/rundir.ts';
import { Ds4DiffError, EXIT, badInput } from '../../model/errors.ts';
import { recordKey } from '../../model/stages.ts';
import { parseIntList, trackedFilter } from '../../reference/capture.ts';
import { colors, drawTable } from '../../reports/terminal.ts';
import { fmt, metricCells, type Table } from '../../reports/view.ts';
import { loadModel, progress } from '../common.ts';

interface ReplayCliOptions {
  model?: string;
  policy?: string;
  kernelMath?: string;
  stages?: string;
  layers?: string;
  pos?: string;
  failures?: boolean;
  json?: boolean;
}

/** One line per dumped row: its own error against its budget, or why it could not be replayed. */
function rowTable(res: ReplayResult, failuresOnly: boolean): Table {
  const judged = new Map(res.comparison.rows.map((r) => [recordKey(r), r]));
  const first = res.firstOwnFailure;
  const rows: Table['rows'] = [];
  for (const r of res.rows) {
    const j: CompareRow | undefined = judged.get(recordKey(r));
    const fail = j?.own?.status === 'fail';
    if (failuresOnly && !fail && r.status !== 'skipped') continue;
    const [maxAbs, , relRms] = metricCells(j?.own?.metrics);
    const budget = j?.own?.budget;
    const status = r.status === 'skipped' ? `skipped: ${r.reason}` : fail ? `FAIL ${judgedText(j!.own)}` : 'pass';
    rows.push({
      cells: [r.stage, String(r.layer), String(r.pos), maxAbs, relRms, budget === undefined ? '-' : fmt(budget), status, r.derived ? r.derived.map((d) => d.split(' ')[0]).join(',') : ''],
      fail, first: !!first && recordKey(r) === recordKey(first),
    });
  }
  return { columns: ['stage', 'layer', 'pos', 'own maxAbs', 'own relRms', 'budget', 'status', 'derived inputs'], rows };
}

function summaryLines(res: ReplayResult): string[] {
  const { counts: c, firstOwnFailure: f } = res;
  const lines = [`replayed ${c.replayed} stages: ${c.passed} within their own budget, ${c.failed} own-error failures, ${c.skipped} skipped${c.derived ? `; ${c.derived} read inputs the dump does not hold, derived by the reference` : ''}`];
  if (f) lines.push(`first own failure: ${f.stage} layer ${f.layer} pos ${f.pos}: ${judgedText(f.own)}`);
  return lines;
}

export function register(program: Command): void {
  program
    .command('replay')
    .description("recompute each dumped stage from the dump's own inputs with the reference: every stage's own error")
    .argument('<dump>', 'Arrow dump (.arrow): ours, an imported ds4 dump, anyone\'s')
    .option('-m, --model <gguf>', 'the DS4 GGUF the dump was made with (default: the bundled tiny synthetic model)')
    .option('--policy <file>', 'your bounds on chosen rows, on top of the arithmetic budgets')
    .option('--kernel-math <m>', 'the device math the dump\'s producer used: ascend or exact (default: the dump\'s, else ascend for an ascend backend, exact otherwise)')
    .option('--stages <globs>', 'replay only these stages (globs over canonical names and ds4 aliases, comma-separated)')
    .option('--layers <list>', 'replay only these layers ("0,2,5:7"); the embedding and head are kept')
    .option('--pos <list>', 'replay only these positions ("0", "3:5")')
    .option('--failures', 'list only failed and skipped rows (the summary still counts all)')
    .option('--json', 'print {file, rows, comparison, counts, firstOwnFailure} as JSON')
    .addHelpText('after', '\nExamples:\n  ds4-diff replay runs/r1/device.arrow\n  ds4-diff replay imported.arrow -m ds4flash.gguf --layers 0:3 --failures')
    .action(async (file: string, opts: ReplayCliOptions) => {
      const filter = trackedFilter({
        stages: opts.stages?.split(',').map((s) => s.trim()).filter(Boolean),
        layers: parseIntList(opts.layers, '--layers'),
        pos: parseIntList(opts.pos, '--pos'),
      }, '--layers', '--pos');
      const km = opts.kernelMath;
      if (km !== undefined && km !== 'ascend' && km !== 'exact') throw badInput(`--kernel-math must be ascend or exact, not '${km}'`);
      checkDumpRunComplete(file);
      const producer = (await readDumpMeta(file)).producer;
      const math = kernelMathOf({ kernelMath: km ?? (producer?.kernelMath as string | undefined), backend: String(producer?.backend ?? '') });
      const judge = makeJudge({ deviceBound: deviceBounds(math), policy: opts.policy ? loadPolicy(opts.policy) : undefined });
      const { model, cfg } = await loadModel(opts.model);
      const prog = progress('replay');
      let res: ReplayResult;
      try {
        res = await replayDump(file, { model, cfg, judge, approx: math === 'ascend', filter: filter.keep, onProgress: prog.tick });
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
        const { records: _, ...rest } = res;
        process.stdout.write(stringifyJson({ ...rest, kernelMath: math, sources: judge.sources }));
      } else {
        const c = colors();
        const table = rowTable(res, !!opts.failures);
        const lines = [c.bold(`ds4-diff replay ${file} (own errors judged under ${math} kernel math)`), ''];
        if (table.rows.length) lines.push(...drawTable(table, c), '');
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
