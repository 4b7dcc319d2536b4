// `ds4-diff baseline record RUN_DIR --out FILE` and `ds4-diff baseline diff OLD NEW`.
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { diffBaselines, formatBaselineDiff, loadBaseline, recordBaseline } from '../../diff/baseline.ts';
import { stringifyJson } from '../../diff/json.ts';
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
    .description('record the per-stage metrics of a run as a baseline')
    .argument('<run-dir>', 'run directory (manifest.json + dumps)')
    .requiredOption('--out <file>', 'baseline JSON to write')
    .option('--growth <factor>', 'allowed growth over the recorded values', positive('growth'), 2)
    .option('--cap <maxAbs>', 'absolute cap on the allowed max_abs of any stage', positive('cap'))
    .option('--accept-fallbacks <days>', "accept the run's host fallbacks for this many days (default: none accepted)", positive('accept-fallbacks'))
    .action(async (runDir: string, opts: { out: string; growth: number; cap?: number; acceptFallbacks?: number }) => {
      const b = await recordBaseline(runDir, { growth: opts.growth, cap: opts.cap, acceptFallbackDays: opts.acceptFallbacks });
      const tmp = `${opts.out}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, stringifyJson(b));
      fs.renameSync(tmp, opts.out);
      process.stdout.write(`wrote ${opts.out}: ${b.entries.length} (stage, layer) entries, growth x${b.growth.factor}, ${b.fallbacks.length} accepted fallback(s)\n`);
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
