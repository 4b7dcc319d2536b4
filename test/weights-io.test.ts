// How weights reach the arithmetic (issue 16): a view of the addon's file mapping or, without it, a
// positional read — the same captures either way; a --tokens run never decodes the vocabulary; the
// simulated device's mapped weights cost no copy and cannot be written; the products shared across a
// stage's precisions and a prompt's positions change no number.
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture } from '../model/fixture.ts';
import { openGguf, type GgufModel } from '../model/gguf.ts';
import { configFromGguf, type Ds4Config } from '../model/config.ts';
import { validateModel } from '../model/validate.ts';
import { recordKey, type StageRecord } from '../model/stages.ts';
import { runReference } from '../reference/runner.ts';
import { matmul, matvec, sharedProducts } from '../reference/matvec.ts';
import { ModelWeights } from '../reference/weights.ts';
import { loadNative } from '../ascend/native.ts';
import { loadModelAndPrompt, newManifest } from '../cli/common.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { tinyVocab } from '../model/vocab.ts';

let path: string;
let cfg: Ds4Config;
const tokens = [0, 17, 93, 5, 250, 31, 7, 64, 128, 9, 301, 42, 3];

async function captures(model: GgufModel, facts = false): Promise<Map<string, StageRecord>> {
  const out = new Map<string, StageRecord>();
  const keep = (side: string) => (r: StageRecord) => out.set(`${side}:${recordKey(r)}`, r);
  await runReference({ model, cfg, tokens, tap: keep('ref'), facts: facts ? { noise: keep('noise'), ties: keep('ties'), approx: true } : undefined });
  return out;
}

const bits = (r: StageRecord) => Buffer.from(r.values.buffer, r.values.byteOffset, r.values.byteLength);

function expectSame(a: Map<string, StageRecord>, b: Map<string, StageRecord>): void {
  expect([...a.keys()]).toEqual([...b.keys()]);
  for (const [k, r] of a) expect(bits(r).equals(bits(b.get(k)!)), k).toBe(true);
}

beforeAll(async () => {
  path = join(mkdtempSync(join(tmpdir(), 'ds4-io-')), 'tiny.gguf');
  await writeFixture({ preset: 'tiny', seed: 0, out: path });
  const m = await openGguf(path);
  cfg = configFromGguf(m);
  m.close();
});

describe('weights through the file mapping', () => {
  it('the mapped file and positional reads give bit-identical captures and facts', async () => {
    const mapped = await openGguf(path);
    const read = await openGguf(path, { map: false });
    expect(mapped.mapping).toBeDefined();
    expect(read.mapping).toBeUndefined();
    expectSame(await captures(mapped, true), await captures(read, true));
    mapped.close();
    read.close();
  });

  it('a --tokens run loads, validates, runs and reports without decoding the vocabulary (it stays in the header, read in place)', async () => {
    const run = await loadModelAndPrompt({ model: path, tokens: tokens.join(',') });
    const m = run.model;
    expect(validateModel(m).violations).toEqual([]);
    await runReference({ model: m, cfg, tokens, lastLayer: 0 });
    // the manifest names each token's piece, read entry by entry
    expect(newManifest(run, 'reference', {}).tokenPieces).toEqual(tokens.map((id) => Tokenizer.fromVocab(tinyVocab()).piece(id)));
    for (const key of ['tokenizer.ggml.tokens', 'tokenizer.ggml.merges']) {
      // still the lazy getter: never read
      expect(Object.getOwnPropertyDescriptor(m.metadata, key)?.get, key).toBeTypeOf('function');
    }
    expect((m.metadata['tokenizer.ggml.tokens'] as string[]).length).toBe(m.stringArray('tokenizer.ggml.tokens')!.length);
    m.close();
  });
});

describe('shared products', () => {
  it('a weight multiplied once for several inputs and precisions gives each product as alone', async () => {
    const m = await openGguf(path);
    const w = new ModelWeights(m, cfg);
    const q8 = w.layer(0).get('attn_q_a.weight');
    const f16 = w.layer(0).get('hc_attn_fn.weight');
    for (const wt of [q8, f16]) {
      const xs = [0, 1, 2].map((s) => Float32Array.from({ length: wt.cols }, (_, i) => Math.sin(i * (s + 1) * 0.37) * (s + 1)));
      const alone = xs.map((x) => [matvec(wt, x, 'ds4'), matvec(wt, x, 'f64')]);
      const together = sharedProducts(true, () => {
        const ds4 = matmul(wt, xs, 'ds4');
        return xs.map((x, i) => [ds4[i], matvec(wt, x, 'f64'), matvec(wt, x, 'ascend')]);
      });
      together.forEach(([d, f, a], i) => {
        expect(Buffer.from(d.buffer).equals(Buffer.from(alone[i][0].buffer))).toBe(true);
        expect(Buffer.from(f.buffer).equals(Buffer.from(alone[i][1].buffer))).toBe(true);
        expect(Buffer.from(a.buffer).equals(Buffer.from(alone[i][0].buffer))).toBe(true);
      });
    }
    m.close();
  });
});

const device = loadNative();
describe.skipIf(!device.ok)('the simulated device reads weights from the mapping', () => {
  it('a mapped weight holds the file\'s bytes, and neither an upload nor a kernel may write it', async () => {
    if (!device.ok) return;
    const m = await openGguf(path);
    const t = m.tensors.get('output_norm.weight')!;
    const dev = device.dev;
    const h = dev.mapWeight(m.mapping!.id, t.offset, t.nbytes, 'output_norm.weight');
    expect(Buffer.from(dev.download(h)).equals(Buffer.from(m.read(t.offset, t.nbytes)))).toBe(true);
    expect(() => dev.upload(h, new Float32Array(4))).toThrow(/mapped read-only from the model file/);
    // a kernel writing it (the weight passed as a fill's output) is a sanitizer fault naming the buffer
    dev.launch('fill', [h], [0, 4]);
    expect(() => dev.synchronize()).toThrow(/wrote buffer #\d+ 'output_norm\.weight', a weight mapped read-only/);
    dev.free(h);
    m.close();
  });
});
