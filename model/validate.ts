// Structural validation of a DS4 GGUF: the metadata reads as a Ds4Config, the compress-ratio pattern is
// DS4's, and every tensor ds4 binds is present with the right type and a shape derived from the metadata
// (ds4.c weights_bind l.2650, weights_validate_layout l.2357; catalog §2). All violations are collected,
// each naming the key/tensor with expected and found, so one run shows everything that is wrong.
import { GGMLType, typeName } from './quant/types.ts';
import { CONFIG_KEYS, readConfig, type Ds4Config } from './config.ts';
import type { GgufModel } from './gguf.ts';
import { SPECIALS } from './tokenizer.ts';

export interface TensorExpectation {
  name: string;
  /** allowed types, the one the q2 GGUF uses first */
  types: GGMLType[];
  dims: number[];
  optional?: boolean;
}

/** ds4_layer_compress_ratio (l.411): layers 0,1 dense; then even layers ratio 4, odd layers ratio 128. */
export function ds4CompressRatio(il: number): number {
  return il < 2 ? 0 : il % 2 === 0 ? 4 : 128;
}

// Routed experts: the q2 GGUF has IQ2_XXS gate/up and Q2_K down; ds4's validator also accepts Q4_K
// (the q4 GGUF) and any of the three for each (tensor_is_routed_expert_type, l.2295).
const ROUTED_GATE_UP = [GGMLType.IQ2_XXS, GGMLType.Q2_K, GGMLType.Q4_K];
const ROUTED_DOWN = [GGMLType.Q2_K, GGMLType.IQ2_XXS, GGMLType.Q4_K];

/** Every tensor a DS4 GGUF with this config must (or may) hold, in ds4's binding order. */
export function ds4TensorLayout(cfg: Ds4Config): TensorExpectation[] {
  const { F16, F32, Q8_0, I32 } = GGMLType;
  const E = cfg.nEmbd;
  const hcDim = E * cfg.nHc;
  const hcMix = 2 * cfg.nHc + cfg.nHc * cfg.nHc; // pre weights, post weights, H×H combination
  const D = cfg.headDim;
  const outGroupIn = D * (cfg.nHead / cfg.oGroups); // heads of one output group, concatenated
  const outLow = cfg.oGroups * cfg.oLoraRank;
  const t = (name: string, types: GGMLType | GGMLType[], dims: number[], optional = false): TensorExpectation =>
    ({ name, types: Array.isArray(types) ? types : [types], dims, ...(optional ? { optional } : {}) });

  const out: TensorExpectation[] = [
    t('token_embd.weight', F16, [E, cfg.nVocab]),
    t('output_hc_base.weight', F32, [cfg.nHc]),
    t('output_hc_fn.weight', F16, [hcDim, cfg.nHc]),
    t('output_hc_scale.weight', F32, [1]),
    t('output_norm.weight', F32, [E]),
    t('output.weight', Q8_0, [E, cfg.nVocab]),
  ];
  for (let il = 0; il < cfg.nLayer; il++) {
    const b = `blk.${il}.`;
    const ratio = ds4CompressRatio(il);
    out.push(
      t(b + 'hc_attn_fn.weight', F16, [hcDim, hcMix]),
      t(b + 'hc_attn_scale.weight', F32, [3]),
      t(b + 'hc_attn_base.weight', F32, [hcMix]),
      t(b + 'attn_norm.weight', F32, [E]),
      t(b + 'attn_q_a.weight', Q8_0, [E, cfg.qLoraRank]),
      t(b + 'attn_q_a_norm.weight', F32, [cfg.qLoraRank]),
      t(b + 'attn_q_b.weight', Q8_0, [cfg.qLoraRank, cfg.nHead * D]),
      t(b + 'attn_kv.weight', Q8_0, [E, D]),
      t(b + 'attn_kv_a_norm.weight', F32, [D]),
      t(b + 'attn_sinks.weight', F32, [cfg.nHead]),
      t(b + 'attn_output_a.weight', Q8_0, [outGroupIn, outLow]),
      t(b + 'attn_output_b.weight', Q8_0, [outLow, E]),
    );
    if (ratio !== 0) {
      // ratio-4 layers keep two overlapping windows (coff = 2), ratio-128 layers one.
      const width = (ratio === 4 ? 2 : 1) * D;
      out.push(
        t(b + 'attn_compressor_ape.weight', F16, [width, ratio]),
        t(b + 'attn_compressor_kv.weight', F16, [E, width]),
        t(b + 'attn_compressor_gate.weight', F16, [E, width]),
        t(b + 'attn_compressor_norm.weight', F32, [D]),
      );
    }
    if (ratio === 4) {
      const iw = 2 * cfg.indexerHeadDim;
      out.push(
        t(b + 'indexer.attn_q_b.weight', F16, [cfg.qLoraRank, cfg.indexerHeads * cfg.indexerHeadDim]),
        t(b + 'indexer.proj.weight', F16, [E, cfg.indexerHeads]),
        t(b + 'indexer_compressor_ape.weight', F16, [iw, ratio]),
        t(b + 'indexer_compressor_kv.weight', F16, [E, iw]),
        t(b + 'indexer_compressor_gate.weight', F16, [E, iw]),
        t(b + 'indexer_compressor_norm.weight', F32, [cfg.indexerHeadDim]),
      );
    }
    out.push(
      t(b + 'hc_ffn_fn.weight', F16, [hcDim, hcMix]),
      t(b + 'hc_ffn_scale.weight', F32, [3]),
      t(b + 'hc_ffn_base.weight', F32, [hcMix]),
      t(b + 'ffn_norm.weight', F32, [E]),
      t(b + 'ffn_gate_inp.weight', F16, [E, cfg.nExpert]),
      t(b + 'exp_probs_b.bias', F32, [cfg.nExpert], true),
      t(b + 'ffn_gate_exps.weight', ROUTED_GATE_UP, [E, cfg.nFfExp, cfg.nExpert]),
      t(b + 'ffn_up_exps.weight', ROUTED_GATE_UP, [E, cfg.nFfExp, cfg.nExpert]),
      t(b + 'ffn_down_exps.weight', ROUTED_DOWN, [cfg.nFfExp, E, cfg.nExpert]),
      t(b + 'ffn_gate_shexp.weight', Q8_0, [E, cfg.nFfExp]),
      t(b + 'ffn_up_shexp.weight', Q8_0, [E, cfg.nFfExp]),
      t(b + 'ffn_down_shexp.weight', Q8_0, [cfg.nFfExp, E]),
    );
    if (il < cfg.nHashLayers) out.push(t(b + 'ffn_gate_tid2eid.weight', I32, [cfg.nExpertUsed, cfg.nVocab]));
  }
  return out;
}

/** The real model's fixed values (catalog §0/§1, ds4.c config_validate_model). */
export const DS4_FLASH: Omit<Ds4Config, 'compressRatios' | 'swigluClamp' | 'contextLength'> & { swigluClampValue: number } = {
  nLayer: 43, nEmbd: 4096, nVocab: 129280, nHead: 64, nHeadKv: 1, headDim: 512, nRot: 64,
  qLoraRank: 1024, oLoraRank: 1024, oGroups: 8, nExpert: 256, nExpertUsed: 6, nFfExp: 2048,
  nExpertShared: 1, nHashLayers: 3, slidingWindow: 128, indexerHeads: 64, indexerHeadDim: 128,
  indexerTopK: 512, nHc: 4, sinkhornIters: 20, hcEps: 1e-6, rmsEps: 1e-6, ropeFreqBase: 10000,
  ropeScalingFactor: 16, ropeOrigCtx: 65536, yarnBetaFast: 32, yarnBetaSlow: 1,
  compressRopeFreqBase: 160000, expertWeightsScale: 1.5, expertWeightsNorm: true, swigluClampValue: 10,
};

/** ds4 config_expect_f32: equal within 1e-6 relative (absolute below 1). */
function closeF32(got: number, want: number): boolean {
  return Math.abs(got - want) <= Math.max(1, Math.abs(want)) * 1e-6;
}

const finitePositive = (x: number) => Number.isFinite(x) && x > 0;
const count = (lo: number, hi: number) => (x: number) => Number.isInteger(x) && x >= lo && x <= hi;

/**
 * The documented range of every config value no tensor shape pins down (the dims are checked against
 * the tensors). ds4 itself accepts only DeepSeek V4 Flash's values (config_validate_model: 128, 512, 20,
 * 1, 1e-6, ...; `--strict-ds4-flash` here); these ranges admit smaller synthetic models while refusing
 * what no DS4-layout model can mean: a loop bound or a buffer that would not end or fit (Sinkhorn
 * iterations, sliding window, indexer top-k), a zero or non-finite epsilon, scale or RoPE factor.
 */
export const CONFIG_RANGES: ReadonlyArray<{ field: keyof Ds4Config; want: string; ok: (x: number, cfg: Ds4Config) => boolean }> = [
  { field: 'nLayer', want: '1..1024', ok: count(1, 1024) },
  { field: 'nEmbd', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'nVocab', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'nHead', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'headDim', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'qLoraRank', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'oLoraRank', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'nExpert', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'nFfExp', want: '>= 1', ok: count(1, 2 ** 31) },
  { field: 'indexerHeads', want: '>= 1', ok: count(1, 2 ** 31) },
  // the indexer's rows go through a 128-point Hadamard transform (ds4.c dies on any other width)
  { field: 'indexerHeadDim', want: '128 (the indexer\'s Hadamard-128 width)', ok: (x) => x === 128 },
  // the graph has exactly one shared expert: its tensors have no expert dimension (ds4: DS4_N_EXPERT_SHARED = 1)
  { field: 'nExpertShared', want: '1 (one shared expert, as ds4 requires)', ok: (x) => x === 1 },
  { field: 'slidingWindow', want: '1..65536 (ds4: 128)', ok: count(1, 65536) },
  { field: 'indexerTopK', want: '1..65536 (ds4: 512)', ok: count(1, 65536) },
  { field: 'sinkhornIters', want: '1..1000 (ds4: 20)', ok: count(1, 1000) },
  // the KV row's non-RoPE dims are FP8-quantized in 64-wide blocks (ds4.c dsv4_fp8_kv_quantize_row)
  { field: 'nRot', want: 'an even count >= 2 leaving key_length - n_rot a multiple of 64', ok: (x, c) => Number.isInteger(x) && x >= 2 && (c.headDim - x) % 64 === 0 },
  { field: 'hcEps', want: 'a finite value in (0, 1) (ds4: 1e-6)', ok: (x) => finitePositive(x) && x < 1 },
  { field: 'rmsEps', want: 'a finite value in (0, 1) (ds4: 1e-6)', ok: (x) => finitePositive(x) && x < 1 },
  { field: 'ropeFreqBase', want: 'a finite value > 1 (ds4: 10000)', ok: (x) => Number.isFinite(x) && x > 1 },
  { field: 'compressRopeFreqBase', want: 'a finite value > 1 (ds4: 160000)', ok: (x) => Number.isFinite(x) && x > 1 },
  { field: 'ropeScalingFactor', want: 'a finite value >= 1 (ds4: 16)', ok: (x) => Number.isFinite(x) && x >= 1 },
  { field: 'ropeOrigCtx', want: '>= 1 (ds4: 65536)', ok: count(1, 2 ** 32) },
  { field: 'yarnBetaFast', want: 'a finite value > yarn_beta_slow (ds4: 32)', ok: (x, c) => Number.isFinite(x) && x > c.yarnBetaSlow },
  { field: 'yarnBetaSlow', want: 'a finite value > 0 (ds4: 1)', ok: finitePositive },
  { field: 'expertWeightsScale', want: 'a finite value > 0 (ds4: 1.5)', ok: finitePositive },
  // optional (0 when absent); where present it bounds the positions an imported dump may name
  { field: 'contextLength', want: '1..2147483647 (ds4: 1048576)', ok: (x) => x === 0 || count(1, 2 ** 31 - 1)(x) },
];

/** Metadata values the DS4 graph needs to be self-consistent, whatever the dims. */
function checkConfig(cfg: Ds4Config, m: GgufModel, v: string[]) {
  const key = (k: string) => `metadata deepseek4.${k}`;
  const valueLength = Number(m.metadata['deepseek4.attention.value_length']);
  if (valueLength !== cfg.headDim) v.push(`${key('attention.value_length')}: expected ${cfg.headDim} (= key_length, K = V in DS4), found ${m.metadata['deepseek4.attention.value_length']}`);
  if (cfg.nHeadKv !== 1) v.push(`${key('attention.head_count_kv')}: expected 1 (single shared KV head), found ${cfg.nHeadKv}`);
  for (const [k, val] of [['expert_group_count', m.metadata['deepseek4.expert_group_count']], ['expert_group_used_count', m.metadata['deepseek4.expert_group_used_count']]] as const) {
    if (val !== undefined && Number(val) !== 0) v.push(`${key(k)}: expected 0 (DS4 has no expert groups), found ${String(val)}`);
  }
  if (cfg.nRot > cfg.headDim || cfg.nRot % 2 !== 0) v.push(`${key('rope.dimension_count')}: expected an even count <= key_length ${cfg.headDim}, found ${cfg.nRot}`);
  if (cfg.oGroups === 0 || cfg.nHead % cfg.oGroups !== 0) v.push(`${key('attention.output_group_count')}: expected a divisor of head_count ${cfg.nHead}, found ${cfg.oGroups}`);
  if (cfg.nExpertUsed === 0 || cfg.nExpertUsed > cfg.nExpert) v.push(`${key('expert_used_count')}: expected 1..expert_count (${cfg.nExpert}), found ${cfg.nExpertUsed}`);
  if (cfg.nHashLayers > cfg.nLayer) v.push(`${key('hash_layer_count')}: expected <= block_count ${cfg.nLayer}, found ${cfg.nHashLayers}`);
  if (cfg.nHc === 0) v.push(`${key('hyper_connection.count')}: expected > 0, found 0`);
  for (const r of CONFIG_RANGES) {
    const got = cfg[r.field] as number;
    if (!r.ok(got, cfg)) v.push(`${key(CONFIG_KEYS.find((k) => k.field === r.field)!.key)}: expected ${r.want}, found ${String(got)}`);
  }
  const badClamp = cfg.swigluClamp.findIndex((x) => !(Number.isFinite(x) && x > 0));
  if (badClamp >= 0) v.push(`${key('swiglu_clamp_exp')}: expected a finite value > 0 on every layer, found ${cfg.swigluClamp[badClamp]} at layer ${badClamp}`);
  const want = Array.from({ length: cfg.nLayer }, (_, il) => ds4CompressRatio(il));
  const bad = want.findIndex((r, il) => cfg.compressRatios[il] !== r);
  if (bad >= 0) {
    v.push(`${key('attention.compress_ratios')}: expected ${want.join(',')} (0,0 then 4,128 alternating), found ${cfg.compressRatios.join(',')} (first mismatch at layer ${bad})`);
  }
}

function checkStrict(cfg: Ds4Config, v: string[]) {
  for (const [field, want] of Object.entries(DS4_FLASH)) {
    const configField = field === 'swigluClampValue' ? 'swigluClamp' : field;
    const key = `metadata deepseek4.${CONFIG_KEYS.find((k) => k.field === configField)?.key}`;
    if (field === 'swigluClampValue') {
      const bad = cfg.swigluClamp.findIndex((x) => !closeF32(x, want as number));
      if (bad >= 0) v.push(`${key}: expected ${want} on every layer for DeepSeek V4 Flash, found ${cfg.swigluClamp[bad]} at layer ${bad}`);
      continue;
    }
    const got = cfg[field as keyof Ds4Config];
    const ok = typeof want === 'number' && !Number.isInteger(want) ? closeF32(got as number, want) : got === want;
    if (!ok) v.push(`${key}: expected ${want} for DeepSeek V4 Flash, found ${String(got)}`);
  }
}

function checkTensor(m: GgufModel, e: TensorExpectation, v: string[]) {
  const t = m.tensors.get(e.name);
  const wantType = e.types.map(typeName).join(' or ');
  if (!t) {
    if (!e.optional) v.push(`tensor ${e.name}: missing (expected ${wantType} [${e.dims.join(', ')}])`);
    return;
  }
  if (!e.types.includes(t.type)) v.push(`tensor ${e.name}: type ${typeName(t.type)}, expected ${wantType}`);
  if (t.dims.length !== e.dims.length || t.dims.some((d, i) => d !== e.dims[i])) {
    v.push(`tensor ${e.name}: dims [${t.dims.join(', ')}], expected [${e.dims.join(', ')}]`);
  }
}

/** Hash routing reads expert ids straight from the table: every id must name an existing expert. */
function checkTid2eid(m: GgufModel, cfg: Ds4Config, name: string, v: string[]) {
  const t = m.tensors.get(name);
  if (!t || t.type !== GGMLType.I32 || t.dims[0] !== cfg.nExpertUsed || t.dims[1] !== cfg.nVocab) return;
  const [perToken, tokens] = t.dims;
  const b = m.bytes(t.offset, t.nbytes);
  // tensor data is aligned (at least 32 bytes), so an int32 view of it is too
  const ids = new Int32Array(b.buffer, b.byteOffset, perToken * tokens);
  const i = firstOutside(ids, cfg.nExpert);
  if (i >= 0) v.push(`tensor ${name}: token ${Math.floor(i / perToken)} maps to expert ${ids[i]}, expected 0..${cfg.nExpert - 1}`);
}

/**
 * The index of the first id outside [0, n), or -1. A loop of its own over the whole table: V8 optimizes it
 * at once, where the scan inlined in 1 MB pieces took ~20 ms of a run's start for three tables.
 */
function firstOutside(ids: Int32Array, n: number): number {
  for (let i = 0; i < ids.length; i++) if (ids[i] < 0 || ids[i] >= n) return i;
  return -1;
}

/**
 * The tokenizer tables the prompt path reads, when the file has them (a model run on --tokens needs
 * none): every id they can produce must have an embedding row (tokens <= vocab_size), ds4's seven
 * special tokens must be there (resolved by text, ds4 vocab_load), and the declared BOS/EOS ids, if
 * present, must be ids of this vocabulary.
 */
function checkTokenizer(m: GgufModel, cfg: Ds4Config, v: string[]) {
  // read in place: validating a model a --tokens run loads never decodes its vocabulary
  const strings = (key: string) => {
    if (!m.metadataTypes[key]) return undefined;
    const s = m.stringArray(key);
    if (!s) v.push(`metadata ${key}: not an array of strings`);
    return s;
  };
  const tokens = strings('tokenizer.ggml.tokens');
  strings('tokenizer.ggml.merges');
  if (tokens) {
    if (tokens.length > cfg.nVocab) v.push(`metadata tokenizer.ggml.tokens: ${tokens.length} tokens, more than vocab_size ${cfg.nVocab} (ids past it have no embedding row)`);
    const have = tokens.present(Object.values(SPECIALS));
    for (const text of Object.values(SPECIALS)) if (!have.has(text)) v.push(`metadata tokenizer.ggml.tokens: required special token ${text} is missing`);
  }
  for (const k of ['tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id']) {
    const id = m.metadata[k];
    if (id === undefined) continue;
    const n = Number(id);
    if (!Number.isInteger(n) || n < 0 || n >= cfg.nVocab) v.push(`metadata ${k}: expected a token id 0..${cfg.nVocab - 1}, found ${String(id)}`);
  }
}

/**
 * What a valid DS4 model may hold that ds4-diff cannot run: its reference and simulated device compute
 * the routed experts of the q2 GGUF only (IQ2_XXS gate/up, Q2_K down: reference/ffn.ts, ascend/
 * orchestrator.ts), while ds4 also accepts Q4_K experts (the q4 GGUF). Checked here, where a model is
 * loaded, so that every command refuses such a file at once and `inspect` says so.
 */
function checkRunnable(m: GgufModel, cfg: Ds4Config): string[] {
  const out: string[] = [];
  for (let il = 0; il < cfg.nLayer; il++) {
    for (const [name, want] of [['ffn_gate_exps', GGMLType.IQ2_XXS], ['ffn_up_exps', GGMLType.IQ2_XXS], ['ffn_down_exps', GGMLType.Q2_K]] as const) {
      const t = m.tensors.get(`blk.${il}.${name}.weight`);
      if (t && t.type !== want) out.push(`tensor blk.${il}.${name}.weight is ${typeName(t.type)}: ds4-diff's reference and device run routed experts of ${typeName(want)} only (the q2 GGUF's)`);
    }
  }
  return out;
}

export interface ValidationResult {
  config?: Ds4Config;
  violations: string[];
  /** valid for ds4, but not runnable by ds4-diff (see checkRunnable) */
  unsupported: string[];
  /** tensors in the file that ds4 never binds (reported, not a violation) */
  unused: string[];
}

export function validateModel(m: GgufModel, opts: { strictDs4Flash?: boolean } = {}): ValidationResult {
  const { config, problems } = readConfig(m);
  const violations = [...problems];
  if (!config) return { violations, unused: [], unsupported: [] };
  checkConfig(config, m, violations);
  checkTokenizer(m, config, violations);
  if (opts.strictDs4Flash) checkStrict(config, violations);
  const layout = ds4TensorLayout(config);
  for (const e of layout) checkTensor(m, e, violations);
  for (let il = 0; il < config.nLayer; il++) {
    const gate = m.tensors.get(`blk.${il}.ffn_gate_exps.weight`);
    const up = m.tensors.get(`blk.${il}.ffn_up_exps.weight`);
    if (gate && up && gate.type !== up.type) {
      violations.push(`tensor blk.${il}.ffn_up_exps.weight: type ${typeName(up.type)}, expected ${typeName(gate.type)} (same as ffn_gate_exps)`);
    }
    if (il < config.nHashLayers) checkTid2eid(m, config, `blk.${il}.ffn_gate_tid2eid.weight`, violations);
  }
  const known = new Set(layout.map((e) => e.name));
  const unused = [...m.tensors.keys()].filter((n) => !known.has(n));
  return { config, violations, unused, unsupported: checkRunnable(m, config) };
}
