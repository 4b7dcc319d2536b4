// Reference benchmark: one token through layer 0 + the output head of the real-dims sparse ds4-flash
// preset. Runs in a child process so its peak RSS is the reference's own.
// Targets (issue 3): <= 1.5 s, <= 2 GB peak RSS; reported as ratios, never asserted.
import { openGguf } from '../model/gguf.ts';
import { configFromGguf } from '../model/config.ts';
import { runReference } from '../reference/runner.ts';
import { ModelWeights } from '../reference/weights.ts';
import { fileReadBandwidth, isChildRun, measureInChild, memoryReadBandwidth, type Figures } from './measure.ts';
import { flashLayer0 } from './flash-fixture.ts';

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
  return measureInChild(import.meta.url, await flashLayer0());
}

if (isChildRun(import.meta.url)) {
  process.stdout.write(JSON.stringify(await measure(process.argv[2])) + '\n');
}
