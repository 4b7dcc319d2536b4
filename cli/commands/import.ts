// `ds4-diff import --ds4-prefix PREFIX [-m MODEL] --out FILE.arrow`: ds4 engine graph dumps
// (DS4_METAL_GRAPH_DUMP_PREFIX) to our Arrow format, so `compare` can put them against our reference.
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { importDs4Dumps } from '../../diff/import.ts';
import { configFromGguf } from '../../model/config.ts';
import { openGguf } from '../../model/gguf.ts';
import { badInput } from '../../model/errors.ts';

const VERSION = (JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function tokenList(v: string): number[] {
  const t = v.split(',').map((s) => Number(s.trim()));
  if (t.some((x) => !Number.isInteger(x) || x < 0)) throw badInput(`--tokens must be comma-separated token ids, got '${v}'`);
  return t;
}

export function register(program: Command): void {
  program
    .command('import')
    .description('convert ds4 graph dumps (<prefix>_<name>-<layer>_pos<pos>.bin/.i32) to an Arrow dump')
    .requiredOption('--ds4-prefix <prefix>', 'the DS4_METAL_GRAPH_DUMP_PREFIX the ds4 run used')
    .requiredOption('--out <file>', 'Arrow dump to write')
    .option('-m, --model <gguf>', 'the GGUF the ds4 run used: checks every file against its stage shape')
    .option('--tokens <ids>', 'prompt token ids (comma-separated), stored in the dump')
    .action(async (opts: { ds4Prefix: string; out: string; model?: string; tokens?: string }) => {
      const model = opts.model ? await openGguf(opts.model) : undefined;
      try {
        const s = await importDs4Dumps(opts.ds4Prefix, {
          out: opts.out,
          cfg: model ? configFromGguf(model) : undefined,
          modelFingerprint: model?.fingerprint,
          promptTokens: opts.tokens ? tokenList(opts.tokens) : undefined,
          version: VERSION,
        });
        process.stdout.write(`wrote ${opts.out}: ${s.records} records from ${s.files} files${s.unknown.length ? ` (${s.unknown.length} unknown stage names kept as is)` : ''}\n`);
      } finally {
        model?.close();
      }
    });
}
