// The reference graph end to end on the bundled tiny fixture (6 layers: raw, raw, ratio-4 + indexer,
// ratio-128, ratio-4, ratio-128; hash routing on 0..2): every layer kind, prefill vs decode, precision.
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture } from '../model/fixture.ts';
import { openGguf, type GgufModel } from '../model/gguf.ts';
import { configFromGguf, layerKind, type Ds4Config } from '../model/config.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { renderChat } from '../model/chat.ts';
import { runReference } from '../reference/runner.ts';
import { STAGES, stageInLayer } from '../model/stages.ts';
import type { StageRecord } from '../model/stages.ts';
import { openCapture } from '../diff/sink.ts';

let model: GgufModel;
let cfg: Ds4Config;
let tokens: number[];

const key = (r: StageRecord) => `${r.stage}/${r.layer}/${r.pos}`;

async function capture(opts: Partial<Parameters<typeof runReference>[0]> = {}): Promise<Map<string, StageRecord>> {
  const recs = new Map<string, StageRecord>();
  await runReference({ model, cfg, tokens, tap: (r) => recs.set(key(r), r), ...opts });
  return recs;
}

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ds4-ref-'));
  const path = join(dir, 'tiny.gguf');
  await writeFixture({ preset: 'tiny', seed: 0, out: path });
  model = await openGguf(path);
  cfg = configFromGguf(model);
  // ~12+ tokens: slides the raw window and makes the ratio-4 compressor emit enough rows for the indexer to select
  tokens = renderChat(Tokenizer.fromGguf(model), 'The quick brown fox jumps over the lazy dog again and again').ids;
});

describe('reference graph on the tiny fixture', () => {
  it('the fixture really exercises every layer kind, the sliding window and indexer selection', () => {
    expect(new Set(cfg.compressRatios.map((_, il) => layerKind(cfg, il)))).toEqual(new Set(['raw', 'ratio4', 'ratio128']));
    expect(tokens.length).toBeGreaterThan(cfg.slidingWindow);
    expect(Math.floor(tokens.length / 4)).toBeGreaterThan(cfg.indexerTopK);
  });

  it('captures every registry stage of every layer, all finite', async () => {
    const recs = await capture();
    const seen = new Map<string, Set<number>>();
    const nonFinite = [...recs.values()].filter((r) => r.values.some((v) => !Number.isFinite(v))).map(key);
    expect(nonFinite).toEqual([]);
    for (const r of recs.values()) {
      if (!seen.has(r.stage)) seen.set(r.stage, new Set());
      seen.get(r.stage)!.add(r.layer);
    }
    for (const s of STAGES) {
      if (s.scope !== 'layer') {
        expect(seen.has(s.name), `${s.name} captured`).toBe(true);
        continue;
      }
      for (let il = 0; il < cfg.nLayer; il++) {
        // emission-only stages of ratio-128 layers need 128 tokens; everything else must be there
        const expected = stageInLayer(s, layerKind(cfg, il)) && !(s.when === 'emit' && layerKind(cfg, il) === 'ratio128');
        expect(seen.get(s.name)?.has(il) ?? false, `${s.name} layer ${il}`).toBe(expected);
      }
    }
    // ratio-4 compressor emits at pos 3, 7, 11, ... (when (pos + 1) % 4 == 0)
    const emitted = [...recs.values()].filter((r) => r.stage === 'attn_comp_row' && r.layer === 2).map((r) => r.pos).sort((a, b) => a - b);
    expect(emitted).toEqual(Array.from({ length: Math.floor(tokens.length / 4) }, (_, i) => 4 * i + 3));
    // the raw cache never holds more than the sliding window
    const lastRaw = recs.get(`raw_cache/0/${tokens.length - 1}`)!;
    expect(lastRaw.shape).toEqual([cfg.slidingWindow, cfg.headDim]);
    // indexer top-k picks indexerTopK distinct visible rows once there are more candidates than that
    const topk = [...recs.values()].filter((r) => r.stage === 'index_topk');
    expect(topk.length).toBeGreaterThan(0);
    for (const r of topk) expect(new Set(r.values).size).toBe(cfg.indexerTopK);
  });

  it('prefill (layer-major) and token-by-token decode give bit-identical captures', async () => {
    const a = await capture({ mode: 'prefill' });
    const b = await capture({ mode: 'decode' });
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, ra] of a) {
      const rb = b.get(k)!;
      expect(rb.shape, k).toEqual(ra.shape);
      expect(Buffer.from(rb.values.buffer).equals(Buffer.from(ra.values.buffer)), `${k} differs`).toBe(true);
    }
  });

  it('two runs write byte-identical capture files', async () => {
    const files: string[] = [];
    for (let i = 0; i < 2; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'ds4-cap-'));
      const sink = await openCapture(dir, 'reference', { modelFingerprint: model.fingerprint, promptTokens: tokens, producer: { backend: 'reference', version: 'test' }, createdAt: 'fixed' });
      await runReference({ model, cfg, tokens, lastLayer: 2, tap: sink.tap });
      await sink.close();
      files.push(join(dir, sink.file));
    }
    const [x, y] = files.map((f) => readFileSync(f));
    expect(x.length).toBeGreaterThan(1000);
    expect(x.equals(y)).toBe(true);
  });

  it('ds4 and f64 precision differ by a bounded, nonzero amount per stage', async () => {
    const a = await capture({ lastLayer: 1, precision: 'ds4' });
    const b = await capture({ lastLayer: 1, precision: 'f64' });
    let nonzero = 0;
    for (const [k, ra] of a) {
      const rb = b.get(k)!;
      if (ra.dtype === 'i32') continue;
      let num = 0;
      let den = 0;
      for (let i = 0; i < ra.values.length; i++) {
        num += (ra.values[i] - rb.values[i]) ** 2;
        den += rb.values[i] ** 2;
      }
      const nmse = den > 0 ? num / den : num;
      if (nmse > 0) nonzero++;
      // activation quantization (int8 per 32, Q8_K, FP8 cache rows) is a few percent at worst
      expect(nmse, `${k} NMSE ds4 vs f64`).toBeLessThan(5e-2);
    }
    expect(nonzero).toBeGreaterThan(a.size / 2);
    // quantization noise must show where ds4 quantizes: the Q8_0 projections and the FP8 cache row
    const q = a.get('q_lora/0/0')!;
    const qe = b.get('q_lora/0/0')!;
    expect(Math.max(...q.values.map((v, i) => Math.abs(v - qe.values[i])))).toBeGreaterThan(0);
  });

  it('--layer N stops after layer N and applies the head to that state', async () => {
    const recs = await capture({ lastLayer: 0 });
    const layers = new Set([...recs.values()].filter((r) => r.stage === 'after_ffn_hc').map((r) => r.layer));
    expect(layers).toEqual(new Set([0]));
    const logits = [...recs.values()].filter((r) => r.stage === 'logits');
    expect(logits.map((r) => [r.layer, r.pos])).toEqual([[cfg.nLayer, tokens.length - 1]]);
    expect(logits[0].values.length).toBe(cfg.nVocab);
  });

  it('hash layers route by the tid2eid row of the token; router weights sum to the expert scale', async () => {
    const recs = await capture({ lastLayer: 3 });
    const dataOf = (name: string) => {
      const t = model.tensors.get(name)!;
      const b = model.read(t.offset, t.nbytes);
      return new Int32Array(b.buffer, b.byteOffset, b.length / 4);
    };
    for (let il = 0; il < cfg.nHashLayers; il++) {
      const table = dataOf(`blk.${il}.ffn_gate_tid2eid.weight`);
      for (let pos = 0; pos < tokens.length; pos++) {
        const sel = recs.get(`router_topk/${il}/${pos}`)!.values;
        expect([...sel]).toEqual([...table.subarray(tokens[pos] * cfg.nExpertUsed, (tokens[pos] + 1) * cfg.nExpertUsed)]);
      }
    }
    for (const r of recs.values()) {
      if (r.stage !== 'router_w') continue;
      const s = [...r.values].reduce((a, b) => a + b, 0);
      expect(s).toBeCloseTo(cfg.expertWeightsScale, 5);
    }
  });
});
