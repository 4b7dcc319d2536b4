// Issue 4's end-to-end import check: a directory of ds4-named raw dumps (as a ds4 engine writes them
// under DS4_METAL_GRAPH_DUMP_PREFIX) imported with `-m` and compared against our own reference.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultModelPath } from '../model/default-model.ts';
import { openGguf } from '../model/gguf.ts';
import { configFromGguf } from '../model/config.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { renderChat } from '../model/chat.ts';
import { runReference } from '../reference/runner.ts';
import { stage } from '../model/stages.ts';
import { openCapture } from '../diff/sink.ts';
import type { StageRecord } from '../model/stages.ts';

const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');

describe('ds4 dump import', () => {
  it('imports ds4-named dumps of layer 0 and compares clean against the reference', async () => {
    const path = await defaultModelPath();
    const model = await openGguf(path);
    const cfg = configFromGguf(model);
    const tokens = renderChat(Tokenizer.fromGguf(model), 'Hello').ids;
    const dir = mkdtempSync(join(tmpdir(), 'ds4-imp-'));
    const prefix = join(dir, 'dumps', 'ds4');
    const refDir = join(dir, 'ref');
    spawnSync('mkdir', ['-p', join(dir, 'dumps'), refDir]);
    const ref = await openCapture(refDir, 'reference', { modelFingerprint: model.fingerprint, promptTokens: tokens, producer: { backend: 'reference', version: 'test' } });
    const written: StageRecord[] = [];
    await runReference({
      model, cfg, tokens, lastLayer: 0,
      tap: (rec) => {
        ref.tap(rec);
        // write every stage that has a ds4 graph-dump name, under that name, the way ds4 does
        const graph = stage(rec.stage).aliases.graph?.[0];
        if (!graph || rec.stage === 'raw_cache') return;
        const ext = rec.dtype === 'i32' ? 'i32' : 'bin';
        writeFileSync(`${prefix}_${graph}-${rec.layer}_pos${rec.pos}.${ext}`, Buffer.from(rec.values.buffer, rec.values.byteOffset, rec.values.byteLength));
        written.push(rec);
      },
    });
    await ref.close();
    expect(written.length).toBeGreaterThan(300);
    const out = join(dir, 'ds4.arrow');
    const imp = spawnSync(process.execPath, [CLI, 'import', '--ds4-prefix', prefix, '-m', path, '--tokens', tokens.join(','), '--out', out], { encoding: 'utf8' });
    expect(imp.status, imp.stderr).toBe(0);
    const cmp = spawnSync(process.execPath, [CLI, 'compare', join(refDir, 'reference.arrow'), out, '--json'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    expect(cmp.status, cmp.stderr).toBe(0);
    const report = JSON.parse(cmp.stdout);
    const c = report.comparison ?? report;
    expect(c.counts.compared).toBe(written.length);
    expect(c.counts.failed).toBe(0);
    // every compared row is exact: the bytes went through ds4's naming and back unchanged
    for (const r of c.rows.filter((x: { metrics?: { kind: string } }) => x.metrics?.kind === 'f32')) expect(r.metrics.maxAbs).toBe(0);
  });
});
