// `ds4-diff kernels`: the simulated device's registered kernels, each with its signature/doc and the
// registry stages it produces (issue 5). Without the addon, says why (exit 3).
import type { Command } from 'commander';
import { loadNative } from '../../ascend/native.ts';
import { badInput } from '../../model/errors.ts';

export function register(program: Command): void {
  program
    .command('kernels')
    .description('list the device kernels of the simulated Ascend device: name, arguments, stages produced')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExamples:\n  ds4-diff kernels\n  ds4-diff kernels --json')
    .action((opts: { json?: boolean }) => {
      const load = loadNative();
      if (!load.ok) throw badInput(load.reason);
      const kernels = load.dev.kernels().slice().sort((a, b) => a.name.localeCompare(b.name));
      if (opts.json) {
        process.stdout.write(JSON.stringify({ kernels }, null, 1) + '\n');
        return;
      }
      const lines: string[] = [];
      for (const k of kernels) {
        lines.push(`${k.name.padEnd(34)} ${k.stages.length ? k.stages.join(',') : '-'}`);
        lines.push(`${''.padEnd(34)} ${k.doc}`);
      }
      lines.push(`${kernels.length} kernels`);
      process.stdout.write(lines.join('\n') + '\n');
    });
}
