// `ds4-diff baseline record RUN_DIR --out FILE` and `ds4-diff baseline diff OLD NEW`.
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { runDeviceBounds } from '../../ascend/budgets.ts';
import { diffBaselines, formatBaselineDiff, loadBaseline, recordBaseline } from '../../diff/baseline.ts';
import { makeJudge } from '../../diff/gate.ts';
import { stringifyJson } from '../../diff/json.ts';
import { readManifest } from '../../diff/manifest.ts';
import { writeFileAtomic } from '../../model/atomic-write.ts';
import { badInput } from '../../model/errors.ts';

function positive(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!(n > 0)) throw badInput(`--${name} must be a positive number, got '${v}'`);
    return n;
  };
}

export function register(program: Command): void {
  const cmd = program.command('baseline').description('record a baseline from a run, or review a baseline change');
  cmd
    .command('record')
    .description('record a passing run as a baseline: its worst own error per (stage, layer) and its end result; a run that fails its budgets is refused')
    .argument('<run-dir>', 'run directory (manifest.json + dumps)')
    .requiredOption('--out <file>', 'baseline JSON to write')
    .option('--growth <factor>', 'allowed growth of a recorded error (× relative RMS and Δp, ×² KL); at least 1', positive('growth'), 2)
    .option('--accept-fallbacks <days>', "accept the run's host fallbacks for this many days (default: none accepted)", positive('accept-fallbacks'))
    .action(async (runDir: string, opts: { out: string; growth: number; acceptFallbacks?: number }) => {
      if (opts.growth < 1) throw badInput(`--growth ${opts.growth}: a baseline can only tighten, so growth is at least 1`);
      const judge = makeJudge({ deviceBound: runDeviceBounds(readManifest(runDir)) });
      const b = await recordBaseline(runDir, judge, { growth: opts.growth, acceptFallbackDays: opts.acceptFallbacks });
      writeFileAtomic(opts.out, 'write the baseline', (fd) => fs.writeFileSync(fd, stringifyJson(b)));
      process.stdout.write(`wrote ${opts.out}: ${b.own.length} own-error envelopes, ${b.inherited.length} free-running envelopes, end result ${b.endToEnd ? `KL ${b.endToEnd.kl} Δp ${b.endToEnd.deltaP}` : 'none'}, growth ×${b.growth}, ${b.fallbacks.length} accepted fallback(s)\n`);
    });
  cmd
    .command('diff')
    .description('show what changes from OLD to NEW (review before committing a baseline)')
    .argument('<old>', 'old baseline JSON')
    .argument('<new>', 'new baseline JSON')
    .action((oldFile: string, newFile: string) => {
      process.stdout.write(formatBaselineDiff(diffBaselines(loadBaseline(oldFile), loadBaseline(newFile))));
    });
}
