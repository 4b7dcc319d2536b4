// `ds4-diff stages`: print the stage registry — the names every dump, kernel and report share.
import type { Command } from 'commander';
import { STAGES } from '../../model/stages.ts';
import type { Ds4Config } from '../../model/config.ts';
import { loadModel } from '../common.ts';

export function register(program: Command): void {
  program
    .command('stages')
    .description('list every stage of the DS4 forward pass: canonical name, ds4 aliases, shape, dtype, inputs, decision, kernel')
    .option('-m, --model <gguf>', 'evaluate shapes with this model\'s config (default: the bundled tiny model)')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExamples:\n  ds4-diff stages\n  ds4-diff stages -m flash.gguf --json')
    .action(async (opts: { model?: string; json?: boolean }) => {
      const { modelPath: path, model, cfg: config } = await loadModel(opts.model);
      model.close();
      const cfg: Ds4Config = config;
      // layer 2 is a ratio-4 layer in every DS4 layout, so its compressor width is the two-lane one
      const rows = STAGES.map((s) => ({
        name: s.name,
        scope: s.scope,
        when: s.when,
        aliases: s.aliases,
        shape: s.shape(cfg, { layer: 2 }),
        dtype: s.dtype,
        inputs: s.inputs,
        kernel: s.kernel,
        decision: s.decision,
        source: s.source,
      }));
      if (opts.json) {
        process.stdout.write(JSON.stringify({ model: path, stages: rows }, null, 1) + '\n');
        return;
      }
      const lines = [`${'stage'.padEnd(18)} ${'scope'.padEnd(6)} ${'when'.padEnd(12)} ${'shape'.padEnd(12)} ${'dtype'.padEnd(5)} ${'kernel'.padEnd(24)} aliases`];
      for (const r of rows) {
        const al = Object.entries(r.aliases).map(([k, v]) => `${k}:${(v ?? []).join('|')}`).join(' ');
        lines.push(`${r.name.padEnd(18)} ${r.scope.padEnd(6)} ${r.when.padEnd(12)} ${r.shape.join('x').padEnd(12)} ${r.dtype.padEnd(5)} ${r.kernel.padEnd(24)} ${al}`);
      }
      process.stdout.write(lines.join('\n') + '\n');
    });
}
