// Host implementations of device primitives (issue 5 --allow-host-fallback, issue 6 kernel swap).
// The fork's CPU fallback is ds4.c itself; ours is the TypeScript reference's op functions ('ds4'
// precision). A host kernel names the byte ranges of the launch's buffers it reads back and returns
// what to write back; the orchestrator moves the bytes and the gate records them in the ledger.
import type { Ds4Config } from '../model/config.ts';
import {
  IQ2_XXS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q8_0_BLOCK_BYTES, dotIQ2_XXS_Q8_K, dotQ2_K_Q8_K, f16ToF32, fp8KvQuantizeInplace,
  matvecF16, matvecQ8_0, matvecQ8_0Act, quantizeQ8_0Act, quantizeQ8_K, type Q8KAct,
} from '../model/quant/index.ts';
import { attentionWithSinks } from '../reference/attention.ts';
import { compressorPool, indexerQat, type CompressorState } from '../reference/compressor.ts';
import { routerProbs, routerWeights, topkDesc } from '../reference/ffn.ts';
import { embedHc, hcPost, hcSplitSinkhorn, hcWeightedSum, outputHcWeights } from '../reference/hc.ts';
import { NEG_INF, dot, headRmsNormInplace, rmsNorm, silu } from '../reference/math.ts';
import { cacheStore } from '../reference/kvcache.ts';
import { ropeTailInplace } from '../reference/rope.ts';

export interface HostContext {
  cfg: Ds4Config;
  layer: number;
}

/** A byte range of launch argument `arg` to read back: [arg, bytes, byteOffset]. */
export type ReadSpan = [arg: number, bytes: number, off?: number];
/** A result to write back into argument `arg` at byte offset `off`. */
export type WriteSpan = [arg: number, data: ArrayBufferView, off: number];

export interface HostKernel {
  inputs(s: number[]): ReadSpan[];
  compute(inputs: Uint8Array[], s: number[], cx: HostContext): WriteSpan[];
}

const f32 = (b: Uint8Array): Float32Array => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
const i32 = (b: Uint8Array): Int32Array => new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
const i8 = (b: Uint8Array): Int8Array => new Int8Array(b.buffer, b.byteOffset, b.byteLength);

/**
 * router_select's outputs from its probabilities: hash layers take tid2eid's row, others the top-k of
 * probs + bias (rounded to f32); the weights come from the unbiased probs (ds4 S14).
 */
export function routerOutputs(probs: Float32Array, k: number, scale: number, bias?: Float32Array, hashSel?: Int32Array): WriteSpan[] {
  const sel = hashSel ? hashSel.slice() : topkDesc(Float32Array.from(probs, (v, e) => (bias ? v + bias[e] : v)), k);
  return [[0, probs, 0], [1, sel, 0], [2, routerWeights(probs, sel, scale, 'ds4') as Float32Array, 0]];
}

/** A Q8_K activation as the device keeps it (q i8, d f32 per 256, bsums i32 per 16) → the reference's Q8KAct. */
function q8k(q: Int8Array, d: Float32Array, bsums: Int32Array | null): Q8KAct {
  return { q, d, bsums: bsums ? Int16Array.from(bsums) : new Int16Array(q.length / 16) };
}

/** rope_tail's scalars → the reference RoPE (the layer's YaRN parameters come from cfg, as ropeScalars built them). */
function ropeHost(x: Float32Array, s: number[], cx: HostContext): Float32Array {
  const [nTok, nHead, headDim, , pos0] = s;
  const inverse = s[12] === 1;
  for (let t = 0; t < nTok; t++) {
    const row = x.subarray(t * nHead * headDim, (t + 1) * nHead * headDim);
    ropeTailInplace(cx.cfg, cx.layer, row, nHead, headDim, pos0 + t, inverse, 'ds4');
  }
  return x;
}

export const HOST_KERNELS: Record<string, HostKernel> = {
  fill: {
    inputs: () => [],
    compute: (_, [value, n]) => [[0, new Float32Array(n).fill(value), 0]],
  },
  copy: {
    inputs: ([, srcOff, bytes]) => [[1, bytes, srcOff]],
    compute: ([src], [dstOff]) => [[0, src, dstOff]],
  },
  embed_token_hc: {
    inputs: ([tok, E]) => [[1, E * 2, tok * E * 2]],
    compute: ([row], [, E, H], cx) => {
      const x = Float32Array.from(new Uint16Array(row.buffer, row.byteOffset, E), f16ToF32);
      return [[0, embedHc({ ...cx.cfg, nEmbd: E, nHc: H }, 'ds4', x) as Float32Array, 0]];
    },
  },
  quantize_q8_0: {
    inputs: ([n, nTok]) => [[2, n * nTok * 4]],
    compute: ([x], [n, nTok]) => {
      const q = new Int8Array(n * nTok), d = new Float32Array((n * nTok) / 32);
      for (let t = 0; t < nTok; t++) {
        const a = quantizeQ8_0Act(f32(x), t * n, n);
        q.set(a.q, t * n);
        d.set(a.d, (t * n) / 32);
      }
      return [[0, q, 0], [1, d, 0]];
    },
  },
  matmul_q8_0_prequant: {
    inputs: ([inDim, outDim, nTok]) => [[1, (inDim / 32) * Q8_0_BLOCK_BYTES * outDim], [2, inDim * nTok], [3, (inDim / 32) * nTok * 4]],
    compute: ([w, xq, xd], [inDim, outDim, nTok]) => {
      const out = new Float32Array(outDim * nTok);
      for (let t = 0; t < nTok; t++) {
        const act = { q: i8(xq).subarray(t * inDim, (t + 1) * inDim), d: f32(xd).subarray((t * inDim) / 32, ((t + 1) * inDim) / 32) };
        matvecQ8_0Act(w, outDim, inDim, act, out.subarray(t * outDim, (t + 1) * outDim));
      }
      return [[0, out, 0]];
    },
  },
  quantize_q8_k: {
    inputs: ([n]) => [[3, n * 4]],
    compute: ([x], [n]) => {
      const a = quantizeQ8_K(f32(x), 0, n);
      return [[0, a.q, 0], [1, a.d, 0], [2, Int32Array.from(a.bsums), 0]];
    },
  },
  hc_split_sinkhorn4: {
    inputs: ([rows]) => [[1, rows * 24 * 4], [2, 3 * 4], [3, 24 * 4]],
    compute: ([mix, scale, base], [rows, iters, eps]) => {
      const out = new Float32Array(rows * 24);
      for (let r = 0; r < rows; r++) {
        const sp = hcSplitSinkhorn(f32(mix).subarray(r * 24, (r + 1) * 24), f32(scale), f32(base), 4, iters, eps, 'ds4');
        out.set(sp.pre, r * 24);
        out.set(sp.post, r * 24 + 4);
        out.set(sp.comb, r * 24 + 8);
      }
      return [[0, out, 0]];
    },
  },
  router_select: {
    inputs: ([nExp, k, token, hasBias, useHash]) => [[3, nExp * 4], ...(hasBias ? [[4, nExp * 4] as ReadSpan] : []), ...(useHash ? [[5, k * 4, token * k * 4] as ReadSpan] : [])],
    compute: (ins, [, k, , hasBias, useHash, scale]) =>
      routerOutputs(routerProbs(f32(ins[0]), 'ds4') as Float32Array, k, scale, hasBias ? f32(ins[1]) : undefined, useHash ? i32(ins[hasBias ? 2 : 1]) : undefined),
  },
  attention_decode: {
    inputs: ([useMask, , cap, , nComp, NH, D]) => [[1, NH * 4], [2, NH * D * 4], [3, cap * D * 4], ...(nComp ? [[4, nComp * D * 4] as ReadSpan] : []), ...(useMask ? [[5, nComp * 4] as ReadSpan] : [])],
    compute: (ins, [useMask, nRaw, cap, start, nComp, NH, D]) => {
      const ring = f32(ins[2]);
      // the ring oldest-first, as the reference's raw cache holds it
      const raw = new Float32Array(nRaw * D);
      for (let i = 0; i < nRaw; i++) raw.set(ring.subarray(((start + i) % cap) * D, ((start + i) % cap + 1) * D), i * D);
      const comp = nComp ? f32(ins[3]) : null;
      const allowed = useMask ? Uint8Array.from(f32(ins[nComp ? 4 : 3]), (m) => (m > -1e20 ? 1 : 0)) : null;
      return [[0, attentionWithSinks(f32(ins[1]), NH, D, f32(ins[0]), raw, nRaw, comp, nComp, allowed, 'ds4') as Float32Array, 0]];
    },
  },
  attention_output_low_q8: {
    inputs: ([groupDim, rank, G, nTok]) => [[1, (groupDim / 32) * Q8_0_BLOCK_BYTES * rank * G], [2, groupDim * G * nTok * 4]],
    compute: ([w, heads], [groupDim, rank, G, nTok]) => {
      // group g: rows g·rank.. of attn_output_a on its own quantized slice of the heads (ds4 layer_grouped_out_one)
      const out = new Float32Array(rank * G * nTok), rb = (groupDim / 32) * Q8_0_BLOCK_BYTES;
      for (let t = 0; t < nTok; t++) for (let g = 0; g < G; g++) {
        const x = f32(heads).subarray((t * G + g) * groupDim, (t * G + g + 1) * groupDim);
        matvecQ8_0(w.subarray(g * rank * rb, (g + 1) * rank * rb), rank, groupDim, x, out.subarray((t * G + g) * rank, (t * G + g + 1) * rank));
      }
      return [[0, out, 0]];
    },
  },
  moe_gate_up_mid_iq2_q8: {
    inputs: ([E, F, K]) => [[3, K * F * (E / 256) * IQ2_XXS_BLOCK_BYTES], [4, K * F * (E / 256) * IQ2_XXS_BLOCK_BYTES], [5, E], [6, (E / 256) * 4], [7, K * 4], [8, K * 4]],
    compute: ([gw, uw, xq, xd, rw, slot], [E, F, K, clamp]) => {
      const act = q8k(i8(xq), f32(xd), null), rb = (E / 256) * IQ2_XXS_BLOCK_BYTES, W = f32(rw), S = i32(slot);
      const gate = new Float32Array(K * F), up = new Float32Array(K * F), mid = new Float32Array(K * F);
      for (let k = 0; k < K; k++) for (let row = 0; row < F; row++) {
        const o = (S[k] * F + row) * rb;
        // ds4 swiglu clamp: the gate from above only, the up both ways; the router weight before down
        const g = Math.min(dotIQ2_XXS_Q8_K(gw, o, act), clamp), u = Math.max(-clamp, Math.min(clamp, dotIQ2_XXS_Q8_K(uw, o, act)));
        gate[k * F + row] = g;
        up[k * F + row] = u;
        mid[k * F + row] = Math.fround(Math.fround(silu(g) * u) * W[k]);
      }
      return [[0, gate, 0], [1, up, 0], [2, mid, 0]];
    },
  },
  moe_down_q2_q8: {
    inputs: ([F, E, K]) => [[1, K * E * (F / 256) * Q2_K_BLOCK_BYTES], [2, K * F], [3, (K * F / 256) * 4], [4, (K * F / 16) * 4], [5, K * 4]],
    compute: ([dw, mq, md, mbs, slot], [F, E, K]) => {
      const rb = (F / 256) * Q2_K_BLOCK_BYTES, S = i32(slot), down = new Float32Array(K * E);
      for (let k = 0; k < K; k++) {
        const act = q8k(i8(mq).subarray(k * F, (k + 1) * F), f32(md).subarray((k * F) / 256, ((k + 1) * F) / 256), i32(mbs).subarray((k * F) / 16, ((k + 1) * F) / 16));
        for (let d = 0; d < E; d++) down[k * E + d] = dotQ2_K_Q8_K(dw, (S[k] * E + d) * rb, act);
      }
      return [[0, down, 0]];
    },
  },
  compressor_set_rows: {
    inputs: ([width, ratio, pos, apeF16]) => [[2, width * 4], [3, width * 4], [4, width * (apeF16 ? 2 : 4), (pos % ratio) * width * (apeF16 ? 2 : 4)]],
    compute: ([kv, score, ape], [width, ratio, pos, apeF16]) => {
      const a = apeF16 ? Float32Array.from(new Uint16Array(ape.buffer, ape.byteOffset, width), f16ToF32) : f32(ape);
      const sc = Float32Array.from(f32(score), (v, j) => v + a[j]);
      const row = (ratio === 4 ? ratio + (pos % ratio) : pos % ratio) * width * 4;
      return [[3, sc, 0], [0, f32(kv).slice(), row], [1, sc, row]];
    },
  },
  compressor_update_pool: {
    inputs: ([dim, ratio]) => [[1, (ratio === 4 ? 2 : 1) ** 2 * ratio * dim * 4], [2, (ratio === 4 ? 2 : 1) ** 2 * ratio * dim * 4]],
    compute: ([kv, score], [dim, ratio]) => {
      const coff = ratio === 4 ? 2 : 1;
      const st: CompressorState = { lane: 'attn', ratio, dim, coff, width: coff * dim, kv: f32(kv), score: f32(score) };
      return [[0, compressorPool(st, 'ds4') as Float32Array, 0]];
    },
  },
  compressor_shift_ratio4: {
    inputs: ([width]) => [[0, 4 * width * 4, 4 * width * 4], [1, 4 * width * 4, 4 * width * 4]],
    compute: ([kv, score]) => [[0, kv, 0], [1, score, 0]],
  },
  indexer_weights_scale: {
    inputs: ([IH]) => [[0, IH * 4]],
    compute: ([w], [IH, ID]) => {
      const scale = Math.fround(1 / Math.fround(Math.sqrt(ID * IH)));
      return [[0, Float32Array.from(f32(w), (v) => v * scale), 0]];
    },
  },
  indexer_scores: {
    inputs: ([n, IH, ID]) => [[1, IH * ID * 4], [2, IH * 4], [3, n * ID * 4]],
    compute: ([q, w, k], [n, IH, ID]) => {
      // S8 ds4 indexer_allowed_decode_one: Σ_h relu(q_h·k_c)·w_h
      const Q = f32(q), W = f32(w), Kc = f32(k);
      return [[0, Float32Array.from({ length: n }, (_, c) => {
        let s = 0;
        for (let h = 0; h < IH; h++) s = Math.fround(s + Math.fround(Math.max(0, dot(Kc, c * ID, Q, h * ID, ID, 'ds4')) * W[h]));
        return s;
      }), 0]];
    },
  },
  indexer_topk: {
    inputs: ([n]) => [[2, n * 4]],
    compute: ([scores], [n, k]) => {
      // repeated arg-max, strict >, ties to the lowest index (ds4 S8); the mask hides the rest
      const S = f32(scores), top = new Int32Array(k), mask = new Float32Array(n).fill(NEG_INF);
      for (let j = 0; j < k; j++) {
        let best = -1;
        for (let c = 0; c < n; c++) if (mask[c] !== 0 && (best < 0 || S[c] > S[best])) best = c;
        top[j] = best;
        mask[best] = 0;
      }
      return [[0, top, 0], [1, mask, 0]];
    },
  },
  swiglu: {
    inputs: ([n]) => [[1, n * 4], [2, n * 4]],
    compute: ([g, u], [n, c]) => {
      const G = f32(g), U = f32(u);
      return [[0, Float32Array.from({ length: n }, (_, i) => Math.fround(silu(Math.min(G[i], c)) * Math.max(-c, Math.min(c, U[i])))), 0]];
    },
  },
  add: {
    inputs: ([n]) => [[1, n * 4], [2, n * 4]],
    compute: ([a, b], [n]) => {
      const A = f32(a), B = f32(b);
      return [[0, Float32Array.from({ length: n }, (_, i) => A[i] + B[i]), 0]];
    },
  },
  moe_sum_experts: {
    inputs: ([n, k]) => [[1, n * k * 4]],
    compute: ([down], [n, k]) => {
      const D = f32(down);
      return [[0, Float32Array.from({ length: n }, (_, d) => {
        let acc = 0;
        for (let j = 0; j < k; j++) acc = Math.fround(acc + D[j * n + d]);
        return acc;
      }), 0]];
    },
  },
  rms_norm_weight: {
    inputs: ([n, rows]) => [[1, n * rows * 4], [2, n * 4]],
    compute: ([x, w], [n, rows, eps]) => [[0, rowsOf(f32(x), n, rows, (r) => rmsNorm(r, f32(w), eps, 'ds4') as Float32Array), 0]],
  },
  rms_norm_plain: {
    inputs: ([n, rows]) => [[1, n * rows * 4]],
    compute: ([x], [n, rows, eps]) => [[0, rowsOf(f32(x), n, rows, (r) => rmsNorm(r, null, eps, 'ds4') as Float32Array), 0]],
  },
  rms_norm_inplace: {
    inputs: ([n, rows]) => [[0, n * rows * 4]],
    compute: ([x], [n, rows, eps]) => {
      const X = f32(x).slice();
      headRmsNormInplace(X, rows, n, eps, 'ds4');
      return [[0, X, 0]];
    },
  },
  matmul_f16: {
    inputs: ([inDim, outDim, nTok]) => [[1, inDim * outDim * 2], [2, inDim * nTok * 4]],
    compute: ([w, x], [inDim, outDim, nTok]) => [[0, rowsOf(f32(x), inDim, nTok, (r) => {
      const out = new Float32Array(outDim);
      matvecF16(w, outDim, inDim, r, out);
      return out;
    }), 0]],
  },
  matmul_q8_0: {
    inputs: ([inDim, outDim, nTok]) => [[1, (inDim / 32) * 34 * outDim], [2, inDim * nTok * 4]],
    compute: ([w, x], [inDim, outDim, nTok]) => [[0, rowsOf(f32(x), inDim, nTok, (r) => {
      const out = new Float32Array(outDim);
      matvecQ8_0(w, outDim, inDim, r, out);
      return out;
    }), 0]],
  },
  rope_tail: {
    inputs: ([nTok, nHead, headDim]) => [[0, nTok * nHead * headDim * 4]],
    compute: ([x], s, cx) => [[0, ropeHost(f32(x).slice(), s, cx), 0]],
  },
  hc_weighted_sum4: {
    inputs: ([E, rows, stride]) => [[1, rows * 4 * E * 4], [2, rows * stride * 4]],
    compute: ([x, w], [E, rows, stride], cx) => {
      const X = f32(x), W = f32(w), out = new Float32Array(rows * E);
      const cfg = { ...cx.cfg, nEmbd: E, nHc: 4 };
      for (let r = 0; r < rows; r++) out.set(hcWeightedSum(cfg, X.subarray(r * 4 * E, (r + 1) * 4 * E), W.subarray(r * stride, r * stride + 4), 'ds4'), r * E);
      return [[0, out, 0]];
    },
  },
  hc_expand_split: {
    inputs: ([E, H, rows, hasAdd]) => [[1, rows * E * 4], ...(hasAdd ? [[2, rows * E * 4] as ReadSpan] : []), [3, rows * H * E * 4], [4, rows * (2 * H + H * H) * 4]],
    compute: (ins, [E, H, rows, hasAdd]) => {
      const x = f32(ins[0]), add = hasAdd ? f32(ins[1]) : undefined, hc = f32(ins[hasAdd ? 2 : 1]), split = f32(ins[hasAdd ? 3 : 2]);
      const M = 2 * H + H * H, out = new Float32Array(rows * H * E);
      const cfg = { nEmbd: E, nHc: H } as Ds4Config;
      for (let r = 0; r < rows; r++) {
        const block = add ? Float32Array.from({ length: E }, (_, d) => x[r * E + d] + add[r * E + d]) : x.subarray(r * E, (r + 1) * E);
        const sp = split.subarray(r * M, (r + 1) * M);
        out.set(hcPost(cfg, block, hc.subarray(r * H * E, (r + 1) * H * E), sp.subarray(H, 2 * H), sp.subarray(2 * H), 'ds4'), r * H * E);
      }
      return [[0, out, 0]];
    },
  },
  output_hc_weights: {
    inputs: ([H, nTok]) => [[1, H * nTok * 4], [2, 4], [3, H * 4]],
    compute: ([pre, scale, base], [H, nTok, eps], cx) => {
      const P = f32(pre), out = new Float32Array(H * nTok);
      const cfg = { ...cx.cfg, nHc: H, hcEps: eps };
      for (let t = 0; t < nTok; t++) out.set(outputHcWeights(cfg, P.subarray(t * H, (t + 1) * H), f32(scale), f32(base), 'ds4'), t * H);
      return [[0, out, 0]];
    },
  },
  fp8_kv_quantize: {
    inputs: ([nTok, D]) => [[0, nTok * D * 4]],
    compute: ([x], [nTok, D, nRot]) => {
      const X = f32(x).slice();
      for (let t = 0; t < nTok; t++) fp8KvQuantizeInplace(X, t * D, D - nRot);
      return [[0, X, 0]];
    },
  },
  indexer_qat: {
    inputs: ([rows]) => [[0, rows * 128 * 4]],
    compute: ([x], [rows]) => {
      const X = f32(x).slice();
      for (let r = 0; r < rows; r++) indexerQat(X, r * 128);
      return [[0, X, 0]];
    },
  },
  store_raw_kv: {
    inputs: ([, , nTok, D]) => [[1, nTok * D * 4]],
    compute: ([kv], [cap, pos0, nTok, D]) => {
      const X = f32(kv);
      // ring rows pos0..pos0+nTok-1 mod cap, stored f16 as ds4's cache keeps them; contiguous unless the ring wraps
      return Array.from({ length: nTok }, (_, t) => [0, cacheStore(X.subarray(t * D, (t + 1) * D), 'ds4'), ((pos0 + t) % cap) * D * 4] as WriteSpan);
    },
  },
};

/** Apply a per-row function to `rows` rows of n (row-major) and concatenate. */
function rowsOf(x: Float32Array, n: number, rows: number, f: (row: Float32Array) => Float32Array): Float32Array {
  if (rows === 1) return f(x.subarray(0, n));
  const outs = Array.from({ length: rows }, (_, r) => f(x.subarray(r * n, (r + 1) * n)));
  const out = new Float32Array(outs.reduce((a, o) => a + o.length, 0));
  let off = 0;
  for (const o of outs) { out.set(o, off); off += o.length; }
  return out;
}
