// Structural validation: one test per violation class, on small DS4-layout GGUFs whose tensors are holes
// (validation looks at the tables, not the weights), plus the layout table against catalog §2.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeGguf, type MetaEntry, type TensorSpec } from '../model/gguf-writer.ts';
import { openGguf } from '../model/gguf.ts';
import { configFromGguf, configMetadata, type Ds4Config } from '../model/config.ts';
import { DS4_FLASH, ds4TensorLayout, validateModel } from '../model/validate.ts';
import { GGMLType } from '../model/quant/types.ts';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-validate-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

// A small DS4-shaped config written out by hand (6 layers: raw, raw, ratio 4, ratio 128, ratio 4, ratio 128).
const CFG: Ds4Config = {
  nLayer: 6, nEmbd: 256, nVocab: 300, nHead: 4, nHeadKv: 1, headDim: 128, nRot: 64,
  qLoraRank: 64, oLoraRank: 64, oGroups: 2, nExpert: 8, nExpertUsed: 2, nFfExp: 256,
  nExpertShared: 1, nHashLayers: 3, slidingWindow: 8, indexerHeads: 4, indexerHeadDim: 128,
  indexerTopK: 2, nHc: 4, sinkhornIters: 20, hcEps: 1e-6, rmsEps: 1e-6,
  compressRatios: [0, 0, 4, 128, 4, 128], swigluClamp: [10, 10, 10, 10, 10, 10],
  ropeFreqBase: 10000, ropeScalingFactor: 16, ropeOrigCtx: 65536, yarnBetaFast: 32, yarnBetaSlow: 1,
  compressRopeFreqBase: 160000, expertWeightsScale: 1.5, expertWeightsNorm: true, contextLength: 4096,
};

interface Edit {
  meta?: (m: MetaEntry[]) => MetaEntry[];
  tensors?: (t: TensorSpec[]) => TensorSpec[];
}

let n = 0;
async function model(edit: Edit = {}) {
  const file = path.join(dir, `m${n++}.gguf`);
  const meta = configMetadata(CFG);
  const tensors: TensorSpec[] = ds4TensorLayout(CFG).filter((e) => !e.optional).map((e) => ({ name: e.name, type: e.types[0], dims: e.dims, data: null }));
  writeGguf(file, { metadata: edit.meta ? edit.meta(meta) : meta, tensors: edit.tensors ? edit.tensors(tensors) : tensors });
  return openGguf(file);
}

const without = (name: string) => (t: TensorSpec[]) => t.filter((x) => x.name !== name);
const replace = (name: string, f: (x: TensorSpec) => TensorSpec) => (t: TensorSpec[]) => t.map((x) => (x.name === name ? f(x) : x));
const setMeta = (key: string, e: Partial<MetaEntry>) => (m: MetaEntry[]) => m.map((x) => (x.key === `deepseek4.${key}` ? { ...x, ...e } : x));

async function violations(edit: Edit, strict = false) {
  const m = await model(edit);
  try {
    return validateModel(m, { strictDs4Flash: strict }).violations;
  } finally {
    m.close();
  }
}

describe('validateModel', () => {
  it('accepts the complete layout and reads the config back', async () => {
    const m = await model();
    const r = validateModel(m);
    expect(r.violations).toEqual([]);
    expect(r.unused).toEqual([]);
    // eps keys are stored as f32, so they read back as the f32 nearest 1e-6 (as ds4 reads them)
    const asStored = { ...CFG, hcEps: Math.fround(1e-6), rmsEps: Math.fround(1e-6) };
    expect(r.config).toEqual(asStored);
    expect(configFromGguf(m)).toEqual(asStored);
    m.close();
  });

  it('missing tensor', async () => {
    expect(await violations({ tensors: without('blk.1.attn_kv.weight') })).toEqual(['tensor blk.1.attn_kv.weight: missing (expected Q8_0 [256, 128])']);
  });

  it('wrong type', async () => {
    expect(await violations({ tensors: replace('blk.0.attn_q_a.weight', (x) => ({ ...x, type: GGMLType.F16 })) }))
      .toEqual(['tensor blk.0.attn_q_a.weight: type F16, expected Q8_0']);
    // routed experts: any of IQ2_XXS/Q2_K/Q4_K is accepted, but gate and up must agree
    expect(await violations({ tensors: replace('blk.3.ffn_up_exps.weight', (x) => ({ ...x, type: GGMLType.Q4_K })) }))
      .toEqual(['tensor blk.3.ffn_up_exps.weight: type Q4_K, expected IQ2_XXS (same as ffn_gate_exps)']);
    expect(await violations({ tensors: replace('blk.3.ffn_down_exps.weight', (x) => ({ ...x, type: GGMLType.Q8_0 })) }))
      .toEqual(['tensor blk.3.ffn_down_exps.weight: type Q8_0, expected Q2_K or IQ2_XXS or Q4_K']);
  });

  it('wrong shape', async () => {
    expect(await violations({ tensors: replace('blk.5.attn_sinks.weight', (x) => ({ ...x, dims: [5] })) }))
      .toEqual(['tensor blk.5.attn_sinks.weight: dims [5], expected [4]']);
  });

  it('bad compress-ratio pattern', async () => {
    const v = await violations({ meta: setMeta('attention.compress_ratios', { value: [0, 0, 4, 4, 4, 128] }) });
    expect(v).toEqual(['metadata deepseek4.attention.compress_ratios: expected 0,0,4,128,4,128 (0,0 then 4,128 alternating), found 0,0,4,4,4,128 (first mismatch at layer 3)']);
  });

  it('hash layer without tid2eid, and tid2eid naming a missing expert', async () => {
    expect(await violations({ tensors: without('blk.2.ffn_gate_tid2eid.weight') })).toEqual(['tensor blk.2.ffn_gate_tid2eid.weight: missing (expected I32 [2, 300])']);
    const ids = new Int32Array(2 * 300);
    ids[2 * 17 + 1] = 8; // token 17, slot 1 -> expert 8 of 0..7
    const v = await violations({ tensors: replace('blk.0.ffn_gate_tid2eid.weight', (x) => ({ ...x, data: new Uint8Array(ids.buffer) })) });
    expect(v).toEqual(['tensor blk.0.ffn_gate_tid2eid.weight: token 17 maps to expert 8, expected 0..7']);
  });

  it('ratio-4 layer without an indexer tensor; compressed layer without a compressor tensor', async () => {
    expect(await violations({ tensors: (t) => without('blk.3.attn_compressor_gate.weight')(without('blk.4.indexer.proj.weight')(t)) })).toEqual([
      'tensor blk.3.attn_compressor_gate.weight: missing (expected F16 [256, 128])',
      'tensor blk.4.indexer.proj.weight: missing (expected F16 [256, 4])',
    ]);
  });

  it('optional exp_probs_b.bias: absent is fine, present must be F32 [n_expert]', async () => {
    const add = (t: TensorSpec[]) => [...t, { name: 'blk.4.exp_probs_b.bias', type: GGMLType.F32, dims: [7], data: null }];
    expect(await violations({ tensors: add })).toEqual(['tensor blk.4.exp_probs_b.bias: dims [7], expected [8]']);
    const addF16 = (t: TensorSpec[]) => [...t, { name: 'blk.5.exp_probs_b.bias', type: GGMLType.F16, dims: [8], data: null }];
    expect(await violations({ tensors: addF16 })).toEqual(['tensor blk.5.exp_probs_b.bias: type F16, expected F32']);
  });

  it('bad metadata values: missing, mistyped, inconsistent', async () => {
    expect(await violations({ meta: (m) => m.filter((x) => x.key !== 'deepseek4.expert_count') }))
      .toEqual(['metadata deepseek4.expert_count: missing (expected an integer)']);
    expect(await violations({ meta: setMeta('block_count', { type: 'string', value: '6' }) }))
      .toContain('metadata deepseek4.block_count: expected an integer, found string');
    expect(await violations({ meta: setMeta('expert_weights_norm', { type: 'u32', value: 1 }) }))
      .toEqual(['metadata deepseek4.expert_weights_norm: expected bool, found u32']);
    expect(await violations({ meta: setMeta('swiglu_clamp_exp', { type: 'arr_u32', value: [10, 10, 10, 10, 10, 10] }) }))
      .toEqual(['metadata deepseek4.swiglu_clamp_exp: expected an array of f32/f64, found array of u32']);
    expect(await violations({ meta: setMeta('attention.value_length', { value: 64 }) }))
      .toEqual(['metadata deepseek4.attention.value_length: expected 128 (= key_length, K = V in DS4), found 64']);
    // float keys may be stored as u32 (ds4 required_f32)
    expect(await violations({ meta: setMeta('rope.freq_base', { type: 'u32', value: 10000 }) })).toEqual([]);
  });

  it('valid for ds4 but not runnable here: Q4_K routed experts are named, and loadModel refuses them up front', async () => {
    const edit = { tensors: replace('blk.3.ffn_down_exps.weight', (x) => ({ ...x, type: GGMLType.Q4_K })) };
    const m = await model(edit);
    const r = validateModel(m);
    m.close();
    expect(r.violations).toEqual([]);
    expect(r.unsupported).toEqual(["tensor blk.3.ffn_down_exps.weight is Q4_K: ds4-diff's reference and device run routed experts of Q2_K only (the q2 GGUF's)"]);
    const { loadModel } = await import('../cli/common.ts');
    await expect(loadModel(m.path)).rejects.toThrow(/a valid DS4 model that ds4-diff cannot run \(1 tensors, first: tensor blk\.3\.ffn_down_exps\.weight is Q4_K/);
  });

  it('config values outside their documented range, each named (inspect and every model-loading command refuse them)', async () => {
    const cases: Array<[string, Partial<MetaEntry>, string]> = [
      ['hyper_connection.sinkhorn_iterations', { value: 2 ** 31 - 1 }, 'expected 1..1000 (ds4: 20), found 2147483647'],
      ['attention.sliding_window', { value: 0 }, 'expected 1..65536 (ds4: 128), found 0'],
      ['attention.indexer.top_k', { value: 0 }, 'expected 1..65536 (ds4: 512), found 0'],
      ['attention.indexer.top_k', { value: 2 ** 32 - 1 }, 'expected 1..65536 (ds4: 512), found 4294967295'],
      ['expert_shared_count', { value: 0 }, 'expected 1 (one shared expert, as ds4 requires), found 0'],
      ['attention.layer_norm_rms_epsilon', { value: 0 }, 'expected a finite value in (0, 1) (ds4: 1e-6), found 0'],
      ['attention.layer_norm_rms_epsilon', { value: Infinity }, 'expected a finite value in (0, 1) (ds4: 1e-6), found Infinity'],
      ['hyper_connection.epsilon', { value: -1e-6 }, 'expected a finite value in (0, 1) (ds4: 1e-6), found -9.999999974752427e-7'],
      ['rope.freq_base', { value: NaN }, 'expected a finite value > 1 (ds4: 10000), found NaN'],
      ['rope.scaling.factor', { value: NaN }, 'expected a finite value >= 1 (ds4: 16), found NaN'],
      ['rope.scaling.yarn_beta_slow', { value: 64 }, 'expected a finite value > yarn_beta_slow (ds4: 32), found 32'],
      ['expert_weights_scale', { value: 0 }, 'expected a finite value > 0 (ds4: 1.5), found 0'],
      // key_length 128 - 2 = 126 non-RoPE dims: not whole 64-wide FP8 blocks
      ['rope.dimension_count', { value: 2 }, 'expected an even count >= 2 leaving key_length - n_rot a multiple of 64, found 2'],
    ];
    for (const [key, e, want] of cases) {
      const v = await violations({ meta: setMeta(key, e) });
      const named = key === 'rope.scaling.yarn_beta_slow' ? 'rope.scaling.yarn_beta_fast' : key;
      expect(v, `${key}=${String(e.value)}`).toEqual([`metadata deepseek4.${named}: ${want}`]);
    }
    // a 64-wide indexer: the Hadamard-128 width is named (its tensors' shapes then differ too)
    expect(await violations({ meta: setMeta('attention.indexer.key_length', { value: 64 }) }))
      .toContain("metadata deepseek4.attention.indexer.key_length: expected 128 (the indexer's Hadamard-128 width), found 64");
    expect(await violations({ meta: setMeta('swiglu_clamp_exp', { value: [10, 10, NaN, 10, 10, 10] }) }))
      .toEqual(['metadata deepseek4.swiglu_clamp_exp: expected a finite value > 0 on every layer, found NaN at layer 2']);
    // the tokenizer, when present: ids past vocab_size have no embedding row
    const tok = (extra: MetaEntry[]) => (m: MetaEntry[]) => [...m, ...extra];
    const specials = ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>', '<think>', '</think>', '｜DSML｜'];
    expect(await violations({ meta: tok([{ key: 'tokenizer.ggml.tokens', type: 'arr_string', value: specials }, { key: 'tokenizer.ggml.merges', type: 'arr_string', value: [] }, { key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: 300 }]) }))
      .toEqual(['metadata tokenizer.ggml.bos_token_id: expected a token id 0..299, found 300']);
    expect(await violations({ meta: tok([{ key: 'tokenizer.ggml.tokens', type: 'arr_string', value: [...specials, ...Array.from({ length: 294 }, (_, i) => `t${i}`)] }, { key: 'tokenizer.ggml.merges', type: 'arr_string', value: [] }]) }))
      .toEqual(['metadata tokenizer.ggml.tokens: 301 tokens, more than vocab_size 300 (ids past it have no embedding row)']);
  });

  it('accepts the alternative encodings ds4 accepts: u64 original context, f64/i32 floats, i32 ratios', async () => {
    const m = await model({
      meta: (x) => setMeta('rope.scaling.original_context_length', { type: 'u64', value: 65536 })(
        setMeta('expert_weights_scale', { type: 'f64', value: 1.5 })(
          setMeta('rope.scaling.yarn_beta_fast', { type: 'i32', value: 32 })(
            setMeta('attention.compress_ratios', { type: 'arr_i32' })(x)))),
    });
    const r = validateModel(m);
    expect(r.violations).toEqual([]);
    expect([r.config?.ropeOrigCtx, r.config?.expertWeightsScale, r.config?.yarnBetaFast]).toEqual([65536, 1.5, 32]);
    m.close();
  });

  it('reports every violation at once', async () => {
    const v = await violations({
      meta: setMeta('attention.sliding_window', { type: 'f32', value: 8 }),
      tensors: (t) => replace('output.weight', (x) => ({ ...x, type: GGMLType.F16 }))(without('blk.0.ffn_norm.weight')(t)),
    });
    expect(v).toEqual(['metadata deepseek4.attention.sliding_window: expected an integer, found f32']);
    const v2 = await violations({ tensors: (t) => replace('output.weight', (x) => ({ ...x, type: GGMLType.F16 }))(without('blk.0.ffn_norm.weight')(t)) });
    expect(v2).toEqual(['tensor output.weight: type F16, expected Q8_0', 'tensor blk.0.ffn_norm.weight: missing (expected F32 [256])']);
  });

  it('strict DS4 Flash check names each fixed value that differs', async () => {
    const v = await violations({}, true);
    expect(v).toContain('metadata deepseek4.block_count: expected 43 for DeepSeek V4 Flash, found 6');
    expect(v).toContain('metadata deepseek4.embedding_length: expected 4096 for DeepSeek V4 Flash, found 256');
    expect(v).toContain('metadata deepseek4.attention.indexer.top_k: expected 512 for DeepSeek V4 Flash, found 2');
    expect(v.filter((x) => x.startsWith('metadata')).length).toBeGreaterThan(10);
    // values that already match (eps, rope, scale) are not reported
    expect(v.some((x) => x.includes('rope.freq_base') || x.includes('epsilon'))).toBe(false);
  });
});

describe('DS4 tensor layout at the real dims (catalog §2)', () => {
  const real: Ds4Config = {
    ...(({ swigluClampValue: _s, ...rest }) => rest)(DS4_FLASH),
    compressRatios: Array.from({ length: 43 }, (_, il) => (il < 2 ? 0 : il % 2 ? 128 : 4)),
    swigluClamp: Array(43).fill(10),
    contextLength: 0,
  };
  const layout = new Map(ds4TensorLayout(real).map((e) => [e.name, e]));

  it('has the catalog dims and types', () => {
    const dims = (n: string) => layout.get(n)?.dims;
    expect(dims('token_embd.weight')).toEqual([4096, 129280]);
    expect(dims('output_hc_fn.weight')).toEqual([16384, 4]);
    expect(dims('blk.0.hc_attn_fn.weight')).toEqual([16384, 24]);
    expect(dims('blk.0.attn_q_b.weight')).toEqual([1024, 32768]);
    expect(dims('blk.0.attn_output_a.weight')).toEqual([4096, 8192]);
    expect(dims('blk.0.attn_output_b.weight')).toEqual([8192, 4096]);
    expect(dims('blk.2.attn_compressor_ape.weight')).toEqual([1024, 4]);
    expect(dims('blk.3.attn_compressor_ape.weight')).toEqual([512, 128]);
    expect(dims('blk.2.indexer.attn_q_b.weight')).toEqual([1024, 8192]);
    expect(dims('blk.2.indexer.proj.weight')).toEqual([4096, 64]);
    expect(dims('blk.2.indexer_compressor_kv.weight')).toEqual([4096, 256]);
    expect(dims('blk.42.ffn_down_exps.weight')).toEqual([2048, 4096, 256]);
    expect(dims('blk.2.ffn_gate_tid2eid.weight')).toEqual([6, 129280]);
    expect(layout.has('blk.3.ffn_gate_tid2eid.weight')).toBe(false);
    expect(layout.has('blk.3.indexer.proj.weight')).toBe(false);
    expect(layout.has('blk.1.attn_compressor_kv.weight')).toBe(false);
    expect(layout.get('blk.7.ffn_gate_exps.weight')?.types[0]).toBe(GGMLType.IQ2_XXS);
    expect(layout.get('blk.7.ffn_down_exps.weight')?.types[0]).toBe(GGMLType.Q2_K);
    // 6 global; 24 per layer (incl. optional bias); +4 compressor on 41 layers; +6 indexer on 21; +1 tid2eid on 3
    expect(layout.size).toBe(6 + 43 * 24 + 41 * 4 + 21 * 6 + 3);
  });
});
