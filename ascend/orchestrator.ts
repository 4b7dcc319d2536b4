// The device path (issue 5): the DS4 graph run on the (simulated) Ascend device from device kernels
// only. Tokens go through in position order (decode semantics, what ds4's prefill computes too),
// layers 0..lastLayer, then the output head — or, `prefill`, as ds4-ascend's batched prefill (forward()). Every intermediate stays in device buffers; the only
// readbacks are the stage captures (counted in readbackBytes) and the 6 selected expert ids per
// layer/token, which the host needs to stage those experts' weight slices (ds4-ascend's expert
// cache does the same; counted in selectionReadbackBytes).
//
// The executor (DeviceGraph) is a launch loop: every launch is named (ascend/kernels.ts derives the
// argument order from the kernel's signature) and goes through the no-host-fallback gate (gate.ts);
// plug-ins act before and after each launch and at each capture (hooks.ts): host swap (bisect's kernel
// swap, host.ts), fault injection (faults.ts), producer tracking (which launches produced a capture) and
// teacher forcing (after a stage is captured its buffer is overwritten with the reference's value, so
// every downstream kernel consumes reference inputs and each stage's error is its own). Exceptions to
// "only captures are read back": host runs and fault emulation move bytes by design.
import { throwIfCancelled } from '../diff/cancel.ts';
import type { FallbackEntry } from '../diff/manifest.ts';
import type { StageRecord, Tap } from '../model/stages.ts';
import type { Ds4Config } from '../model/config.ts';
import { Ds4DiffError, EXIT, badInput } from '../model/errors.ts';
import { tensorInfo, type GgufModel, type TensorInfo } from '../model/gguf.ts';
import { GGMLType, typeName } from '../model/quant/types.ts';
import { resolveStage } from '../model/stages.ts';
import { openBackend, planBackend, type DeviceBackend } from './backend.ts';
import { FaultPlugin, WINDOW_POOL_KERNEL, type FaultKind, type Injection } from './faults.ts';
import { DeviceGate, type GraphSite } from './gate.ts';
import { Launch, type Capture, type DevicePlugin } from './hooks.ts';
import { HostSwap, hostRun } from './host.ts';
import type { Scalars } from './kernels.ts';
import type { KernelStat } from './native.ts';

export interface DeviceRunOptions {
  model: GgufModel;
  cfg: Ds4Config;
  tokens: number[];
  lastLayer?: number;
  kernelMath?: 'ascend' | 'exact';
  allowHostFallback?: boolean;
  disabledKernels?: string[];
  tap?: Tap;
  filter?: (stage: string, layer: number, pos: number) => boolean;
  teacher?: (stage: string, layer: number, pos: number) => Float32Array | Int32Array | undefined;
  onProgress?: (msg: string) => void;
  /** backend name (default 'sim'); addon path override for tests */
  backend?: string;
  addonPath?: string;
  /** kernels whose primitives run on the host even with the gate on (bisect's kernel swap; ledger reason 'kernel swap (bisect)') */
  hostKernels?: string[];
  /** planted faults (ascend/faults.ts parseInject); applied in free-running and teacher-forced passes alike */
  inject?: Injection[];
  /**
   * Called at every capture site (tapped or not) with the kernels launched since the previous capture:
   * the launches that produced this stage (bisect maps an erring stage to its kernels with it).
   */
  producers?: (stage: string, layer: number, pos: number, kernels: readonly string[]) => void;
  /** run on this session's device, reusing the weights earlier passes uploaded (openDeviceSession) */
  session?: DeviceSession;
  /**
   * Run the prompt as ds4-ascend's batched prefill (layer by layer, every position in one launch where
   * its kernels batch) instead of in decode order, one token at a time (the default).
   */
  prefill?: boolean;
  /** positions whose output head is evaluated (default: the last token; with `generate`, every generating step) */
  headPositions?: number[];
  /**
   * Generate this many tokens greedily after `tokens` (ds4's decode loop at temperature 0): the head runs at the
   * last prompt position and at every decode step, its top-1 (lowest id on a tie) is the next token. The last
   * generated token is not run through the model (nothing reads it).
   */
  generate?: number;
}

/** A capture holds NaN: the run stops here; `kernels` are the launches that produced the stage. */
export class KernelNanError extends Ds4DiffError {
  constructor(readonly stage: string, readonly layer: number, readonly pos: number, readonly element: number, readonly kernels: readonly string[]) {
    super(`kernel ${kernels.at(-1) ?? 'unknown'} produced NaN at element ${element} of stage ${stage} (layer ${layer}, pos ${pos})`, EXIT.cannotEvaluate);
  }
}

export interface DeviceRunResult {
  /** logits of the last head position */
  logits: Float32Array;
  /** the tokens run, then the generated ones (`generate`) */
  tokens: number[];
  ledger: FallbackEntry[];
  stats: Record<string, KernelStat>;
  readbackBytes: number;
  selectionReadbackBytes: number;
}

const EXPERT_CACHE = 32; // expert slices kept on the device per expert tensor (LRU over gate/up/down: 3×)
const DENSE_CACHE_BYTES = 2 * 1024 ** 3; // ds4-ascend dense weight cache limit per device

/** One device buffer with its element count. */
interface Buf {
  h: number;
  n: number;
}

/**
 * A pass's device memory: named scratch buffers reused across tokens (the stream is in order) and the
 * weight cache. `dry`: nothing is read from the model (the walk before a run).
 */
class DeviceMemory {
  private scratch = new Map<string, Buf>();
  private allocated: number[] = [];
  protected readonly cache: WeightCache;

  constructor(readonly dev: DeviceBackend, readonly o: DeviceRunOptions, readonly dry: boolean) {
    if (o.session && o.session.cache.fingerprint !== o.model.fingerprint) throw new Error('a device session serves the model it was opened for');
    this.cache = (!dry && o.session?.cache) || newWeightCache(o.model);
  }

  /** A named scratch buffer of n elements × 4 bytes, reused across tokens. */
  buf(name: string, n: number): Buf {
    const b = this.scratch.get(name);
    if (b && b.n === n) return b;
    if (b) this.freeNow(b.h);
    const nb = { h: this.alloc(Math.max(4, n * 4), name), n };
    this.scratch.set(name, nb);
    return nb;
  }

  /**
   * Free a buffer that queued launches may still read: synchronize first, or the sanitizer rightly
   * reports a use-after-free (the seeds' RoPE-table bug class).
   */
  private freeNow(h: number): void {
    this.dev.synchronize();
    this.dev.free(h);
    this.allocated = this.allocated.filter((x) => x !== h);
  }

  private alloc(bytes: number, tag: string): number {
    const h = this.dev.alloc(bytes, tag);
    this.allocated.push(h);
    return h;
  }

  private tensor(name: string): TensorInfo {
    if (!this.o.model.tensors.has(name)) throw badInput(`${this.o.model.path}: tensor ${name} is missing`);
    return tensorInfo(this.o.model, name);
  }

  tensorType(name: string): GGMLType {
    return this.tensor(name).type;
  }

  has(name: string): boolean {
    return this.o.model.tensors.has(name);
  }

  /**
   * The raw bytes of a tensor (quantized blocks as stored in the GGUF), uploaded on first use and kept
   * in an LRU of at most DENSE_CACHE_BYTES, like ds4-ascend's dense weight cache (≤ 2 GiB per device).
   */
  weight(name: string, type?: GGMLType): number {
    const hit = this.cache.weights.get(name);
    if (hit) {
      this.cache.weights.delete(name);
      this.cache.weights.set(name, hit);
      return hit.h;
    }
    const t = this.tensor(name);
    if (type !== undefined && t.type !== type) throw badInput(`${this.o.model.path}: ${name} is ${typeName(t.type)}, the device kernels need ${typeName(type)}`);
    while (this.cache.weights.size > 0 && this.cache.weightBytes + t.nbytes > DENSE_CACHE_BYTES) {
      const [oldName, old] = this.cache.weights.entries().next().value as [string, { h: number; bytes: number }];
      this.cache.weights.delete(oldName);
      this.cache.weightBytes -= old.bytes;
      this.freeNow(old.h);
    }
    const h = this.place(t.offset, t.nbytes, name);
    this.cache.weights.set(name, { h, bytes: t.nbytes });
    this.cache.weightBytes += t.nbytes;
    return h;
  }

  /**
   * `bytes` model bytes at file `offset` on the device: the mapped file itself when the device reads the
   * model's mapping (nothing copied: a 1 GB embedding costs nothing, only the rows a kernel reads are
   * touched), else allocated and uploaded.
   */
  private place(offset: number, bytes: number, tag: string): number {
    const mapped = this.dry ? undefined : this.dev.mapWeight(this.o.model, offset, bytes, tag);
    if (mapped !== undefined) return mapped;
    const h = this.dev.alloc(bytes, tag);
    if (!this.dry) this.dev.upload(h, this.o.model.read(offset, bytes));
    return h;
  }

  /** Expert e's slice of a [cols, rows, n_expert] tensor, uploaded on demand and kept in an LRU. */
  expert(name: string, e: number, type: GGMLType): { h: number; bytes: number } {
    const t = this.tensor(name);
    if (t.type !== type) throw new Ds4DiffError(`host fallback disabled: routed_moe_iq2_q2 (${name} is ${typeName(t.type)}, the device MoE kernels need ${typeName(type)})`, EXIT.hostFallback);
    const bytes = t.nbytes / t.dims[2];
    const key = `${name}#${e}`;
    let h = this.cache.experts.get(key);
    if (h !== undefined) {
      this.cache.experts.delete(key);
    } else {
      if (this.cache.experts.size >= EXPERT_CACHE * 3) {
        const [oldKey, oldH] = this.cache.experts.entries().next().value as [string, number];
        this.cache.experts.delete(oldKey);
        this.freeNow(oldH);
      }
      h = this.place(t.offset + e * bytes, bytes, key);
    }
    this.cache.experts.set(key, h);
    return { h, bytes };
  }

  /** Free this pass's buffers; the weights too unless a session keeps them for the next pass. */
  release(): void {
    // a pass stopped by an error may leave launches queued that read these buffers: drain them first
    // (their own failure, if any, is not this pass's story — the error that stopped it is)
    try {
      this.dev.synchronize();
    } catch {
      /* reported by the pass already */
    }
    for (const h of this.allocated) this.dev.free(h);
    this.allocated = [];
    if (this.dry || !this.o.session) freeWeightCache(this.dev, this.cache);
  }
}

/** The executor: named launches through the gate with the plug-ins around them, and the captures. */
class DeviceGraph extends DeviceMemory {
  readonly gate: DeviceGate;
  readbackBytes = 0;
  selectionReadbackBytes = 0;

  constructor(dev: DeviceBackend, o: DeviceRunOptions, private readonly plugins: DevicePlugin[], private readonly faults: FaultPlugin, dry = false) {
    super(dev, o, dry);
    const disabled = new Set(o.disabledKernels ?? []);
    const names = [...dev.catalog.kernels.keys()];
    for (const d of disabled) if (!names.includes(d)) throw badInput(`--disable-kernel ${d}: no such kernel (see ds4-diff kernels)`);
    this.gate = new DeviceGate(new Set(names.filter((n) => !disabled.has(n))), !!o.allowHostFallback);
  }

  /** The graph's own faults (expert staging, window timing): the injection of `kind` on `kernel` in `layer`, if any. */
  fault(kernel: string, kind: FaultKind, layer: number): Injection | undefined {
    return this.faults.planted(kernel, kind, layer);
  }

  /** Teacher-forced: captured stages are overwritten with the reference's values. */
  get teaching(): boolean {
    return !!this.o.teacher && !this.dry;
  }

  /**
   * Launch `kernel` with named buffers and scalars through the gate: a missing kernel stops the run
   * (or, allowed, runs on the host and is a ledger entry); a plug-in may claim it for the host.
   */
  launch(kernel: string, bufs: Record<string, Buf | number>, scalars: Scalars, site: GraphSite, primitive = kernel): void {
    const handles = Object.fromEntries(Object.entries(bufs).map(([name, b]) => [name, typeof b === 'number' ? b : b.h]));
    const l = new Launch(this.dev, this.dev.catalog.get(kernel), handles, scalars, site, primitive);
    for (const p of this.plugins) p.beforeLaunch?.(l);
    if (!this.dry) {
      const host = hostRun(this.dev, l, () => {
        throw new Ds4DiffError(`no host implementation of ${primitive} in the simulator (layer ${site.layer}, pos ${site.pos}, stage ${site.stage}); run without --disable-kernel ${kernel}`, EXIT.cannotEvaluate);
      });
      const c = this.dev.catalog;
      if (l.onHost) this.gate.runOnHost(primitive, site, host, l.onHost);
      else this.gate.dispatch(primitive, [kernel], site, () => this.dev.launch(kernel, c.bufferArgs(kernel, handles), c.scalarArgs(kernel, scalars), l.faults.length ? { faults: l.faults } : undefined), host);
    }
    for (const p of this.plugins) p.afterLaunch?.(l);
  }

  /**
   * Capture stage `stage` from buffer b (elements [off, off+n)): the plug-ins see it before and after it
   * is read back. NaN in a capture is reported naming the kernel that produced it.
   */
  capture(stage: string, layer: number, pos: number, b: Buf, n = b.n, off = 0, i32 = false, shape?: number[]): void {
    const c: Capture = { stage, layer, pos, handle: b.h, n, off, i32, kernels: [] };
    for (const p of this.plugins) p.atCapture?.(c);
    if (!this.dry && this.o.tap && (!this.o.filter || this.o.filter(stage, layer, pos))) {
      const raw = this.dev.download(b.h, n * 4, off * 4);
      this.readbackBytes += n * 4;
      const copy = new Uint8Array(n * 4);
      copy.set(raw.subarray(0, n * 4));
      const values = i32 ? new Int32Array(copy.buffer) : new Float32Array(copy.buffer);
      if (!i32) {
        const bad = (values as Float32Array).findIndex((v) => Number.isNaN(v));
        if (bad >= 0) throw new KernelNanError(stage, layer, pos, bad, c.kernels);
      }
      const def = resolveStage(stage);
      let sh = shape ?? (def ? def.shape(this.o.cfg, { layer, n }) : [n]);
      if (sh.reduce((a, v) => a * v, 1) !== n) sh = [n];
      const rec: StageRecord = { stage, layer, pos, token: this.o.tokens[pos], dtype: i32 ? 'i32' : 'f32', shape: sh, values };
      this.o.tap(rec);
    }
    for (const p of this.plugins) p.afterCapture?.(c);
  }
}

/**
 * Producer tracking: the kernels launched since the previous capture produced this one (several stages
 * read from one launch, the HC split's pre/post/comb, share its producers). Kernels that produce no
 * stage (fill, copy: data movement) are not producers.
 */
class ProducerTracking implements DevicePlugin {
  private pending: string[] = [];
  private last: readonly string[] = [];

  constructor(private readonly report?: DeviceRunOptions['producers']) {}

  beforeLaunch(l: Launch): void {
    if (l.sig.stages.length > 0 && !this.pending.includes(l.kernel)) this.pending.push(l.kernel);
  }

  atCapture(c: Capture): void {
    if (this.pending.length) this.last = this.pending;
    this.pending = [];
    c.kernels = this.last;
    this.report?.(c.stage, c.layer, c.pos, this.last);
  }
}

/** Teacher forcing: a captured stage's buffer is overwritten with the reference's value of it. */
class TeacherForcing implements DevicePlugin {
  constructor(private readonly dev: DeviceBackend, private readonly teacher: NonNullable<DeviceRunOptions['teacher']>) {}

  afterCapture(c: Capture): void {
    const t = this.teacher(c.stage, c.layer, c.pos);
    if (!t) return;
    if (t.length !== c.n) throw badInput(`teacher value of ${c.stage} (layer ${c.layer}, pos ${c.pos}) has ${t.length} values, the device stage ${c.n}`);
    this.dev.upload(c.handle, t, c.off * 4);
  }
}

/** Weights and expert slices on the device, LRU-ordered (Map insertion order). */
interface WeightCache {
  fingerprint: string;
  weights: Map<string, { h: number; bytes: number }>;
  weightBytes: number;
  experts: Map<string, number>;
}

const newWeightCache = (model: GgufModel): WeightCache => ({ fingerprint: model.fingerprint, weights: new Map(), weightBytes: 0, experts: new Map() });

function freeWeightCache(dev: DeviceBackend, c: WeightCache): void {
  dev.synchronize();
  for (const { h } of c.weights.values()) dev.free(h);
  for (const h of c.experts.values()) dev.free(h);
  c.weights.clear();
  c.experts.clear();
  c.weightBytes = 0;
}

/**
 * One device kept across passes over one model, with its uploaded weights: bisect makes many passes
 * over the same case, and on real dimensions uploading the weights dominates a pass (≈7 of 8 s for
 * ds4-flash layer 0). Close it when done.
 */
export interface DeviceSession {
  readonly dev: DeviceBackend;
  readonly cache: WeightCache;
  close(): void;
}

export function openDeviceSession(model: GgufModel, backend = 'sim', addonPath?: string): DeviceSession {
  const dev = openBackend(backend, addonPath);
  const cache = newWeightCache(model);
  return { dev, cache, close: () => freeWeightCache(dev, cache) };
}

/** RoPE scalars of layer il at `pos` (catalog S5): compressed layers use the YaRN-scaled base. */
function ropeScalars(cfg: Ds4Config, il: number, pos: number, inverse: boolean): Scalars {
  const compressed = cfg.compressRatios[il] !== 0;
  const base = compressed && cfg.compressRopeFreqBase > 0 ? cfg.compressRopeFreqBase : cfg.ropeFreqBase;
  const freqScale = compressed && cfg.ropeScalingFactor > 0 ? Math.fround(1 / cfg.ropeScalingFactor) : 1;
  const ext = compressed && cfg.ropeScalingFactor > 1 ? 1 : 0;
  // ggml YaRN: mscale = attn_factor·(1 + 0.1·ln(1/freq_scale)); ds4 sets attn_factor so mscale = 1
  const attnFactor = ext ? 1 / (1 + 0.1 * Math.log(1 / freqScale)) : 1;
  return {
    n_rot: cfg.nRot, pos0: pos, freq_base: base, freq_scale: freqScale, ext_factor: ext, attn_factor: attnFactor,
    n_ctx_orig: compressed ? cfg.ropeOrigCtx : 0, beta_fast: cfg.yarnBetaFast, beta_slow: cfg.yarnBetaSlow, inverse: inverse ? 1 : 0,
  };
}

/** A compressor lane's device state (catalog S7): rolling kv/score rows and the compressed-row cache. */
interface CompressorLane {
  lane: 'attn' | 'indexer';
  ratio: number;
  dim: number;
  width: number;
  kv: Buf;
  score: Buf;
  cache: Buf;
  cap: number;
  /** compressed rows stored so far */
  n: number;
}

interface LayerState {
  raw: Buf;
  attn?: CompressorLane;
  index?: CompressorLane;
}

function newLane(g: DeviceGraph, il: number, lane: 'attn' | 'indexer', ratio: number, dim: number, ctx: number): CompressorLane {
  const coff = ratio === 4 ? 2 : 1, width = coff * dim, cap = Math.floor(ctx / ratio) + 2;
  const kv = g.buf(`${lane}_state_kv_${il}`, coff * ratio * width), score = g.buf(`${lane}_state_score_${il}`, coff * ratio * width);
  const site: GraphSite = { layer: il, pos: 0, stage: lane === 'attn' ? 'attn_comp_kv' : 'index_comp_kv' };
  // empty state: kv 0, score DS4_NEG_INF (ds4.c compressor state init)
  g.launch('fill', { out: kv }, { value: 0, count: kv.n }, site);
  g.launch('fill', { out: score }, { value: -1e30, count: score.n }, site);
  return { lane, ratio, dim, width, kv, score, cache: g.buf(`${lane}_comp_cache_${il}`, cap * dim), cap, n: 0 };
}

/** One token through a compressor lane; stores and captures the compressed row when the window closes. */
function compressorStep(g: DeviceGraph, il: number, pos: number, norm: Buf, c: CompressorLane): void {
  const { cfg } = g.o;
  const E = cfg.nEmbd;
  const tp = c.lane === 'attn' ? `blk.${il}.attn_compressor_` : `blk.${il}.indexer_compressor_`;
  const sp = c.lane === 'attn' ? 'attn_comp' : 'index_comp';
  const site = (stage: string): GraphSite => ({ layer: il, pos, stage });
  const kvc = g.buf(`${sp}_kv`, c.width), scc = g.buf(`${sp}_score`, c.width);
  g.launch('matmul_f16', { out: kvc, w: g.weight(`${tp}kv.weight`, GGMLType.F16), x: norm }, { in_dim: E, out_dim: c.width, n_tok: 1 }, site(`${sp}_kv`), 'compressor_prefill');
  g.capture(`${sp}_kv`, il, pos, kvc);
  g.launch('matmul_f16', { out: scc, w: g.weight(`${tp}gate.weight`, GGMLType.F16), x: norm }, { in_dim: E, out_dim: c.width, n_tok: 1 }, site(`${sp}_score`), 'compressor_prefill');
  const ape = g.tensorType(`${tp}ape.weight`);
  if (ape !== GGMLType.F16 && ape !== GGMLType.F32) throw badInput(`${tp}ape.weight is ${typeName(ape)}, expected F16 or F32`);
  g.launch('compressor_set_rows', { state_kv: c.kv, state_score: c.score, kv: kvc, score: scc, ape: g.weight(`${tp}ape.weight`) },
    { width: c.width, ratio: c.ratio, pos, ape_is_f16: ape === GGMLType.F16 ? 1 : 0 }, site(`${sp}_score`), 'compressor_prefill');
  g.capture(`${sp}_score`, il, pos, scc);
  if (g.teaching) {
    // the state row must hold the teacher's score too (set_rows copied the device's before the capture)
    const row = c.ratio === 4 ? c.ratio + (pos % c.ratio) : pos % c.ratio;
    g.launch('copy', { dst: c.score, src: scc }, { dst_offset: row * c.width * 4, src_offset: 0, bytes: c.width * 4 }, site(`${sp}_score`));
  }
  // emit-pos (issue 6): the faulty compressor closes the window one token late, after the next token's
  // row has overwritten the state; the row is still labelled with the window it belongs to
  const late = g.fault(WINDOW_POOL_KERNEL, 'emit-pos', il) !== undefined;
  const closePos = late ? pos - 1 : pos;
  if (closePos < 0 || (closePos + 1) % c.ratio !== 0) return;
  const pooled = g.buf(`${sp}_pooled`, c.dim), row = g.buf(`${sp}_rownorm`, c.dim);
  g.launch(WINDOW_POOL_KERNEL, { row: pooled, state_kv: c.kv, state_score: c.score }, { dim: c.dim, ratio: c.ratio }, site(`${sp}_row`), 'compressor_prefill');
  g.launch('rms_norm_weight', { out: row, x: pooled, w: g.weight(`${tp}norm.weight`, GGMLType.F32) }, { n: c.dim, rows: 1, eps: cfg.rmsEps }, site(`${sp}_row`));
  g.launch('rope_tail', { x: row }, { n_tok: 1, n_head: 1, head_dim: c.dim, ...ropeScalars(cfg, il, closePos + 1 - c.ratio, false) }, site(`${sp}_row`));
  if (c.lane === 'attn') g.launch('fp8_kv_quantize', { x: row }, { n_tok: 1, head_dim: c.dim, n_rot: cfg.nRot }, site(`${sp}_row`));
  else g.launch('indexer_qat', { x: row }, { rows: 1 }, site(`${sp}_row`), 'indexer_qat');
  if (c.ratio === 4) g.launch('compressor_shift_ratio4', { state_kv: c.kv, state_score: c.score }, { width: c.width }, site(`${sp}_row`), 'compressor_prefill_state_ratio4');
  if (c.n >= c.cap) throw badInput(`layer ${il}: compressed ${c.lane} cache capacity (${c.cap} rows) exceeded`);
  g.launch('store_raw_kv', { raw: c.cache, kv: row }, { raw_cap: c.cap, pos0: c.n, n_tok: 1, head_dim: c.dim }, site(`${sp}_row`));
  g.capture(`${sp}_row`, il, closePos, c.cache, c.dim, c.n * c.dim);
  c.n++;
}

/**
 * S8 ratio-4 layers: indexer q (q_b of q_lora_norm, RoPE, QAT), head weights (proj of attn_norm,
 * scaled), scores over the compressed indexer rows and top-k → the additive attention mask. None
 * while every compressed row fits in top-k (ds4 attends to all of them then).
 */
function indexerMask(g: DeviceGraph, il: number, pos: number, norm: Buf, qrn: Buf, c: CompressorLane): Buf | undefined {
  const { cfg } = g.o;
  const n = c.n, topK = Math.min(cfg.indexerTopK, n);
  if (n === 0 || topK === n) return undefined;
  const IH = cfg.indexerHeads, ID = cfg.indexerHeadDim;
  const p = `blk.${il}.indexer.`;
  const site = (stage: string): GraphSite => ({ layer: il, pos, stage });
  const iq = g.buf('index_q', IH * ID), iw = g.buf('index_w', IH), scores = g.buf('index_scores', n), top = g.buf('index_topk', topK), mask = g.buf('index_mask', n);
  g.launch('matmul_f16', { out: iq, w: g.weight(`${p}attn_q_b.weight`, GGMLType.F16), x: qrn }, { in_dim: cfg.qLoraRank, out_dim: IH * ID, n_tok: 1 }, site('index_q'));
  g.launch('rope_tail', { x: iq }, { n_tok: 1, n_head: IH, head_dim: ID, ...ropeScalars(cfg, il, pos, false) }, site('index_q'));
  g.launch('indexer_qat', { x: iq }, { rows: IH }, site('index_q'), 'indexer_qat');
  g.capture('index_q', il, pos, iq);
  g.launch('matmul_f16', { out: iw, w: g.weight(`${p}proj.weight`, GGMLType.F16), x: norm }, { in_dim: cfg.nEmbd, out_dim: IH, n_tok: 1 }, site('index_w'));
  g.launch('indexer_weights_scale', { w: iw }, { n_heads: IH, head_dim: ID }, site('index_w'), 'indexer_score_one');
  g.capture('index_w', il, pos, iw);
  g.launch('indexer_scores', { scores, q: iq, w: iw, k: c.cache }, { n, heads: IH, dim: ID }, site('index_scores'), 'indexer_score_one');
  g.capture('index_scores', il, pos, scores, n, 0, false, [n]);
  g.launch('indexer_topk', { topk: top, mask, scores }, { n, k: topK }, site('index_topk'), 'indexer_topk');
  g.capture('index_topk', il, pos, top, topK, 0, true, [topK]);
  return mask;
}

/**
 * The positions a step of the graph runs at once: one token (decode order) or the whole prompt (the
 * batched prefill); buffers hold one row per position and every position's stage is captured from its row.
 */
type Rows = readonly number[];

/** Capture stage `stage` of every position from its row (`n` values, rows `stride` apart, from `off`). */
function captureRows(g: DeviceGraph, stage: string, il: number, rows: Rows, b: Buf, n: number, off = 0, stride = n, i32 = false): void {
  rows.forEach((pos, r) => g.capture(stage, il, pos, b, n, off + r * stride, i32));
}

/** Row r of a [rows × width] buffer as a buffer of its own (the buffer itself when it holds one row). */
function rowOf(g: DeviceGraph, b: Buf, r: number, width: number, name: string, site: GraphSite): Buf {
  if (b.n === width) return b;
  const row = g.buf(name, width);
  g.launch('copy', { dst: row, src: b }, { dst_offset: 0, src_offset: r * width * 4, bytes: width * 4 }, site);
  return row;
}

/** Write a one-row buffer into row r of a [rows × width] buffer (nothing when they are the same buffer). */
function setRow(g: DeviceGraph, b: Buf, r: number, row: Buf, width: number, site: GraphSite): void {
  if (b.h !== row.h) g.launch('copy', { dst: b, src: row }, { dst_offset: r * width * 4, src_offset: 0, bytes: width * 4 }, site);
}

/**
 * S1+S2 / S13: the sublayer's input: HC pre of `hc` with the side's fn/scale/base (the weighted sum of
 * the streams, attn_cur/ffn_cur) and its RMS norm (attn_norm/ffn_norm); returns it and the split (pre|post|comb).
 */
function sublayerInput(g: DeviceGraph, side: 'attn' | 'ffn', il: number, rows: Rows, hc: Buf): { norm: Buf; split: Buf } {
  const { cfg } = g.o;
  const E = cfg.nEmbd, H = cfg.nHc, M = 2 * H + H * H, T = rows.length;
  const p = `blk.${il}.hc_${side}_`;
  const site = (stage: string): GraphSite => ({ layer: il, pos: rows[0], stage });
  const flat = g.buf('hc_flat', T * H * E), mix = g.buf(`hc_${side}_mix`, T * M), split = g.buf(`hc_${side}_split`, T * M), cur = g.buf(`${side}_cur`, T * E);
  g.launch('rms_norm_plain', { out: flat, x: hc }, { n: H * E, rows: T, eps: cfg.rmsEps }, site(`hc_${side}_mix`));
  g.launch('matmul_f16', { out: mix, w: g.weight(`${p}fn.weight`, GGMLType.F16), x: flat }, { in_dim: H * E, out_dim: M, n_tok: T }, site(`hc_${side}_mix`));
  captureRows(g, `hc_${side}_mix`, il, rows, mix, M);
  if (H !== 4) throw new Ds4DiffError(`host fallback disabled: hc_split_sinkhorn (layer ${il}, pos ${rows[0]}, stage hc_${side}_pre_w); the device kernel needs n_hc = 4, got ${H}`, EXIT.hostFallback);
  g.launch('hc_split_sinkhorn4', { out: split, mix, scale: g.weight(`${p}scale.weight`, GGMLType.F32), base: g.weight(`${p}base.weight`, GGMLType.F32) },
    { rows: T, sinkhorn_iters: cfg.sinkhornIters, eps: cfg.hcEps }, site(`hc_${side}_pre_w`), 'hc_split_sinkhorn');
  rows.forEach((pos, r) => {
    g.capture(`hc_${side}_pre_w`, il, pos, split, H, r * M);
    g.capture(`hc_${side}_post_w`, il, pos, split, H, r * M + H);
    g.capture(`hc_${side}_comb`, il, pos, split, H * H, r * M + 2 * H);
  });
  g.launch('hc_weighted_sum4', { out: cur, residual: hc, weights: split }, { n_embd: E, rows: T, weight_stride: M }, site(`${side}_cur`), 'hc_weighted_sum');
  captureRows(g, `${side}_cur`, il, rows, cur, E);
  const norm = g.buf(`${side}_norm`, T * E);
  g.launch('rms_norm_weight', { out: norm, x: cur, w: g.weight(`blk.${il}.${side}_norm.weight`, GGMLType.F32) }, { n: E, rows: T, eps: cfg.rmsEps }, site(`${side}_norm`));
  captureRows(g, `${side}_norm`, il, rows, norm, E);
  return { norm, split };
}

/** S12/S17 HC post: the sublayer's output y expanded back into the streams of `hc` with the split's post and comb. */
function hcPost(g: DeviceGraph, out: Buf, y: Buf, hc: Buf, split: Buf, rows: number, site: GraphSite): void {
  const { cfg } = g.o;
  g.launch('hc_expand_split', { out, block_out: y, block_add: y, residual: hc, split }, { n_embd: cfg.nEmbd, n_hc: cfg.nHc, rows, has_add: 0 }, site);
}

/**
 * RoPE on the tails of `heads` heads of every row at its position. Decode: rope_tail (table in the
 * kernel's scratch); prefill: ds4-ascend's path, a table for the batch's positions (rope_table, which
 * ds4-ascend builds on the host) then rope_tail_table.
 */
function rope(g: DeviceGraph, x: Buf, il: number, rows: Rows, heads: number, headDim: number, inverse: boolean, site: GraphSite): void {
  const shape = { n_tok: rows.length, n_head: heads, head_dim: headDim };
  const table = ropeScalars(g.o.cfg, il, rows[0], inverse);
  if (!g.o.prefill) return g.launch('rope_tail', { x }, { ...shape, ...table }, site);
  const t = g.buf(inverse ? 'rope_table_inverse' : 'rope_table', rows.length * g.o.cfg.nRot);
  g.launch('rope_table', { table: t }, { n_tok: rows.length, ...table }, site);
  g.launch('rope_tail_table', { x, table: t }, { ...shape, n_rot: g.o.cfg.nRot }, site);
}

/** S2–S12 for the rows of layer il; returns after_attn_hc. */
function attention(g: DeviceGraph, il: number, rows: Rows, hc: Buf, st: LayerState): Buf {
  const raw = st.raw;
  const { cfg } = g.o;
  const E = cfg.nEmbd, D = cfg.headDim, NH = cfg.nHead, H = cfg.nHc, T = rows.length;
  const p = `blk.${il}.`;
  const site = (stage: string, pos = rows[0]): GraphSite => ({ layer: il, pos, stage });
  const { norm, split } = sublayerInput(g, 'attn', il, rows, hc);

  const R = cfg.qLoraRank, qr = g.buf('q_lora', T * R), qrn = g.buf('q_lora_norm', T * R), q = g.buf('q', T * NH * D);
  g.launch('matmul_q8_0', { out: qr, w: g.weight(`${p}attn_q_a.weight`, GGMLType.Q8_0), x: norm }, { in_dim: E, out_dim: R, n_tok: T }, site('q_lora'));
  captureRows(g, 'q_lora', il, rows, qr, R);
  g.launch('rms_norm_weight', { out: qrn, x: qr, w: g.weight(`${p}attn_q_a_norm.weight`, GGMLType.F32) }, { n: R, rows: T, eps: cfg.rmsEps }, site('q_lora_norm'));
  captureRows(g, 'q_lora_norm', il, rows, qrn, R);
  g.launch('matmul_q8_0', { out: q, w: g.weight(`${p}attn_q_b.weight`, GGMLType.Q8_0), x: qrn }, { in_dim: R, out_dim: NH * D, n_tok: T }, site('q_raw'));
  captureRows(g, 'q_raw', il, rows, q, NH * D);
  g.launch('rms_norm_inplace', { x: q }, { n: D, rows: T * NH, eps: cfg.rmsEps }, site('q_norm'));
  captureRows(g, 'q_norm', il, rows, q, NH * D);

  const kvr = g.buf('kv_raw', T * D), kv = g.buf('kv', T * D);
  g.launch('matmul_q8_0', { out: kvr, w: g.weight(`${p}attn_kv.weight`, GGMLType.Q8_0), x: norm }, { in_dim: E, out_dim: D, n_tok: T }, site('kv_raw'));
  captureRows(g, 'kv_raw', il, rows, kvr, D);
  g.launch('rms_norm_weight', { out: kv, x: kvr, w: g.weight(`${p}attn_kv_a_norm.weight`, GGMLType.F32) }, { n: D, rows: T, eps: cfg.rmsEps }, site('kv_norm'));
  captureRows(g, 'kv_norm', il, rows, kv, D);

  rope(g, q, il, rows, NH, D, false, site('q_rope'));
  captureRows(g, 'q_rope', il, rows, q, NH * D);
  rope(g, kv, il, rows, cfg.nHeadKv, D, false, site('kv_rope'));
  captureRows(g, 'kv_rope', il, rows, kv, D);
  g.launch('fp8_kv_quantize', { x: kv }, { n_tok: T, head_dim: D, n_rot: cfg.nRot }, site('kv_cur'));

  // decode: the raw (sliding-window) cache is a ring of `cap` rows, row pos at pos mod cap; prefill: the
  // batch's own rows, f16-rounded as the cache stores them, are what every token attends to
  const cap = cfg.slidingWindow;
  const kvRows = g.o.prefill ? g.buf('kv_rows', T * D) : raw;
  g.launch('store_raw_kv', { raw: kvRows, kv }, { raw_cap: g.o.prefill ? T : cap, pos0: g.o.prefill ? 0 : rows[0], n_tok: T, head_dim: D }, site('raw_cache'));
  const nRawAt = (pos: number) => Math.min(pos + 1, cap);
  if (g.o.prefill) captureRows(g, 'kv_cur', il, rows, kvRows, D);
  else g.capture('kv_cur', il, rows[0], raw, D, (rows[0] % cap) * D);
  for (const pos of rows) {
    if (!g.o.tap || (g.o.filter && !g.o.filter('raw_cache', il, pos))) continue;
    const nRaw = nRawAt(pos), start = pos + 1 - nRaw;
    if (g.o.prefill) {
      g.capture('raw_cache', il, pos, kvRows, nRaw * D, start * D, false, [nRaw, D]);
      continue;
    }
    // oldest-first view of the ring, gathered on the device into one buffer for the capture
    const view = g.buf('raw_view', nRaw * D);
    for (let i = 0; i < nRaw; i++) g.launch('copy', { dst: view, src: raw }, { dst_offset: i * D * 4, src_offset: ((start + i) % cap) * D * 4, bytes: D * 4 }, site('raw_cache'));
    g.capture('raw_cache', il, pos, view, nRaw * D, 0, false, [nRaw, D]);
  }

  // S7/S8: the compressors (and on ratio-4 layers the indexer's row selection), token by token. Prefill
  // attends to the cache's rows as token t has seen them emitted ((t+1)/ratio of its cap rows), each
  // token's selection a row of 0/−1e30 (0: no selection) in one mask.
  const none = g.buf('none', 1), nComp = st.attn?.cap ?? 0;
  const maskRows = g.o.prefill && st.index ? g.buf('index_mask_rows', T * nComp) : undefined;
  if (maskRows) g.launch('fill', { out: maskRows }, { value: 0, count: T * nComp }, site('attn_heads'));
  let mask: Buf | undefined;
  if (st.attn) {
    for (const [r, pos] of rows.entries()) {
      const norm1 = rowOf(g, norm, r, E, 'attn_norm_row', site('attn_comp_kv', pos));
      compressorStep(g, il, pos, norm1, st.attn);
      if (!st.index) continue;
      compressorStep(g, il, pos, norm1, st.index);
      const m = indexerMask(g, il, pos, norm1, rowOf(g, qrn, r, R, 'q_lora_norm_row', site('index_q', pos)), st.index);
      if (m && maskRows) g.launch('copy', { dst: maskRows, src: m }, { dst_offset: r * nComp * 4, src_offset: 0, bytes: m.n * 4 }, site('attn_heads', pos));
      if (m) mask = maskRows ?? m;
    }
  }
  const heads = g.buf('attn_heads', T * NH * D);
  const sinks = g.weight(`${p}attn_sinks.weight`, GGMLType.F32), scale = Math.fround(1 / Math.fround(Math.sqrt(D)));
  const attend = { heads, sinks, q, mask: mask ?? none }, common = { use_mask: mask ? 1 : 0, n_head: NH, head_dim: D, scale };
  if (!g.o.prefill) {
    const n = st.attn ? st.attn.n : 0, nRaw = nRawAt(rows[0]);
    g.launch('attention_decode', { ...attend, raw, comp: st.attn ? st.attn.cache : none },
      { ...common, n_raw: nRaw, raw_cap: cap, raw_start: (rows[0] + 1 - nRaw) % cap, n_comp: n }, site('attn_heads'), n ? 'attention_decode_mixed' : 'attention_decode');
  } else if (!st.attn) {
    g.launch('attention_prefill_raw', { heads, sinks, q, kv: kvRows }, { n_tok: T, window: cap, n_head: NH, head_dim: D, scale }, site('attn_heads'));
  } else {
    g.launch('attention_prefill_mixed', { ...attend, kv: kvRows, comp: st.attn.cache }, { ...common, n_tok: T, n_comp: nComp, window: cap, ratio: st.attn.ratio },
      site('attn_heads'), mask ? 'attention_prefill_masked_mixed' : 'attention_prefill_static_mixed');
  }
  captureRows(g, 'attn_heads', il, rows, heads, NH * D);
  rope(g, heads, il, rows, NH, D, true, site('attn_heads_back'));
  captureRows(g, 'attn_heads_back', il, rows, heads, NH * D);

  const G = cfg.oGroups, groupDim = (NH / G) * D, LR = cfg.oLoraRank;
  const low = g.buf('attn_low', T * G * LR), out = g.buf('attn_out', T * E), wa = g.weight(`${p}attn_output_a.weight`, GGMLType.Q8_0);
  const lowShape = { group_dim: groupDim, rank: LR, n_groups: G, n_tok: T };
  if (g.o.prefill) {
    // ds4-ascend quantizes the heads once (every group of every token) and projects from the codes
    const xq = g.buf('heads_q8', (T * NH * D) / 4), xs = g.buf('heads_q8_scale', (T * NH * D) / 32);
    g.launch('quantize_q8_0', { xq, xscale: xs, x: heads }, { in_dim: groupDim, n_tok: T * G }, site('attn_low'));
    g.launch('attention_output_low_q8_prequant', { low, w_a: wa, xq, xscale: xs }, lowShape, site('attn_low'));
  } else {
    g.launch('attention_output_low_q8', { low, w_a: wa, heads }, lowShape, site('attn_low'));
  }
  captureRows(g, 'attn_low', il, rows, low, G * LR);
  g.launch('matmul_q8_0', { out, w: g.weight(`${p}attn_output_b.weight`, GGMLType.Q8_0), x: low }, { in_dim: G * LR, out_dim: E, n_tok: T }, site('attn_out'));
  captureRows(g, 'attn_out', il, rows, out, E);

  const after = g.buf('after_attn_hc', T * H * E);
  hcPost(g, after, out, hc, split, T, site('after_attn_hc'));
  captureRows(g, 'after_attn_hc', il, rows, after, H * E);
  return after;
}

/** S14–S15 for one token: router, then its selected experts (staged into K-slot slabs); returns moe_out. */
function routedExperts(g: DeviceGraph, il: number, pos: number, norm: Buf): Buf {
  const { cfg, tokens } = g.o;
  const E = cfg.nEmbd, K = cfg.nExpertUsed, F = cfg.nFfExp, NE = cfg.nExpert;
  const p = `blk.${il}.`;
  const site = (stage: string): GraphSite => ({ layer: il, pos, stage });
  const logits = g.buf('router_logits', NE), probs = g.buf('router_probs', NE), sel = g.buf('router_topk', K), w = g.buf('router_w', K);
  g.launch('matmul_f16', { out: logits, w: g.weight(`${p}ffn_gate_inp.weight`, GGMLType.F16), x: norm }, { in_dim: E, out_dim: NE, n_tok: 1 }, site('router_logits'));
  g.capture('router_logits', il, pos, logits);
  const hash = g.has(`${p}ffn_gate_tid2eid.weight`), bias = g.has(`${p}exp_probs_b.bias`);
  const none = g.buf('none', 1);
  g.launch('router_select', {
    probs, selected: sel, weights: w, logits,
    bias: bias ? g.weight(`${p}exp_probs_b.bias`, GGMLType.F32) : none, tid2eid: hash ? g.weight(`${p}ffn_gate_tid2eid.weight`, GGMLType.I32) : none,
  }, { n_exp: NE, k: K, token: tokens[pos], has_bias: bias ? 1 : 0, use_hash: hash ? 1 : 0, scale: cfg.expertWeightsScale }, site('router_topk'), 'router_select');
  g.capture('router_probs', il, pos, probs);
  g.capture('router_topk', il, pos, sel, K, 0, true);
  g.capture('router_w', il, pos, w);

  // the selected experts' slices staged into K-slot slabs (device-to-device copies)
  const ids = new Int32Array(K);
  new Uint8Array(ids.buffer).set(g.dev.download(sel.h, K * 4).subarray(0, K * 4));
  g.selectionReadbackBytes += K * 4;
  // expert-off-by-one (issue 6): the faulty kernel's slabs are staged for id + 1 — the seeds' expert-cache bug
  const staged = [['ffn_gate_exps.weight', GGMLType.IQ2_XXS, 'moe_gate_up_mid_iq2_q8'], ['ffn_up_exps.weight', GGMLType.IQ2_XXS, 'moe_gate_up_mid_iq2_q8'],
    ['ffn_down_exps.weight', GGMLType.Q2_K, 'moe_down_q2_q8']] as const;
  const slabs = staged.map(([n, type, kernel]) => {
    const shift = g.fault(kernel, 'expert-off-by-one', il) ? 1 : 0;
    let slab: Buf | undefined;
    for (let k = 0; k < K; k++) {
      const e = g.expert(p + n, (ids[k] + shift) % NE, type);
      slab ??= g.buf(`slab_${n}`, (K * e.bytes) / 4);
      g.launch('copy', { dst: slab, src: e.h }, { dst_offset: k * e.bytes, src_offset: 0, bytes: e.bytes }, site('moe_gate'), 'routed_moe_iq2_q2');
    }
    return slab as Buf;
  });
  const slots = g.buf('slots', K);
  g.dev.upload(slots.h, Int32Array.from({ length: K }, (_, k) => k));
  const xq = g.buf('xq_k', E / 4), xd = g.buf('xd_k', E / 256), xbs = g.buf('xbs_k', E / 16);
  g.launch('quantize_q8_k', { q: xq, d: xd, bsums: xbs, x: norm }, { n: E }, site('moe_gate'), 'routed_moe_iq2_q2');
  const gate = g.buf('moe_gate', K * F), up = g.buf('moe_up', K * F), mid = g.buf('moe_mid', K * F);
  g.launch('moe_gate_up_mid_iq2_q8', { gate, up, mid, gate_w: slabs[0], up_w: slabs[1], xq, xd, router_w: w, slot: slots },
    { in_dim: E, n_ff: F, k: K, clamp: cfg.swigluClamp[il], n_expert: K }, site('moe_mid'), 'routed_moe_iq2_q2');
  g.capture('moe_gate', il, pos, gate);
  g.capture('moe_up', il, pos, up);
  g.capture('moe_mid', il, pos, mid);
  const mq = g.buf('mq_k', (K * F) / 4), md = g.buf('md_k', (K * F) / 256), mbs = g.buf('mbs_k', (K * F) / 16);
  g.launch('quantize_q8_k', { q: mq, d: md, bsums: mbs, x: mid }, { n: K * F }, site('moe_down'), 'routed_moe_iq2_q2');
  const down = g.buf('moe_down', K * E), moe = g.buf('moe_out_row', E);
  g.launch('moe_down_q2_q8', { down, down_w: slabs[2], midq: mq, midd: md, midbs: mbs, slot: slots }, { n_ff: F, n_embd: E, k: K, n_expert: K }, site('moe_down'), 'routed_moe_iq2_q2');
  g.capture('moe_down', il, pos, down);
  g.launch('moe_sum_experts', { out: moe, down }, { n_embd: E, k: K }, site('moe_out'), 'routed_moe_iq2_q2');
  g.capture('moe_out', il, pos, moe);
  return moe;
}

/** S13–S17 for the rows of layer il; after_ffn_hc is written into `next`. */
function ffn(g: DeviceGraph, il: number, rows: Rows, hc: Buf, next: Buf): void {
  const { cfg } = g.o;
  const E = cfg.nEmbd, H = cfg.nHc, F = cfg.nFfExp, T = rows.length;
  const p = `blk.${il}.`;
  const site = (stage: string, pos = rows[0]): GraphSite => ({ layer: il, pos, stage });
  const { norm, split } = sublayerInput(g, 'ffn', il, rows, hc);

  // S14/S15 token by token (the host stages each token's experts)
  const moe = g.buf('moe_out', T * E);
  for (const [r, pos] of rows.entries()) setRow(g, moe, r, routedExperts(g, il, pos, rowOf(g, norm, r, E, 'ffn_norm_row', site('router_logits', pos))), E, site('moe_out', pos));

  // S16 shared expert (Q8_0 gate/up from one quantization of ffn_norm)
  const sq = g.buf('sq', (T * E) / 4), sd = g.buf('sd', (T * E) / 32), sg = g.buf('sh_gate', T * F), su = g.buf('sh_up', T * F), sm = g.buf('shared_mid', T * F), so = g.buf('shared_out', T * E);
  g.launch('quantize_q8_0', { xq: sq, xscale: sd, x: norm }, { in_dim: E, n_tok: T }, site('shared_mid'));
  g.launch('matmul_q8_0_prequant', { out: sg, w: g.weight(`${p}ffn_gate_shexp.weight`, GGMLType.Q8_0), xq: sq, xscale: sd }, { in_dim: E, out_dim: F, n_tok: T }, site('shared_mid'));
  g.launch('matmul_q8_0_prequant', { out: su, w: g.weight(`${p}ffn_up_shexp.weight`, GGMLType.Q8_0), xq: sq, xscale: sd }, { in_dim: E, out_dim: F, n_tok: T }, site('shared_mid'));
  g.launch('swiglu', { out: sm, gate: sg, up: su }, { n: T * F, clamp: cfg.swigluClamp[il] }, site('shared_mid'));
  captureRows(g, 'shared_mid', il, rows, sm, F);
  g.launch('matmul_q8_0', { out: so, w: g.weight(`${p}ffn_down_shexp.weight`, GGMLType.Q8_0), x: sm }, { in_dim: F, out_dim: E, n_tok: T }, site('shared_out'));
  captureRows(g, 'shared_out', il, rows, so, E);

  // S17
  const out = g.buf('ffn_out', T * E);
  g.launch('add', { out, a: moe, b: so }, { n: T * E }, site('ffn_out'));
  captureRows(g, 'ffn_out', il, rows, out, E);
  hcPost(g, next, out, hc, split, T, site('after_ffn_hc'));
  captureRows(g, 'after_ffn_hc', il, rows, next, H * E);
}

/** S18 for the last token: HC collapse with sigmoid weights, output norm, vocabulary projection. */
function head(g: DeviceGraph, pos: number, hc: Buf): Buf {
  const { cfg } = g.o;
  const E = cfg.nEmbd, H = cfg.nHc, L = cfg.nLayer;
  const site = (stage: string): GraphSite => ({ layer: L, pos, stage });
  const flat = g.buf('hc_flat', H * E), pre = g.buf('out_hc_pre', H), hw = g.buf('out_hc_w', H), embd = g.buf('out_embd', E), norm = g.buf('out_norm', E);
  const logits = g.buf('logits', cfg.nVocab);
  g.launch('rms_norm_plain', { out: flat, x: hc }, { n: H * E, rows: 1, eps: cfg.rmsEps }, site('out_hc_pre'));
  g.launch('matmul_f16', { out: pre, w: g.weight('output_hc_fn.weight', GGMLType.F16), x: flat }, { in_dim: H * E, out_dim: H, n_tok: 1 }, site('out_hc_pre'));
  g.capture('out_hc_pre', L, pos, pre);
  g.launch('output_hc_weights', { out: hw, pre, scale: g.weight('output_hc_scale.weight', GGMLType.F32), base: g.weight('output_hc_base.weight', GGMLType.F32) },
    { n_hc: H, n_tok: 1, eps: cfg.hcEps }, site('out_hc_w'));
  g.capture('out_hc_w', L, pos, hw);
  g.launch('hc_weighted_sum4', { out: embd, residual: hc, weights: hw }, { n_embd: E, rows: 1, weight_stride: H }, site('out_embd'), 'hc_weighted_sum');
  g.capture('out_embd', L, pos, embd);
  g.launch('rms_norm_weight', { out: norm, x: embd, w: g.weight('output_norm.weight', GGMLType.F32) }, { n: E, rows: 1, eps: cfg.rmsEps }, site('out_norm'));
  g.capture('out_norm', L, pos, norm);
  g.launch('matmul_q8_0', { out: logits, w: g.weight('output.weight', GGMLType.Q8_0), x: norm }, { in_dim: E, out_dim: cfg.nVocab, n_tok: 1 }, site('logits'));
  g.capture('logits', L, pos, logits);
  return logits;
}

/** The top-1 token of a logits buffer (the lowest id on a tie, as ds4's greedy sampler): read back to feed it. */
function greedyToken(g: DeviceGraph, logits: Buf): number {
  // the walk before a run computes nothing: any token walks the same launches
  if (g.dry) return 0;
  const n = g.o.cfg.nVocab;
  const raw = g.dev.download(logits.h, n * 4);
  g.readbackBytes += n * 4;
  const v = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + n * 4));
  let best = 0;
  for (let i = 1; i < n; i++) if (v[i] > v[best]) best = i;
  return best;
}

/**
 * The pass, then the output head at the head positions (the last token by default). Decode order: every
 * token through layers 0..last in position order. Prefill (ds4's prompt path, as ds4-ascend runs it): the whole
 * prompt embedded at once, then layer by layer, every batched kernel over all positions, the compressor, indexer
 * and router token by token; the same arithmetic, so the captures are the same. Generation continues in decode
 * order after either, appending each step's greedy token to `g.o.tokens`. Returns the last head's logits.
 */
async function forward(g: DeviceGraph, last: number): Promise<Buf> {
  const { cfg, tokens } = g.o;
  const E = cfg.nEmbd, H = cfg.nHc, D = cfg.headDim, T = tokens.length;
  for (const tok of tokens) if (!Number.isInteger(tok) || tok < 0 || tok >= cfg.nVocab) throw badInput(`token id ${tok} is outside the vocabulary (0..${cfg.nVocab - 1})`);
  const gen = g.o.generate ?? 0;
  // positions run through the layers: the prompt, then every generated token but the last
  const end = T + Math.max(0, gen - 1);
  const heads = new Set(g.o.headPositions ?? (gen ? Array.from({ length: gen }, (_, k) => T - 1 + k) : [T - 1]));
  // per-layer state: the raw KV ring; per-token state: the HC stream, ping-ponged between layers
  const layers: LayerState[] = Array.from({ length: last + 1 }, (_, il) => {
    const ratio = cfg.compressRatios[il];
    if (ratio !== 0 && ratio !== 4 && ratio !== 128) throw badInput(`layer ${il}: compress ratio ${ratio} is not 0, 4 or 128`);
    return {
      raw: g.buf(`raw_kv_${il}`, cfg.slidingWindow * D),
      attn: ratio ? newLane(g, il, 'attn', ratio, D, end) : undefined,
      index: ratio === 4 ? newLane(g, il, 'indexer', ratio, cfg.indexerHeadDim, end) : undefined,
    };
  });
  // the embedding is fetched where it is used: the weight cache may evict it while later layers load
  const embd = () => g.weight('token_embd.weight', GGMLType.F16);
  let logits: Buf | undefined;
  const headAt = (pos: number, hc: Buf) => {
    logits = head(g, pos, hc);
    if (gen && pos >= T - 1 && g.o.tokens.length < T + gen) g.o.tokens.push(greedyToken(g, logits));
  };
  let start = 0;
  if (g.o.prefill) {
    const all = tokens.map((_, pos) => pos), hcA = g.buf('hc_a', T * H * E), hcB = g.buf('hc_b', T * H * E), ids = g.buf('token_ids', T);
    g.dev.upload(ids.h, Int32Array.from(tokens));
    g.launch('embed_tokens_hc', { out: hcA, tokens: ids, token_embd: embd() }, { n_vocab: cfg.nVocab, n_tok: T, n_embd: E, n_hc: H }, { layer: 0, pos: 0, stage: 'embed_hc' });
    captureRows(g, 'embed_hc', 0, all, hcA, H * E);
    for (let il = 0; il <= last; il++) {
      await throwIfCancelled();
      g.o.onProgress?.(`layer ${il + 1}/${last + 1}`);
      ffn(g, il, all, attention(g, il, all, hcA, layers[il]), hcB);
      g.launch('copy', { dst: hcA, src: hcB }, { dst_offset: 0, src_offset: 0, bytes: T * H * E * 4 }, { layer: il, pos: 0, stage: 'after_ffn_hc' });
    }
    for (const pos of all) if (heads.has(pos)) headAt(pos, rowOf(g, hcA, pos, H * E, 'hc_last', { layer: cfg.nLayer, pos, stage: 'out_hc_pre' }));
    start = T;
  }
  const hcA = g.buf('hc_a', H * E), hcB = g.buf('hc_b', H * E);
  for (let pos = start; pos < end; pos++) {
    await throwIfCancelled();
    g.o.onProgress?.(`token ${pos + 1}/${end}`);
    g.launch('embed_token_hc', { out: hcA, token_embd: embd() }, { token: g.o.tokens[pos], n_embd: E, n_hc: H }, { layer: 0, pos, stage: 'embed_hc' });
    g.capture('embed_hc', 0, pos, hcA);
    for (let il = 0; il <= last; il++) {
      const afterAttn = attention(g, il, [pos], hcA, layers[il]);
      ffn(g, il, [pos], afterAttn, hcB);
      g.launch('copy', { dst: hcA, src: hcB }, { dst_offset: 0, src_offset: 0, bytes: H * E * 4 }, { layer: il, pos, stage: 'after_ffn_hc' });
    }
    if (heads.has(pos)) headAt(pos, hcA);
  }
  if (!logits) throw badInput(`head positions ${[...heads].join(',')} are outside the run's positions 0..${end - 1}`);
  return logits;
}

/**
 * Refuse (exit 3, one line naming the spec and why) an injected fault that cannot plant anything in this
 * run: its kernel is not launched in its layers, its layer is outside the model, its nan index is beyond
 * every output, nothing it reads can be stale. Walks the pass's launches on a backend that runs nothing.
 * Commands call it before any work; runDevice does not (bisect's shorter passes legitimately plant less).
 */
export async function refuseUnlandedFaults(o: Pick<DeviceRunOptions, 'model' | 'cfg' | 'tokens' | 'lastLayer' | 'inject' | 'addonPath' | 'prefill' | 'generate'>): Promise<void> {
  if (!o.inject?.length) return;
  const last = o.lastLayer ?? o.cfg.nLayer - 1;
  const faults = new FaultPlugin(o.inject, new Set(), true);
  const layers = new Map<string, number[]>();
  const seen: DevicePlugin = {
    beforeLaunch: (l) => {
      const at = layers.get(l.kernel) ?? [];
      at.push(l.site.layer);
      layers.set(l.kernel, at);
    },
  };
  const g = new DeviceGraph(planBackend(o.addonPath), { model: o.model, cfg: o.cfg, tokens: [...o.tokens], lastLayer: last, prefill: o.prefill, generate: o.generate }, [seen, faults], faults, true);
  try {
    await forward(g, last);
  } finally {
    g.release();
  }
  const [miss] = faults.unlanded((k) => layers.get(k) ?? [], { lastLayer: last, nLayer: o.cfg.nLayer });
  if (miss) throw badInput(`--inject ${miss.f.spec}: ${miss.why}`);
}

/** Generation decodes after the prompt; the batched prefill keeps the prompt's KV rows in its own batch buffer,
 *  not in the raw ring the decode steps read (ds4-ascend copies them over; this simulator does not model that). */
export const GENERATE_AFTER_PREFILL = 'generating after the batched prefill is not modelled: the decode steps would read a raw KV ring the prefill never filled; generate without --device-prefill';

/** Run the graph on the device; see the file comment. */
export async function runDevice(opts: DeviceRunOptions): Promise<DeviceRunResult> {
  const { cfg, tokens } = opts;
  if (tokens.length === 0) throw badInput('device run: no tokens');
  if (opts.prefill && opts.generate) throw badInput(GENERATE_AFTER_PREFILL);
  const last = opts.lastLayer ?? cfg.nLayer - 1;
  if (!(last >= 0 && last < cfg.nLayer)) throw badInput(`device run: layer ${last} is outside 0..${cfg.nLayer - 1}`);
  const dev = opts.session?.dev ?? openBackend(opts.backend ?? 'sim', opts.addonPath);
  dev.resetStats();
  dev.setMathMode(opts.kernelMath ?? 'ascend');
  const hostKernels = new Set(opts.hostKernels ?? []);
  const faults = new FaultPlugin(opts.inject ?? [], hostKernels);
  const plugins: DevicePlugin[] = [new HostSwap(hostKernels, dev.catalog), faults, new ProducerTracking(opts.producers)];
  if (opts.teacher) plugins.push(new TeacherForcing(dev, opts.teacher));
  // the pass appends generated tokens to its own copy of the list
  const g = new DeviceGraph(dev, { ...opts, tokens: [...tokens] }, plugins, faults);
  try {
    const logitsBuf = await forward(g, last);
    const raw = dev.download(logitsBuf.h, cfg.nVocab * 4);
    g.readbackBytes += cfg.nVocab * 4;
    const logits = new Float32Array(cfg.nVocab);
    new Uint8Array(logits.buffer).set(raw.subarray(0, cfg.nVocab * 4));
    dev.synchronize();
    return { logits, tokens: g.o.tokens, ledger: g.gate.ledger(), stats: dev.stats(), readbackBytes: g.readbackBytes, selectionReadbackBytes: g.selectionReadbackBytes };
  } catch (e) {
    if (e instanceof Ds4DiffError) throw e;
    // sanitizer reports and kernel faults come back as plain errors from the addon: one line, exit 125
    throw new Ds4DiffError(`device: ${(e as Error).message.split('\n')[0]}`, EXIT.cannotEvaluate);
  } finally {
    try { g.release(); } catch { /* the device already reported its error */ }
  }
}
