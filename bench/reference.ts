// Reference benchmark: one token through layer 0 + the output head of the real-dims sparse ds4-flash
// preset. Runs in a child process so its peak RSS is the reference's own.
// Targets (issue 3): <= 1.5 s, <= 2 GB peak RSS; reported as ratios, never asserted.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openGguf } from '../model/gguf.ts';
import { configFromGguf } from '../model/config.ts';
import { runReference } from '../reference/runner.ts';
import { ModelWeights } from '../reference/weights.ts';
import { fileReadBandwidth, memoryReadBandwidth } from './measure.ts';
import { flashLayer0 } from './flash-fixture.ts';

export type Figures = Record<string, number | string>;

async function measure(path: string): Promise<Figures> {
  const model = await openGguf(path);
  const cfg = configFromGguf(model);
  const weights = new ModelWeights(model, cfg);
  const t0 = performance.now();
  await runReference({ model, cfg, weights, tokens: [1000], lastLayer: 0 });
  const cold = (performance.now() - t0) / 1000;
  const bytes = weights.bytesRead;
  const t1 = performance.now();
  await runReference({ model, cfg, weights, tokens: [1000], lastLayer: 0 });
  const warm = (performance.now() - t1) / 1000;
  const out = model.tensors.get('output.weight')!;
  const fileBw = fileReadBandwidth(path, out.offset, Math.min(out.nbytes, 512 << 20));
  const memBw = memoryReadBandwidth();
  const rss = process.resourceUsage().maxRSS * 1024;
  return {
    'reference.layer0_head.cold_s': cold,
    'reference.layer0_head.warm_s': warm,
    'reference.layer0_head.target_s': 1.5,
    'reference.layer0_head.cold_vs_target': cold / 1.5,
    'reference.weight_bytes': bytes,
    'reference.weight_bytes_per_s_cold': bytes / cold,
    'reference.weight_bytes_per_s_warm': bytes / warm,
    'machine.file_read_bytes_per_s': fileBw,
    'machine.memory_read_bytes_per_s': memBw,
    'reference.warm_vs_memory_bandwidth': bytes / warm / memBw,
    'reference.cold_vs_file_bandwidth': bytes / cold / fileBw,
    'reference.peak_rss_bytes': rss,
    'reference.peak_rss_vs_2GB': rss / 2e9,
  };
}

export async function benchReference(): Promise<Figures> {
  const path = await flashLayer0();
  const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), path], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (child.status !== 0) throw new Error(`reference benchmark failed: ${child.stderr.trim().split('\n').pop()}`);
  return JSON.parse(child.stdout) as Figures;
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2]) {
  process.stdout.write(JSON.stringify(await measure(process.argv[2])) + '\n');
}
