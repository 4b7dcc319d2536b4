// `ds4-diff kernels`: the simulated device's kernels with their signatures (kernels/*.cpp, the one
// declaration each: scalars, buffers, stages, budgets), and `--test`, the kernel suite
// (ascend/kernel-suite.ts): every kernel × shapes × kernel maths against its host twin, judged by the
// kernel's declared NMSE budget, one line per case; exit 1 if any case fails. Without the addon, says why (exit 3).
import type { Command } from 'commander';
import { budgetTable } from '../../ascend/budgets.ts';
import { kernelFaults } from '../../ascend/faults.ts';
import { runKernelSuite, SUITE } from '../../ascend/kernel-suite.ts';
import { KernelCatalog } from '../../ascend/kernels.ts';
import { loadNative } from '../../ascend/native.ts';
import { EXIT, badInput } from '../../model/errors.ts';

interface KernelsOptions {
  json?: boolean;
  budgets?: boolean;
  test?: boolean;
  kernel?: string;
  math?: string;
}

export function register(program: Command): void {
  program
    .command('kernels')
    .description('list the device kernels of the simulated Ascend device (signature, stages, budgets); --test runs the kernel suite')
    .option('--json', 'print as JSON')
    .option('--budgets', 'print the declared budgets as the judge reads them (kernels/budgets.json)')
    .option('--test', 'run the kernel suite: each kernel × shapes × kernel maths against its host twin, judged by its NMSE budget')
    .option('--kernel <name>', 'only this kernel (listing and suite)')
    .option('--math <mode>', 'suite: only this kernel math (ascend | exact)')
    .addHelpText('after', '\nExamples:\n  ds4-diff kernels\n  ds4-diff kernels --json\n  ds4-diff kernels --test\n  ds4-diff kernels --test --kernel rope_tail --math ascend')
    .action((opts: KernelsOptions) => {
      const load = loadNative();
      if (!load.ok) throw badInput(load.reason);
      const catalog = new KernelCatalog(load.addon);
      if (opts.kernel && !catalog.kernels.has(opts.kernel)) throw badInput(`--kernel ${opts.kernel}: no such kernel (see ds4-diff kernels)`);
      if (opts.math !== undefined && opts.math !== 'ascend' && opts.math !== 'exact') throw badInput(`--math must be ascend or exact, not '${opts.math}'`);
      if (opts.budgets) {
        process.stdout.write(JSON.stringify(budgetTable(catalog), null, 1) + '\n');
        return;
      }
      if (opts.test) {
        const results = runKernelSuite(load.dev, catalog, { kernel: opts.kernel, math: opts.math as 'ascend' | 'exact' | undefined, onLine: opts.json ? undefined : (l) => process.stdout.write(l + '\n') });
        const failed = results.filter((r) => !r.ok);
        const kernels = new Set(results.map((r) => r.kernel)).size;
        if (opts.json) process.stdout.write(JSON.stringify({ cases: results.map(({ line: _, ...r }) => r), failed: failed.length }, null, 1) + '\n');
        else process.stdout.write(`${results.length - failed.length}/${results.length} cases OK (${kernels} kernels, ${SUITE.filter((c) => !opts.kernel || c.kernel === opts.kernel).length} shapes)${failed.length ? `; FAILED: ${[...new Set(failed.map((r) => r.kernel))].join(', ')}` : ''}\n`);
        process.exitCode = failed.length ? EXIT.regression : EXIT.ok;
        return;
      }
      const kernels = [...catalog.kernels.values()].filter((k) => !opts.kernel || k.name === opts.kernel).sort((a, b) => a.name.localeCompare(b.name));
      if (opts.json) {
        process.stdout.write(JSON.stringify({ kernels: kernels.map((k) => ({ ...k, faults: kernelFaults(k) })) }, null, 1) + '\n');
        return;
      }
      const lines: string[] = [];
      for (const k of kernels) {
        lines.push(`${k.name}(${k.scalars.join(', ')})  ${k.doc}`);
        for (const b of k.buffers) {
          const at = [b.offset !== '0' ? `@ ${b.offset}` : '', b.ring ? `ring(${b.ring})` : '', b.mat ? `mat(${b.mat.join(', ')})` : '', b.quant ?? '', b.experts ? 'experts' : ''].filter(Boolean).join(' ');
          lines.push(`    ${b.role.padEnd(6)} ${b.name} ${b.dtype}[${b.count}]${at ? ' ' + at : ''}`);
        }
        lines.push(`    stages ${k.stages.join(',') || '-'}; approx ${k.approx.join(' ') || '-'}; max NMSE ascend ${k.budget.ascend.toExponential(2)}, exact ${k.budget.exact.toExponential(2)}${k.budget.perPos ? ` (relative error + ${k.budget.perPos.toExponential(2)} per position)` : ''}; faults ${kernelFaults(k).join(' ') || '-'}`);
      }
      lines.push(`${kernels.length} kernels`);
      process.stdout.write(lines.join('\n') + '\n');
    });
}
