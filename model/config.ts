// DS4 model configuration, read from the GGUF's `deepseek4.*` metadata (catalog §1).
// Dims are read, never hard-coded, so a tiny model with the real structure runs through everything.
// OWNER: model helper (GGUF/config). The interface below is the contract other folders rely on.

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
