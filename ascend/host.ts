// Host twins of the device kernels (issue 5 --allow-host-fallback, issue 6 kernel swap, issue 14 kernel
// suite). The fork's CPU fallback is ds4.c itself; ours is the TypeScript reference's op functions
// ('ds4' precision). A twin maps a launch's named inputs to its named outputs; which bytes it reads and
// writes is the kernel's signature (ascend/kernels.ts): every buffer the kernel reads is read back over
// its span, every buffer it writes is written back over its span, and the gate's ledger counts them.
import type { Ds4Config } from '../model/config.ts';
import {
  IQ2_XXS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q8_0_BLOCK_BYTES, dotIQ2_XXS_Q8_K, dotQ2_K_Q8_K, f16ToF32, f16Round, fp8KvQuantizeInplace,
  matvecF16, matvecQ8_0, matvecQ8_0Act, quantizeQ8_0Act, quantizeQ8_K, type Q8KAct,
} from '../model/quant/index.ts';
import { attentionWithSinks } from '../reference/attention.ts';
import { compressorPool, indexerQat, type CompressorState } from '../reference/compressor.ts';
import { routerProbs, routerWeights, topkDesc } from '../reference/ffn.ts';
import { embedHc, hcPost, hcSplitSinkhorn, hcWeightedSum, outputHcWeights } from '../reference/hc.ts';
import { NEG_INF, dot, headRmsNormInplace, rmsNorm, silu, sigmoid, softplus } from '../reference/math.ts';
import { ropeTailInplace } from '../reference/rope.ts';
import { badInput } from '../model/errors.ts';
import type { GraphSite, HostFallback } from './gate.ts';
import type { DevicePlugin, Launch } from './hooks.ts';
import { reads, writes, type BufferSpan, type KernelCatalog, type Scalars } from './kernels.ts';

/** A launch's inputs as the twin reads them: each buffer's span, viewed as its element type. */
export class HostInputs {
  constructor(private readonly bytes: Record<string, Uint8Array>) {}
  u8(name: string): Uint8Array {
    const b = this.bytes[name];
    if (!b) throw new Error(`host twin reads buffer ${name}, which the kernel does not read`);
    return b;
  }
  f32(name: string): Float32Array {
    const b = this.u8(name);
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  }
  i32(name: string): Int32Array {
    const b = this.u8(name);
    return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  }
  i8(name: string): Int8Array {
    const b = this.u8(name);
    return new Int8Array(b.buffer, b.byteOffset, b.byteLength);
  }
  u16(name: string): Uint16Array {
    const b = this.u8(name);
    return new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
  }
}

/** A host twin: the launch's outputs (every buffer it writes, its whole span) from its inputs. */
export type HostTwin = (x: HostInputs, s: Scalars) => Record<string, ArrayBufferView>;

/** Bytes of a span, downloaded (a ring span comes back in span order). */
export function readSpan(dev: { download(h: number, bytes?: number, offset?: number): Uint8Array }, h: number, s: BufferSpan): Uint8Array {
  const out = new Uint8Array(s.bytes);
  const first = s.ring ? Math.min(s.bytes, s.ring - s.offset) : s.bytes;
  if (first > 0) out.set(dev.download(h, first, s.offset).subarray(0, first));
  if (first < s.bytes) out.set(dev.download(h, s.bytes - first, 0).subarray(0, s.bytes - first), first);
  return out;
}

/** Upload span-ordered bytes over a span. */
export function writeSpan(dev: { upload(h: number, data: ArrayBufferView, offset?: number): void }, h: number, s: BufferSpan, data: Uint8Array): void {
  const first = s.ring ? Math.min(s.bytes, s.ring - s.offset) : s.bytes;
  if (first > 0) dev.upload(h, data.subarray(0, first), s.offset);
  if (first < s.bytes) dev.upload(h, data.subarray(first), 0);
}

const asBytes = (v: ArrayBufferView): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

/**
 * A launch run by its host twin, as the gate drives it: read every read span back, compute, write
 * every written span; the byte counts are the ledger's.
 */
export function hostRun(
  dev: { download(h: number, bytes?: number, offset?: number): Uint8Array; upload(h: number, data: ArrayBufferView, offset?: number): void },
  launch: { kernel: string; primitive: string; site: GraphSite; spans: BufferSpan[]; handles: Record<string, number>; scalars: Scalars },
  noTwin: () => never,
): HostFallback {
  let inputs: HostInputs | undefined;
  return {
    readInputs: () => {
      if (!HOST_KERNELS[launch.kernel]) noTwin();
      const bytes: Record<string, Uint8Array> = {};
      let n = 0;
      for (const s of launch.spans) {
        if (!reads(s.buf)) continue;
        bytes[s.buf.name] = readSpan(dev, launch.handles[s.buf.name], s);
        n += s.bytes;
      }
      inputs = new HostInputs(bytes);
      return n;
    },
    computeAndWrite: () => {
      const outs = runTwin(launch.kernel, inputs as HostInputs, launch.scalars, launch.spans);
      let n = 0;
      for (const s of launch.spans) {
        const data = outs.get(s.buf.name);
        if (!data) continue;
        writeSpan(dev, launch.handles[s.buf.name], s, data);
        n += s.bytes;
      }
      return n;
    },
  };
}

/** Bisect's kernel swap: these kernels run as their host twins even with the gate on (ledger reason 'kernel swap (bisect)'). */
export class HostSwap implements DevicePlugin {
  constructor(private readonly kernels: ReadonlySet<string>, catalog: KernelCatalog) {
    for (const k of kernels) {
      if (!catalog.kernels.has(k)) throw badInput(`host kernel ${k}: no such kernel (see ds4-diff kernels)`);
      if (!HOST_KERNELS[k]) throw badInput(`host kernel ${k}: no host implementation (host implementations: ${Object.keys(HOST_KERNELS).sort().join(', ')})`);
    }
  }

  beforeLaunch(l: Launch): void {
    if (this.kernels.has(l.kernel)) l.onHost = 'kernel swap (bisect)';
  }
}

/** The twin's outputs as bytes, checked against the signature: every written span, exactly its size. */
export function runTwin(kernel: string, x: HostInputs, s: Scalars, spans: BufferSpan[]): Map<string, Uint8Array> {
  const outs = HOST_KERNELS[kernel](x, s);
  const got = new Map<string, Uint8Array>();
  for (const sp of spans) {
    if (!writes(sp.buf) || sp.bytes === 0) continue;
    const v = outs[sp.buf.name];
    if (!v) throw new Error(`host twin of ${kernel} does not return ${sp.buf.name}`);
    const b = asBytes(v);
    if (b.byteLength !== sp.bytes) throw new Error(`host twin of ${kernel} returns ${b.byteLength} bytes of ${sp.buf.name}, its span is ${sp.bytes}`);
    got.set(sp.buf.name, b);
  }
  return got;
}

/**
 * router_select's outputs from its probabilities: hash layers take tid2eid's row, others the top-k of
 * probs + bias (rounded to f32); the weights come from the unbiased probs (ds4 S14).
 */
function routerOutputs(probs: Float32Array, k: number, scale: number, bias?: Float32Array, hashSel?: Int32Array): Record<string, ArrayBufferView> {
  const selected = hashSel ? hashSel.slice() : topkDesc(Float32Array.from(probs, (v, e) => (bias ? v + bias[e] : v)), k);
  return { probs, selected, weights: routerWeights(probs, selected, scale, 'ds4') as Float32Array };
}

/** A Q8_K activation as the device keeps it (q i8, d f32 per 256, bsums i32 per 16) → the reference's Q8KAct. */
function q8k(q: Int8Array, d: Float32Array, bsums: Int32Array | null): Q8KAct {
  return { q, d, bsums: bsums ? Int16Array.from(bsums) : new Int16Array(q.length / 16) };
}

/**
 * The layer config the reference's RoPE derives its parameters from, rebuilt from a launch's scalars:
 * YaRN (ext_factor 1) is a compressed layer with scaling factor 1/freq_scale, else a dense one.
 */
function ropeConfig(s: Scalars): Ds4Config {
  const yarn = s.ext_factor !== 0;
  return {
    nRot: s.n_rot, ropeFreqBase: s.freq_base, compressRopeFreqBase: s.freq_base, compressRatios: [yarn ? 4 : 0],
    ropeScalingFactor: yarn ? Math.round(1 / s.freq_scale) : 0, ropeOrigCtx: s.n_ctx_orig, yarnBetaFast: s.beta_fast, yarnBetaSlow: s.beta_slow,
  } as Ds4Config;
}

/** rope_tail on the host: the reference RoPE of every token at pos0 + t. */
function ropeHost(x: Float32Array, s: Scalars): Float32Array {
  const cfg = ropeConfig(s), width = s.n_head * s.head_dim;
  for (let t = 0; t < s.n_tok; t++) ropeTailInplace(cfg, 0, x.subarray(t * width, (t + 1) * width), s.n_head, s.head_dim, s.pos0 + t, s.inverse === 1, 'ds4');
  return x;
}

/** The cos/sin table of rope_table, from the reference RoPE of a unit pair at each position. */
function ropeTableHost(s: Scalars): Float32Array {
  const cfg = ropeConfig(s), half = s.n_rot / 2, table = new Float32Array(s.n_tok * s.n_rot);
  for (let t = 0; t < s.n_tok; t++) {
    // rotating (1, 0) gives (cos θ·m, ±sin θ·m): the table entries
    const unit = new Float32Array(s.n_rot);
    for (let j = 0; j < half; j++) unit[2 * j] = 1;
    ropeTailInplace(cfg, 0, unit, 1, s.n_rot, s.pos0 + t, s.inverse === 1, 'ds4');
    table.set(unit, t * s.n_rot);
  }
  return table;
}

/** Apply a per-row function to `rows` rows of n (row-major) and concatenate. */
function rowsOf(x: Float32Array, n: number, rows: number, f: (row: Float32Array) => Float32Array): Float32Array {
  const out: Float32Array[] = [];
  for (let r = 0; r < rows; r++) out.push(f(x.subarray(r * n, (r + 1) * n)));
  const y = new Float32Array(out.reduce((a, o) => a + o.length, 0));
  let off = 0;
  for (const o of out) { y.set(o, off); off += o.length; }
  return y;
}

/** Attention of every (token, head) over the rows `visible(t)` lists (raw rows first), by the reference op. */
function attendHost(x: HostInputs, s: Scalars, nTok: number, visible: (t: number) => { raw: Float32Array; nRaw: number; comp: Float32Array | null; nComp: number; allowed: Uint8Array | null }): Float32Array {
  const D = s.head_dim, NH = s.n_head, q = x.f32('q'), out = new Float32Array(nTok * NH * D);
  // the reference scales the scores by 1/√D itself (ds4.c): a launch with another scale has no twin
  if (Math.fround(s.scale) !== Math.fround(1 / Math.fround(Math.sqrt(D)))) throw new Error(`attention host twin: scale ${s.scale} is not 1/√${D}`);
  for (let t = 0; t < nTok; t++) {
    const v = visible(t);
    out.set(attentionWithSinks(q.subarray(t * NH * D, (t + 1) * NH * D), NH, D, x.f32('sinks'), v.raw, v.nRaw, v.comp, v.nComp, v.allowed, 'ds4') as Float32Array, t * NH * D);
  }
  return out;
}

/** Which of a mask's rows are visible (the device hides a row whose additive mask is ≤ −1e20; the reference only hides). */
const allowedOf = (mask: Float32Array): Uint8Array => Uint8Array.from(mask, (m) => (m > -1e20 ? 1 : 0));

/** Rows [t+1−window, t] of a batch (window 0 = all ≤ t). */
const windowStart = (t: number, window: number): number => (window !== 0 && t + 1 > window ? t + 1 - window : 0);

/** The grouped low projection from Q8_0 activations: group g of token t uses rows g·rank.. of w_a. */
function outputLowHost(w: Uint8Array, act: (row: number) => { q: Int8Array; d: Float32Array }, s: Scalars): Float32Array {
  const { group_dim: gd, rank, n_groups: G, n_tok: T } = s, rb = (gd / 32) * Q8_0_BLOCK_BYTES, out = new Float32Array(T * G * rank);
  for (let t = 0; t < T; t++) for (let g = 0; g < G; g++) {
    const row = t * G + g;
    matvecQ8_0Act(w.subarray(g * rank * rb, (g + 1) * rank * rb), rank, gd, act(row), out.subarray(row * rank, (row + 1) * rank));
  }
  return out;
}

export const HOST_KERNELS: Record<string, HostTwin> = {
  fill: (_, s) => ({ out: new Float32Array(s.count).fill(s.value) }),
  copy: (x) => ({ dst: x.u8('src') }),
  add: (x, s) => {
    const a = x.f32('a'), b = x.f32('b');
    return { out: Float32Array.from({ length: s.n }, (_, i) => a[i] + b[i]) };
  },
  math_probe: (x, s) => {
    const fns: Array<(v: number) => number> = [Math.exp, (v) => 1 / Math.sqrt(v), Math.sqrt, Math.log, (v) => sigmoid(v), (v) => silu(v), (v) => softplus(v), f16Round];
    return { out: Float32Array.from(x.f32('x'), fns[s.fn]) };
  },
  embed_token_hc: (x, s) => ({ out: embedHc({ nEmbd: s.n_embd, nHc: s.n_hc } as Ds4Config, 'ds4', Float32Array.from(x.u16('token_embd'), f16ToF32)) as Float32Array }),
  embed_tokens_hc: (x, s) => {
    const table = x.u16('token_embd'), out = new Float32Array(s.n_tok * s.n_hc * s.n_embd);
    x.i32('tokens').forEach((tok, t) => {
      const row = Float32Array.from(table.subarray(tok * s.n_embd, (tok + 1) * s.n_embd), f16ToF32);
      out.set(embedHc({ nEmbd: s.n_embd, nHc: s.n_hc } as Ds4Config, 'ds4', row) as Float32Array, t * s.n_hc * s.n_embd);
    });
    return { out };
  },
  quantize_q8_0: (x, s) => {
    const n = s.in_dim, xq = new Int8Array(n * s.n_tok), xscale = new Float32Array((n * s.n_tok) / 32);
    for (let t = 0; t < s.n_tok; t++) {
      const a = quantizeQ8_0Act(x.f32('x'), t * n, n);
      xq.set(a.q, t * n);
      xscale.set(a.d, (t * n) / 32);
    }
    return { xq, xscale };
  },
  matmul_q8_0_prequant: (x, s) => {
    const { in_dim: n, out_dim: m } = s, out = new Float32Array(m * s.n_tok);
    for (let t = 0; t < s.n_tok; t++) {
      const act = { q: x.i8('xq').subarray(t * n, (t + 1) * n), d: x.f32('xscale').subarray((t * n) / 32, ((t + 1) * n) / 32) };
      matvecQ8_0Act(x.u8('w'), m, n, act, out.subarray(t * m, (t + 1) * m));
    }
    return { out };
  },
  matmul_q8_0: (x, s) => ({ out: rowsOf(x.f32('x'), s.in_dim, s.n_tok, (r) => {
    const out = new Float32Array(s.out_dim);
    matvecQ8_0(x.u8('w'), s.out_dim, s.in_dim, r, out);
    return out;
  }) }),
  matmul_f16: (x, s) => ({ out: rowsOf(x.f32('x'), s.in_dim, s.n_tok, (r) => {
    const out = new Float32Array(s.out_dim);
    matvecF16(x.u8('w'), s.out_dim, s.in_dim, r, out);
    return out;
  }) }),
  quantize_q8_k: (x, s) => {
    const a = quantizeQ8_K(x.f32('x'), 0, s.n);
    return { q: a.q, d: a.d, bsums: Int32Array.from(a.bsums) };
  },
  rms_norm_weight: (x, s) => ({ out: rowsOf(x.f32('x'), s.n, s.rows, (r) => rmsNorm(r, x.f32('w'), s.eps, 'ds4') as Float32Array) }),
  rms_norm_plain: (x, s) => ({ out: rowsOf(x.f32('x'), s.n, s.rows, (r) => rmsNorm(r, null, s.eps, 'ds4') as Float32Array) }),
  rms_norm_inplace: (x, s) => {
    const y = x.f32('x').slice();
    headRmsNormInplace(y, s.rows, s.n, s.eps, 'ds4');
    return { x: y };
  },
  hc_split_sinkhorn4: (x, s) => {
    const out = new Float32Array(s.rows * 24), mix = x.f32('mix');
    for (let r = 0; r < s.rows; r++) {
      const sp = hcSplitSinkhorn(mix.subarray(r * 24, (r + 1) * 24), x.f32('scale'), x.f32('base'), 4, s.sinkhorn_iters, s.eps, 'ds4');
      out.set(sp.pre, r * 24);
      out.set(sp.post, r * 24 + 4);
      out.set(sp.comb, r * 24 + 8);
    }
    return { out };
  },
  hc_weighted_sum4: (x, s) => {
    const E = s.n_embd, res = x.f32('residual'), w = x.f32('weights'), out = new Float32Array(s.rows * E);
    for (let r = 0; r < s.rows; r++) {
      const wr = w.subarray(r * s.weight_stride, r * s.weight_stride + 4);
      out.set(hcWeightedSum({ nEmbd: E, nHc: 4 } as Ds4Config, res.subarray(r * 4 * E, (r + 1) * 4 * E), wr, 'ds4'), r * E);
    }
    return { out };
  },
  hc_expand_split: (x, s) => {
    const { n_embd: E, n_hc: H } = s, M = 2 * H + H * H, out = new Float32Array(s.rows * H * E);
    const y = x.f32('block_out'), add = s.has_add ? x.f32('block_add') : undefined, res = x.f32('residual'), split = x.f32('split');
    for (let r = 0; r < s.rows; r++) {
      const block = add ? Float32Array.from({ length: E }, (_, d) => y[r * E + d] + add[r * E + d]) : y.subarray(r * E, (r + 1) * E);
      const sp = split.subarray(r * M, (r + 1) * M);
      out.set(hcPost({ nEmbd: E, nHc: H } as Ds4Config, block, res.subarray(r * H * E, (r + 1) * H * E), sp.subarray(H, 2 * H), sp.subarray(2 * H), 'ds4'), r * H * E);
    }
    return { out };
  },
  output_hc_weights: (x, s) => {
    const H = s.n_hc, pre = x.f32('pre'), out = new Float32Array(H * s.n_tok);
    for (let t = 0; t < s.n_tok; t++) out.set(outputHcWeights({ nHc: H, hcEps: s.eps } as Ds4Config, pre.subarray(t * H, (t + 1) * H), x.f32('scale'), x.f32('base'), 'ds4'), t * H);
    return { out };
  },
  rope_tail: (x, s) => ({ x: ropeHost(x.f32('x').slice(), s) }),
  rope_table: (_, s) => ({ table: ropeTableHost(s) }),
  rope_tail_table: (x, s) => {
    // the rotation itself (the table carries the angles): (x0, x1) ← (x0·c − x1·s, x0·s + x1·c) on adjacent pairs
    const y = x.f32('x').slice(), table = x.f32('table'), half = s.n_rot / 2, nope = s.head_dim - s.n_rot, f = Math.fround;
    for (let t = 0; t < s.n_tok; t++) for (let h = 0; h < s.n_head; h++) for (let j = 0; j < half; j++) {
      const o = (t * s.n_head + h) * s.head_dim + nope + 2 * j, c = table[(t * half + j) * 2], sn = table[(t * half + j) * 2 + 1];
      const x0 = y[o], x1 = y[o + 1];
      y[o] = f(f(x0 * c) - f(x1 * sn));
      y[o + 1] = f(f(x0 * sn) + f(x1 * c));
    }
    return { x: y };
  },
  fp8_kv_quantize: (x, s) => {
    const y = x.f32('x').slice();
    for (let t = 0; t < s.n_tok; t++) fp8KvQuantizeInplace(y, t * s.head_dim, s.head_dim - s.n_rot);
    return { x: y };
  },
  store_raw_kv: (x) => ({ raw: Float32Array.from(x.f32('kv'), f16Round) }),
  attention_decode: (x, s) => ({ heads: attendHost(x, s, 1, () => {
    // the ring oldest-first, as the reference's raw cache holds it
    const D = s.head_dim, ring = x.f32('raw'), raw = new Float32Array(s.n_raw * D);
    for (let i = 0; i < s.n_raw; i++) raw.set(ring.subarray(((s.raw_start + i) % s.raw_cap) * D, ((s.raw_start + i) % s.raw_cap + 1) * D), i * D);
    return { raw, nRaw: s.n_raw, comp: s.n_comp ? x.f32('comp') : null, nComp: s.n_comp, allowed: s.use_mask ? allowedOf(x.f32('mask')) : null };
  }) }),
  attention_prefill_raw: (x, s) => ({ heads: attendHost(x, s, s.n_tok, (t) => {
    const r0 = windowStart(t, s.window);
    return { raw: x.f32('kv').subarray(r0 * s.head_dim, (t + 1) * s.head_dim), nRaw: t + 1 - r0, comp: null, nComp: 0, allowed: null };
  }) }),
  attention_prefill_mixed: (x, s) => ({ heads: attendHost(x, s, s.n_tok, (t) => {
    const r0 = windowStart(t, s.window), nComp = s.n_comp ? Math.min(s.n_comp, Math.floor((t + 1) / s.ratio)) : 0;
    const mask = s.use_mask ? x.f32('mask').subarray(t * s.n_comp, t * s.n_comp + nComp) : null;
    return { raw: x.f32('kv').subarray(r0 * s.head_dim, (t + 1) * s.head_dim), nRaw: t + 1 - r0, comp: nComp ? x.f32('comp') : null, nComp, allowed: mask && allowedOf(mask) };
  }) }),
  attention_output_low_q8: (x, s) => ({ low: outputLowHost(x.u8('w_a'), (row) => quantizeQ8_0Act(x.f32('heads'), row * s.group_dim, s.group_dim), s) }),
  attention_output_low_q8_prequant: (x, s) => ({ low: outputLowHost(x.u8('w_a'), (row) => ({
    q: x.i8('xq').subarray(row * s.group_dim, (row + 1) * s.group_dim), d: x.f32('xscale').subarray((row * s.group_dim) / 32, ((row + 1) * s.group_dim) / 32),
  }), s) }),
  router_select: (x, s) => routerOutputs(routerProbs(x.f32('logits'), 'ds4') as Float32Array, s.k, s.scale, s.has_bias ? x.f32('bias') : undefined, s.use_hash ? x.i32('tid2eid') : undefined),
  moe_gate_up_mid_iq2_q8: (x, s) => {
    const { in_dim: E, n_ff: F, k: K, clamp } = s, act = q8k(x.i8('xq'), x.f32('xd'), null), rb = (E / 256) * IQ2_XXS_BLOCK_BYTES;
    const w = x.f32('router_w'), slot = x.i32('slot'), gw = x.u8('gate_w'), uw = x.u8('up_w');
    const gate = new Float32Array(K * F), up = new Float32Array(K * F), mid = new Float32Array(K * F);
    for (let k = 0; k < K; k++) for (let row = 0; row < F; row++) {
      const o = (slot[k] * F + row) * rb;
      // ds4 swiglu clamp: the gate from above only, the up both ways; the router weight before down
      const g = Math.min(dotIQ2_XXS_Q8_K(gw, o, act), clamp), u = Math.max(-clamp, Math.min(clamp, dotIQ2_XXS_Q8_K(uw, o, act)));
      gate[k * F + row] = g;
      up[k * F + row] = u;
      mid[k * F + row] = Math.fround(Math.fround(silu(g) * u) * w[k]);
    }
    return { gate, up, mid };
  },
  moe_down_q2_q8: (x, s) => {
    const { n_ff: F, n_embd: E, k: K } = s, rb = (F / 256) * Q2_K_BLOCK_BYTES, slot = x.i32('slot'), down = new Float32Array(K * E);
    for (let k = 0; k < K; k++) {
      const act = q8k(x.i8('midq').subarray(k * F, (k + 1) * F), x.f32('midd').subarray((k * F) / 256, ((k + 1) * F) / 256), x.i32('midbs').subarray((k * F) / 16, ((k + 1) * F) / 16));
      for (let d = 0; d < E; d++) down[k * E + d] = dotQ2_K_Q8_K(x.u8('down_w'), (slot[k] * E + d) * rb, act);
    }
    return { down };
  },
  moe_sum_experts: (x, s) => {
    const down = x.f32('down');
    return { out: Float32Array.from({ length: s.n_embd }, (_, d) => {
      let acc = 0;
      for (let j = 0; j < s.k; j++) acc = Math.fround(acc + down[j * s.n_embd + d]);
      return acc;
    }) };
  },
  swiglu: (x, s) => {
    const g = x.f32('gate'), u = x.f32('up'), c = s.clamp;
    return { out: Float32Array.from({ length: s.n }, (_, i) => Math.fround(silu(Math.min(g[i], c)) * Math.max(-c, Math.min(c, u[i])))) };
  },
  compressor_set_rows: (x, s) => {
    const ape = s.ape_is_f16 ? Float32Array.from(x.u16('ape'), f16ToF32) : x.f32('ape');
    const score = Float32Array.from(x.f32('score'), (v, j) => v + ape[j]);
    return { state_kv: x.f32('kv').slice(), state_score: score, score };
  },
  compressor_update_pool: (x, s) => {
    const coff = s.ratio === 4 ? 2 : 1;
    const st: CompressorState = { lane: 'attn', ratio: s.ratio, dim: s.dim, coff, width: coff * s.dim, kv: x.f32('state_kv'), score: x.f32('state_score') };
    return { row: compressorPool(st, 'ds4') as Float32Array };
  },
  compressor_shift_ratio4: (x, s) => {
    const half = 4 * s.width, shift = (v: Float32Array) => Float32Array.from({ length: 2 * half }, (_, i) => v[i < half ? half + i : i]);
    return { state_kv: shift(x.f32('state_kv')), state_score: shift(x.f32('state_score')) };
  },
  indexer_qat: (x, s) => {
    const y = x.f32('x').slice();
    for (let r = 0; r < s.rows; r++) indexerQat(y, r * 128);
    return { x: y };
  },
  indexer_weights_scale: (x, s) => {
    const scale = Math.fround(1 / Math.fround(Math.sqrt(s.head_dim * s.n_heads)));
    return { w: Float32Array.from(x.f32('w'), (v) => v * scale) };
  },
  indexer_scores: (x, s) => {
    // S8 ds4 indexer_allowed_decode_one: Σ_h relu(q_h·k_c)·w_h
    const q = x.f32('q'), w = x.f32('w'), k = x.f32('k'), f = Math.fround;
    return { scores: Float32Array.from({ length: s.n }, (_, c) => {
      let acc = 0;
      for (let h = 0; h < s.heads; h++) acc = f(acc + f(Math.max(0, dot(k, c * s.dim, q, h * s.dim, s.dim, 'ds4')) * w[h]));
      return acc;
    }) };
  },
  indexer_topk: (x, s) => {
    // repeated arg-max, strict >, ties to the lowest index (ds4 S8); the mask hides the rest
    const scores = x.f32('scores'), topk = new Int32Array(s.k), mask = new Float32Array(s.n).fill(NEG_INF);
    for (let j = 0; j < s.k; j++) {
      let best = -1;
      for (let c = 0; c < s.n; c++) if (mask[c] !== 0 && (best < 0 || scores[c] > scores[best])) best = c;
      topk[j] = best;
      mask[best] = 0;
    }
    return { topk, mask };
  },
};
