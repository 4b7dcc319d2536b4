// `ds4-diff fixture`: write a synthetic DS4-layout GGUF (model/fixture.ts).
import type { Command } from 'commander';
import fs from 'node:fs';
import { writeFixture, type Preset } from '../../model/fixture.ts';
import { badInput } from '../../model/errors.ts';

function parseSeed(s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n > 0xffffffff) throw badInput(`--seed ${s}: expected an integer 0..4294967295`);
  return n;
}

function parsePopulate(s: string): number[] | 'none' {
  if (s === 'none') return 'none';
  if (!/^\d+(,\d+)*$/.test(s)) throw badInput(`--populate ${s}: expected comma-separated layer numbers (e.g. 0,1) or none`);
  return s.split(',').map(Number);
}

export function register(program: Command): void {
  program
    .command('fixture')
    .description('write a synthetic DS4-layout GGUF: "tiny" (a few MB, deterministic) or "ds4-flash" (real dims, sparse ~81 GB apparent)')
    .requiredOption('--preset <name>', 'tiny | ds4-flash')
    .option('--seed <n>', 'PRNG seed; the same seed gives a byte-identical file', '0')
    .option('--populate <layers>', 'ds4-flash only: comma-separated layers that get weights (plus embedding and head), or none for header and holes only', 'none')
    .requiredOption('--out <file>', 'output .gguf path (written atomically)')
    .addHelpText('after', '\nExamples:\n  ds4-diff fixture --preset tiny --out t.gguf\n  ds4-diff fixture --preset ds4-flash --populate 0,2 --out flash.gguf')
    .action(async (opts: { preset: string; seed: string; populate: string; out: string }) => {
      if (opts.preset !== 'tiny' && opts.preset !== 'ds4-flash') throw badInput(`--preset ${opts.preset}: expected tiny or ds4-flash`);
      if (opts.preset === 'tiny' && opts.populate !== 'none') throw badInput('--populate applies to --preset ds4-flash only');
      const seed = parseSeed(opts.seed);
      await writeFixture({ preset: opts.preset as Preset, seed, out: opts.out, populate: parsePopulate(opts.populate) });
      const size = fs.statSync(opts.out).size;
      process.stdout.write(`wrote ${opts.out} (${opts.preset}, seed ${seed}, ${(size / 2 ** 20).toFixed(1)} MiB apparent)\n`);
    });
}
