// `ds4-diff import --ds4-prefix PREFIX [-m MODEL] --out FILE.arrow`: ds4 engine graph dumps
// (DS4_METAL_GRAPH_DUMP_PREFIX) to our Arrow format, so `compare` can put them against our reference.
// A file that cannot be imported is named on stderr and left out; the rest is written, and the exit is
// 3 (bad input) whenever any file was rejected.
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { checkEvaluatedTokens, evaluatedTokens, importDs4Dumps, lastDumpedPos } from '../../diff/import.ts';
import { ModelWeights } from '../../reference/weights.ts';
import { badInput } from '../../model/errors.ts';
import { loadModel, parseTokenIds } from '../common.ts';

const VERSION = (JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export function register(program: Command): void {
  program
    .command('import')
    .description('convert ds4 graph dumps (<prefix>_<name>-<layer>_pos<pos>.bin/.i32) to an Arrow dump')
    .requiredOption('--ds4-prefix <prefix>', 'the DS4_METAL_GRAPH_DUMP_PREFIX the ds4 run used')
    .requiredOption('--out <file>', 'Arrow dump to write')
    .option('-m, --model <gguf>', 'the GGUF the ds4 run used: checks every file against its stage shape')
    .option('--tokens <ids>', 'the token ids the run evaluated (comma-separated): the prompt, then the generated tokens it fed back; with -m, tokens past these are recovered from the layer-0 dumps')
    .action(async (opts: { ds4Prefix: string; out: string; model?: string; tokens?: string }) => {
      const loaded = opts.model ? await loadModel(opts.model) : undefined;
      const rejected: string[] = [];
      try {
        let tokens = opts.tokens ? parseTokenIds(opts.tokens, loaded?.cfg.nVocab) : undefined;
        if (loaded) {
          // the head's file holds the last head ds4 evaluated: every evaluated token is needed to place it
          const given = tokens ?? [];
          const weights = new ModelWeights(loaded.model, loaded.cfg);
          checkEvaluatedTokens(opts.ds4Prefix, (id) => weights.embeddingRow(id), loaded.cfg, given);
          const r = evaluatedTokens(opts.ds4Prefix, (id) => weights.embeddingRow(id), loaded.cfg, given, Math.max(given.length - 1, lastDumpedPos(opts.ds4Prefix)));
          if (r.recovered.length) process.stderr.write(`ds4-diff: tokens at positions ${r.recovered[0].pos}..${r.recovered.at(-1)!.pos} recovered from the layer-0 dumps: ${r.recovered.map((t) => t.id).join(',')}\n`);
          tokens = r.tokens;
        }
        const s = await importDs4Dumps(opts.ds4Prefix, {
          out: opts.out,
          cfg: loaded?.cfg,
          modelFingerprint: loaded?.model.fingerprint,
          promptTokens: tokens,
          version: VERSION,
          // one bad file is named and left out; the rest imports
          onReject: (f, reason) => {
            rejected.push(f.file);
            process.stderr.write(`ds4-diff: rejected dump ${f.file}: ${reason}\n`);
          },
        });
        if (s.files) process.stdout.write(`wrote ${opts.out}: ${s.records} records from ${s.files} files${s.unknown.length ? ` (${s.unknown.length} unknown stage names kept as is)` : ''}\n`);
        if (rejected.length) {
          throw badInput(s.files
            ? `${rejected.length} of ${rejected.length + s.files} dump files rejected (named above); ${opts.out} holds the other ${s.files}`
            : `every dump file was rejected (${rejected.length}, named above); nothing written${loaded ? ` (is ${opts.model} the GGUF the ds4 run used?)` : ''}`);
        }
      } finally {
        loaded?.model.close();
      }
    });
}
