// DS4 model configuration, read from the GGUF's `deepseek4.*` metadata (catalog §1).
// Dims are read, never hard-coded, so a tiny model with the real structure runs through everything.
// OWNER: model helper (GGUF/config). The interface below is the contract other folders rely on.
import type { GgufModel } from './gguf.ts';
import { GGUF_VALUE } from './gguf.ts';
import { badInput } from './errors.ts';
import type { MetaEntry } from './gguf-writer.ts';

export type LayerKind = 'raw' | 'ratio4' | 'ratio128';

export interface Ds4Config {
  nLayer: number; // block_count (43)
  nEmbd: number; // embedding_length (4096)
  nVocab: number; // vocab_size (129280)
  nHead: number; // attention.head_count (64)
  nHeadKv: number; // attention.head_count_kv (1)
  headDim: number; // attention.key_length (512) == value_length
  nRot: number; // rope.dimension_count (64): rotated tail of each head
  qLoraRank: number; // attention.q_lora_rank (1024)
  oLoraRank: number; // attention.output_lora_rank (1024)
  oGroups: number; // attention.output_group_count (8)
  nExpert: number; // expert_count (256)
  nExpertUsed: number; // expert_used_count (6)
  nFfExp: number; // expert_feed_forward_length (2048)
  nExpertShared: number; // expert_shared_count (1)
  nHashLayers: number; // hash_layer_count (3)
  slidingWindow: number; // attention.sliding_window (128)
  indexerHeads: number; // attention.indexer.head_count (64)
  indexerHeadDim: number; // attention.indexer.key_length (128)
  indexerTopK: number; // attention.indexer.top_k (512)
  nHc: number; // hyper_connection.count (4)
  sinkhornIters: number; // hyper_connection.sinkhorn_iterations (20)
  hcEps: number; // hyper_connection.epsilon (1e-6)
  rmsEps: number; // attention.layer_norm_rms_epsilon (1e-6)
  compressRatios: number[]; // attention.compress_ratios, one per layer (0, 4 or 128)
  swigluClamp: number[]; // swiglu_clamp_exp, one per layer (10.0)
  ropeFreqBase: number; // rope.freq_base (10000)
  ropeScalingFactor: number; // rope.scaling.factor (16)
  ropeOrigCtx: number; // rope.scaling.original_context_length (65536)
  yarnBetaFast: number; // rope.scaling.yarn_beta_fast (32)
  yarnBetaSlow: number; // rope.scaling.yarn_beta_slow (1)
  compressRopeFreqBase: number; // attention.compress_rope_freq_base (160000)
  expertWeightsScale: number; // expert_weights_scale (1.5)
  expertWeightsNorm: boolean; // expert_weights_norm (true)
  contextLength: number; // context_length (summary only)
}

export function layerKind(cfg: Ds4Config, il: number): LayerKind {
  const r = cfg.compressRatios[il];
  return r === 0 ? 'raw' : r === 4 ? 'ratio4' : 'ratio128';
}

/** Layers below hash_layer_count route by token id through `ffn_gate_tid2eid` (catalog §0). */
export function isHashLayer(cfg: Ds4Config, il: number): boolean {
  return il < cfg.nHashLayers;
}

// ---- reading the config from a GGUF (ds4.c config_validate_model, l.2564) ----

const K = 'deepseek4.';
const INTEGER_TYPES: number[] = [GGUF_VALUE.u8, GGUF_VALUE.i8, GGUF_VALUE.u16, GGUF_VALUE.i16, GGUF_VALUE.u32, GGUF_VALUE.i32, GGUF_VALUE.u64, GGUF_VALUE.i64];
// ds4 required_f32 accepts f32, f64, u32 and i32 for float keys.
const FLOAT_TYPES: number[] = [GGUF_VALUE.f32, GGUF_VALUE.f64, GGUF_VALUE.u32, GGUF_VALUE.i32];
const TYPE_NAMES: Record<number, string> = { 0: 'u8', 1: 'i8', 2: 'u16', 3: 'i16', 4: 'u32', 5: 'i32', 6: 'f32', 7: 'bool', 8: 'string', 9: 'array', 10: 'u64', 11: 'i64', 12: 'f64' };

export function ggufTypeName(t: { type: number; subType?: number } | undefined): string {
  if (!t) return 'missing';
  const n = TYPE_NAMES[t.type] ?? `type#${t.type}`;
  return t.subType === undefined ? n : `${n} of ${TYPE_NAMES[t.subType] ?? `type#${t.subType}`}`;
}

/** Reads every key, collecting one problem per missing or mistyped key instead of stopping at the first. */
class MetaReader {
  problems: string[] = [];
  constructor(private m: GgufModel) {}

  private typed(key: string, allowed: number[], want: string): unknown {
    const t = this.m.metadataTypes[key];
    if (!t) {
      this.problems.push(`metadata ${key}: missing (expected ${want})`);
      return undefined;
    }
    if (!allowed.includes(t.type)) {
      this.problems.push(`metadata ${key}: expected ${want}, found ${ggufTypeName(t)}`);
      return undefined;
    }
    return this.m.metadata[key];
  }

  private toCount(key: string, v: unknown): number {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) {
      this.problems.push(`metadata ${key}: expected a non-negative integer, found ${String(v)}`);
      return 0;
    }
    return n;
  }

  int(key: string): number {
    const v = this.typed(K + key, INTEGER_TYPES, 'an integer');
    return v === undefined ? 0 : this.toCount(K + key, v);
  }

  optionalInt(key: string, fallback: number): number {
    return this.m.metadataTypes[K + key] ? this.int(key) : fallback;
  }

  float(key: string): number {
    const v = this.typed(K + key, FLOAT_TYPES, 'f32/f64/u32/i32');
    return v === undefined ? 0 : Number(v);
  }

  bool(key: string): boolean {
    return this.typed(K + key, [GGUF_VALUE.bool], 'bool') === true;
  }

  array(key: string, subTypes: number[], want: string, minLength: number): number[] {
    const full = K + key;
    const v = this.typed(full, [GGUF_VALUE.array], `an array of ${want}`);
    if (v === undefined) return [];
    const sub = this.m.metadataTypes[full].subType;
    if (sub === undefined || !subTypes.includes(sub)) {
      this.problems.push(`metadata ${full}: expected an array of ${want}, found ${ggufTypeName(this.m.metadataTypes[full])}`);
      return [];
    }
    const a = (v as unknown[]).map(Number);
    if (a.length < minLength) {
      this.problems.push(`metadata ${full}: expected at least ${minLength} entries (one per layer), found ${a.length}`);
      return [];
    }
    return a.slice(0, minLength);
  }
}

type KeyKind = 'int' | 'float' | 'bool' | 'ratios' | 'clamp' | 'optInt';

/** Where each config field lives in the GGUF (`deepseek4.` + key) and how it is typed (catalog §1). */
export const CONFIG_KEYS: ReadonlyArray<{ field: keyof Ds4Config; key: string; kind: KeyKind }> = [
  { field: 'nLayer', key: 'block_count', kind: 'int' },
  { field: 'nEmbd', key: 'embedding_length', kind: 'int' },
  { field: 'nVocab', key: 'vocab_size', kind: 'int' },
  { field: 'nHead', key: 'attention.head_count', kind: 'int' },
  { field: 'nHeadKv', key: 'attention.head_count_kv', kind: 'int' },
  { field: 'headDim', key: 'attention.key_length', kind: 'int' },
  { field: 'nRot', key: 'rope.dimension_count', kind: 'int' },
  { field: 'qLoraRank', key: 'attention.q_lora_rank', kind: 'int' },
  { field: 'oLoraRank', key: 'attention.output_lora_rank', kind: 'int' },
  { field: 'oGroups', key: 'attention.output_group_count', kind: 'int' },
  { field: 'nExpert', key: 'expert_count', kind: 'int' },
  { field: 'nExpertUsed', key: 'expert_used_count', kind: 'int' },
  { field: 'nFfExp', key: 'expert_feed_forward_length', kind: 'int' },
  { field: 'nExpertShared', key: 'expert_shared_count', kind: 'int' },
  { field: 'nHashLayers', key: 'hash_layer_count', kind: 'int' },
  { field: 'slidingWindow', key: 'attention.sliding_window', kind: 'int' },
  { field: 'indexerHeads', key: 'attention.indexer.head_count', kind: 'int' },
  { field: 'indexerHeadDim', key: 'attention.indexer.key_length', kind: 'int' },
  { field: 'indexerTopK', key: 'attention.indexer.top_k', kind: 'int' },
  { field: 'nHc', key: 'hyper_connection.count', kind: 'int' },
  { field: 'sinkhornIters', key: 'hyper_connection.sinkhorn_iterations', kind: 'int' },
  { field: 'hcEps', key: 'hyper_connection.epsilon', kind: 'float' },
  { field: 'rmsEps', key: 'attention.layer_norm_rms_epsilon', kind: 'float' },
  { field: 'compressRatios', key: 'attention.compress_ratios', kind: 'ratios' },
  { field: 'swigluClamp', key: 'swiglu_clamp_exp', kind: 'clamp' },
  { field: 'ropeFreqBase', key: 'rope.freq_base', kind: 'float' },
  { field: 'ropeScalingFactor', key: 'rope.scaling.factor', kind: 'float' },
  // ds4 required_u64: u32 or u64
  { field: 'ropeOrigCtx', key: 'rope.scaling.original_context_length', kind: 'int' },
  { field: 'yarnBetaFast', key: 'rope.scaling.yarn_beta_fast', kind: 'float' },
  { field: 'yarnBetaSlow', key: 'rope.scaling.yarn_beta_slow', kind: 'float' },
  { field: 'compressRopeFreqBase', key: 'attention.compress_rope_freq_base', kind: 'float' },
  { field: 'expertWeightsScale', key: 'expert_weights_scale', kind: 'float' },
  { field: 'expertWeightsNorm', key: 'expert_weights_norm', kind: 'bool' },
  { field: 'contextLength', key: 'context_length', kind: 'optInt' },
];

/** The config and the list of metadata problems (missing or mistyped keys); `config` is absent when there are problems. */
export function readConfig(m: GgufModel): { config?: Ds4Config; problems: string[] } {
  const r = new MetaReader(m);
  const nLayer = r.int('block_count');
  const cfg: Record<string, unknown> = {};
  for (const { field, key, kind } of CONFIG_KEYS) {
    cfg[field] =
      kind === 'int' ? r.int(key)
      : kind === 'optInt' ? r.optionalInt(key, 0)
      : kind === 'float' ? r.float(key)
      : kind === 'bool' ? r.bool(key)
      : kind === 'ratios' ? r.array(key, [GGUF_VALUE.u32, GGUF_VALUE.i32], 'u32/i32', nLayer)
      : r.array(key, [GGUF_VALUE.f32, GGUF_VALUE.f64], 'f32/f64', nLayer);
  }
  return r.problems.length ? { problems: r.problems } : { config: cfg as unknown as Ds4Config, problems: [] };
}

/** The deepseek4.* metadata entries that describe `cfg` (what a GGUF writer puts in the file). */
export function configMetadata(cfg: Ds4Config): MetaEntry[] {
  const out: MetaEntry[] = [];
  for (const { field, key, kind } of CONFIG_KEYS) {
    const value = cfg[field];
    const type = kind === 'float' ? 'f32' : kind === 'bool' ? 'bool' : kind === 'ratios' ? 'arr_u32' : kind === 'clamp' ? 'arr_f32' : 'u32';
    out.push({ key: K + key, type, value });
    // DS4 has K = V: value_length is written next to key_length and must equal it.
    if (field === 'headDim') out.push({ key: K + 'attention.value_length', type: 'u32', value });
  }
  return out;
}

/** Ds4Config from the GGUF's deepseek4.* keys (catalog §1); every missing/mistyped key is named in one line. */
export function configFromGguf(m: GgufModel): Ds4Config {
  const { config, problems } = readConfig(m);
  if (!config) throw badInput(`${m.path}: ${problems.join('; ')}`);
  return config;
}
