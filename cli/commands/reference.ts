// `ds4-diff reference -p TEXT`: run the pure-TS reference, print a per-stage summary and the top-5
// next tokens, and write the captures as a run directory (manifest + reference.arrow).
import type { Command } from 'commander';
import type { RunDir } from '../../diff/rundir.ts';
import { accumulateStats, type StageStats } from '../../diff/summary.ts';
import { EXIT, badInput } from '../../model/errors.ts';
import { Tokenizer } from '../../model/tokenizer.ts';
import { filterReach, parseFilter } from '../../reference/capture.ts';
import { STAGES } from '../../model/stages.ts';
import { runReference } from '../../reference/runner.ts';
import type { Precision } from '../../reference/types.ts';
import { addModelPromptOptions, loadModelAndPrompt, newManifest, progress, type ModelPromptOptions } from '../common.ts';
import { VERSION } from '../version.ts';

interface ReferenceOptions extends ModelPromptOptions {
  stages?: string;
  captureLayers?: string;
  pos?: string;
  precision: string;
  mode: string;
  out?: string;
  force?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  addModelPromptOptions(program.command('reference').description('run the pure-TypeScript DS4 reference and capture every stage'))
    .option('--stages <globs>', 'capture only these stages (globs over canonical names and ds4 aliases, comma-separated)')
    .option('--capture-layers <list>', 'capture only these layers ("0,2,5:7"); the embedding and head are always kept')
    .option('--pos <list>', 'capture only these positions ("0", "3:5")')
    .option('--precision <p>', 'ds4 (the CPU path\'s arithmetic and quantization points), f64 (the same quantization, every other result in double: the rounding-noise twin) or ascend (ds4 with the Ascend kernels\' exp/rsqrt/sqrt/log: the approximation twin)', 'ds4')
    .option('--mode <m>', 'prefill (layer-major, like ds4) or decode (token by token); captures are identical', 'prefill')
    .option('--out <dir>', 'run directory for manifest.json and the dump (default: no files); new or empty, or an old run directory with --force')
    .option('--force', 'replace the run directory --out names if it holds an earlier run (a directory that holds no run is never cleared)')
    .option('--json', 'print the summary as JSON')
    .addHelpText('after', '\nExamples:\n  ds4-diff reference -p Hello --layers all --out runs/ref\n  ds4-diff reference -p Hello --layer 0 --stages "q_*,kv_*" --precision f64')
    .action(async (opts: ReferenceOptions) => {
      if (opts.precision !== 'ds4' && opts.precision !== 'f64' && opts.precision !== 'ascend') throw badInput(`--precision must be ds4, f64 or ascend, not '${opts.precision}'`);
      if (opts.mode !== 'prefill' && opts.mode !== 'decode') throw badInput(`--mode must be prefill or decode, not '${opts.mode}'`);
      const run = await loadModelAndPrompt(opts);
      const filter = parseFilter({ stages: opts.stages, layers: opts.captureLayers, pos: opts.pos });
      // a filter part that selects nothing is named; a filter that selects nothing at all is refused
      const reach = filterReach(filter, run.cfg, run.lastLayer, run.tokens.length);
      if (reach.nothing) throw badInput(`nothing would be captured: ${reach.unmatched.length ? reach.unmatched.join('; ') : 'no stage the run emits passes --stages, --capture-layers and --pos together'}`);
      for (const u of reach.unmatched) process.stderr.write(`ds4-diff: warning: ${u}\n`);
      const precision = opts.precision as Precision;
      const side = precision === 'ds4' ? 'reference' : `reference-${precision}`;
      const body = async (rd?: RunDir): Promise<void> => {
        // the Arrow writer is loaded only when there is a dump to write
        const sink = rd ? await (await import('../../diff/sink.ts')).openCapture(rd.dir, side, { modelFingerprint: run.model.fingerprint, promptTokens: run.tokens, producer: { backend: 'reference', precision, options: { mode: opts.mode }, version: VERSION } }) : undefined;
        const stats = new Map<string, StageStats>();
        const prog = progress('reference');
        const result = await runReference({
          model: run.model,
          cfg: run.cfg,
          tokens: run.tokens,
          lastLayer: run.lastLayer,
          precision,
          filter,
          mode: opts.mode as 'prefill' | 'decode',
          onProgress: prog.tick,
          tap: (rec) => {
            if (sink) sink.tap(rec);
            accumulateStats(stats, rec);
          },
        });
        prog.done();
        if (sink && rd) {
          await sink.close();
          rd.manifest.files[side] = sink.file;
        }
        const rows = STAGES.filter((s) => stats.has(s.name)).map((s) => {
          const st = stats.get(s.name)!;
          return { stage: s.name, records: st.records, min: st.min, max: st.max, rms: Math.sqrt(st.sumSq / Math.max(1, st.values)), nonFinite: st.nonFinite };
        });
        // the five pieces alone: a --tokens run never decodes the vocabulary
        const top = result.top.map((t) => ({ ...t, piece: Tokenizer.pieceIn(run.model, t.id) }));
        const bad = rows.reduce((a, r) => a + r.nonFinite, 0);
        if (opts.json) {
          process.stdout.write(JSON.stringify({ tokens: run.tokens, lastLayer: run.lastLayer, precision, stages: rows, top, out: rd?.dir ?? null }, null, 1) + '\n');
        } else {
          const g = (v: number) => (Number.isFinite(v) ? v.toExponential(3) : String(v));
          const lines = [`${run.tokens.length} tokens, layers 0..${run.lastLayer} + head, precision ${precision}`, ''];
          lines.push(`${'stage'.padEnd(18)} ${'records'.padStart(7)} ${'min'.padStart(11)} ${'max'.padStart(11)} ${'rms'.padStart(11)} ${'NaN/Inf'.padStart(7)}`);
          for (const r of rows) lines.push(`${r.stage.padEnd(18)} ${String(r.records).padStart(7)} ${g(r.min).padStart(11)} ${g(r.max).padStart(11)} ${g(r.rms).padStart(11)} ${String(r.nonFinite).padStart(7)}`);
          lines.push('', 'top-5 next tokens:');
          for (const t of top) lines.push(`  ${String(t.id).padStart(7)}  ${t.logit.toFixed(5).padStart(10)}  ${JSON.stringify(t.piece)}`);
          if (rd) lines.push('', `captures: ${rd.dir}/${side}.arrow`);
          process.stdout.write(lines.join('\n') + '\n');
        }
        // the manifest says complete last, with the exit code the command ends with
        rd?.finish(bad ? EXIT.badInput : EXIT.ok);
        if (bad) throw badInput(`reference produced ${bad} non-finite values (see the NaN/Inf column)`);
      };
      // the manifest (the model's fingerprint, the tokens' pieces) only when there is a run directory to hold it
      if (opts.out) {
        const manifest = newManifest(run, 'reference', { precision, mode: opts.mode, stages: opts.stages, pos: opts.pos });
        await (await import('../../diff/rundir.ts')).withRunDir({ out: opts.out, force: opts.force, manifest }, body);
      } else {
        await body();
      }
    });
}
