// Capture benchmark: the bytes a run writes per token per layer at real dims, every row in full vs the
// statistics capture (diff/plan.ts, without the region its second pass adds), summed over the five sides of a
// run. Measured on the dumps of one `run --layer 0 -p Hello --capture full` of the sparse ds4-flash preset with
// layer 0 populated: its layer rows are written again both ways by the dump writer itself.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DumpWriter, iterateDump, readDumpMeta } from '../diff/dump.ts';
import { readManifest } from '../diff/manifest.ts';
import { capturePlan } from '../diff/plan.ts';
import { statsCaptureRecord } from '../diff/stats.ts';
import { configFromGguf } from '../model/config.ts';
import { openGguf } from '../model/gguf.ts';
import { resolveStage } from '../model/stages.ts';
import { flashLayer0 } from './flash-fixture.ts';
import type { Figures } from './measure.ts';

const CLI = fileURLToPath(new URL('../cli/ds4-diff.js', import.meta.url));

/** One side's layer rows written again, in full and as a statistics capture: the two files' sizes. */
async function sideBytes(file: string, plan: ReturnType<typeof capturePlan>, dir: string): Promise<{ full: number; stats: number }> {
  const meta = await readDumpMeta(file);
  const full = await DumpWriter.open(join(dir, 'full.arrow'), meta);
  const stats = await DumpWriter.open(join(dir, 'stats.arrow'), { ...meta, capture: plan.meta });
  for await (const r of iterateDump(file)) {
    if (resolveStage(r.stage)?.scope !== 'layer') continue;
    full.write(r);
    stats.write(plan.full(r.stage, r.layer, r.pos) ? r : statsCaptureRecord(meta.side, r));
  }
  await full.close();
  await stats.close();
  return { full: statSync(join(dir, 'full.arrow')).size, stats: statSync(join(dir, 'stats.arrow')).size };
}

export async function benchCapture(): Promise<Figures> {
  const model = await flashLayer0();
  const dir = mkdtempSync(join(tmpdir(), 'ds4-bench-capture-'));
  try {
    const run = join(dir, 'run');
    const r = spawnSync(process.execPath, [CLI, 'run', '--layer', '0', '-p', 'Hello', '-m', model, '--capture', 'full', '--no-baseline', '--out', run], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`capture bench: run exited ${r.status}: ${r.stderr.trim().split('\n').pop()}`);
    const m = readManifest(run);
    const plan = capturePlan('stats', configFromGguf(await openGguf(model)), []);
    let full = 0, stats = 0;
    for (const file of Object.values(m.files)) {
      const b = await sideBytes(join(run, file), plan, dir);
      full += b.full;
      stats += b.stats;
    }
    const perTokenLayer = m.promptTokens.length * (m.layers.last + 1);
    return {
      'capture.tokens': m.promptTokens.length,
      'capture.full_bytes_per_token_layer': full / perTokenLayer,
      'capture.stats_bytes_per_token_layer': stats / perTokenLayer,
      'capture.stats_vs_full': stats / full,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
