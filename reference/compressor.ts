// The KV compressor (catalog S7, and the indexer's own compressor in S8): ds4.c
// `compressor_decode_one` + `compressor_pool_decode_state`. Every token projects a kv row and a
// score row (F16 matvecs of attn_norm, score + ape[pos mod ratio]) into a rolling state; when
// (pos+1) % ratio == 0 the window is pooled by an independent softmax per output dim, RMS-normed,
// RoPE'd at comp_pos = pos+1-ratio and quantized (FP8 for the attention lane, Hadamard-128 + FP4 for
// the indexer lane). The state is a function of the window's projections (windowState), so a row is
// recomputed from them alone.
// Ratio 4 keeps two lanes (coff = 2): state rows 0..3 hold the previous window, rows 4..7 the
// current one; the pool takes dims [0, D) of rows 0..3 and dims [D, 2D) of rows 4..7.
import type { Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import { rowBytes } from '../model/quant/types.ts';
import { dequantizeRow, fp4ActQuantizeInplace, fp8KvQuantizeInplace, hadamard128Inplace, type RoundingMargins } from '../model/quant/index.ts';
import type { LayerWeights, Precision, Vec, Weight } from './types.ts';
import { allocVec } from './types.ts';
import { expP, NEG_INF, rmsNorm, rounder } from './math.ts';
import { matvec } from './matvec.ts';
import { ropeTailInplace } from './rope.ts';

export type CompressorLane = 'attn' | 'indexer';

export interface CompressorState {
  lane: CompressorLane;
  ratio: number;
  /** output row width (headDim for the attention lane, indexerHeadDim for the indexer) */
  dim: number;
  /** 2 on ratio-4 layers (two lanes), 1 on ratio-128 layers */
  coff: number;
  /** coff * dim: width of one state row and of the per-token projections */
  width: number;
  /** [coff*ratio rows][width]: projected kv rows, 0 initially */
  kv: Vec;
  /** [coff*ratio rows][width]: scores, NEG_INF initially (an empty row) */
  score: Vec;
}

export function newCompressorState(p: Precision, lane: CompressorLane, ratio: number, dim: number): CompressorState {
  const coff = ratio === 4 ? 2 : 1;
  const width = coff * dim;
  const score = allocVec(p, coff * ratio * width);
  score.fill(NEG_INF);
  return { lane, ratio, dim, coff, width, kv: allocVec(p, coff * ratio * width), score };
}

const TENSOR_PREFIX: Record<CompressorLane, string> = { attn: 'attn_compressor', indexer: 'indexer_compressor' };

/**
 * ds4.c `compressor_pool_decode_state`: per output dim j, softmax over the window's scores and the
 * weighted sum of the kv values. A dim whose best score is still ≤ NEG_INF/2 (no token yet) is 0.
 */
export function compressorPool(st: CompressorState, p: Precision): Vec {
  const r = rounder(p);
  const { ratio, dim, width, kv, score } = st;
  const out = allocVec(p, dim);
  // (row, column offset) of every candidate: ratio 4 → previous window's first half + current window's second half
  const cands: [number, number][] = [];
  for (let i = 0; i < ratio; i++) {
    if (ratio === 4) cands.push([i * width, 0], [(ratio + i) * width, dim]);
    else cands.push([i * width, 0]);
  }
  for (let j = 0; j < dim; j++) {
    let max = NEG_INF;
    for (const [row, col] of cands) if (score[row + col + j] > max) max = score[row + col + j];
    if (max <= NEG_INF * 0.5) {
      out[j] = 0;
      continue;
    }
    let den = 0;
    let sum = 0;
    // ds4 adds the two lanes' weights of one window slot together before adding to the denominator
    for (let k = 0; k < cands.length; k += st.coff) {
      let wSlot = 0;
      for (let l = 0; l < st.coff; l++) {
        const [row, col] = cands[k + l];
        const w = expP(r(score[row + col + j] - max), p);
        wSlot = l === 0 ? w : r(wSlot + w);
        sum = r(sum + r(w * kv[row + col + j]));
      }
      den = r(den + wSlot);
    }
    out[j] = den > 0 ? r(sum / den) : 0;
  }
  return out;
}

/** The lane's projection of attn_norm: `_kv` (the row) or `_gate` (its score). */
export function compressorWeight(w: LayerWeights, lane: CompressorLane, part: 'kv' | 'gate'): Weight {
  return w.get(`${TENSOR_PREFIX[lane]}_${part}.weight`);
}

/** S7/S8 one token's kv projection: the lane's `_kv` F16 matvec of the token's attn_norm (ds4.c compressor_decode_one). */
export function compressorKv(w: LayerWeights, lane: CompressorLane, x: Vec, p: Precision): Vec {
  return matvec(compressorWeight(w, lane, 'kv'), x, p);
}

/** S7/S8 one token's score: the lane's `_gate` matvec of attn_norm plus ape[pos mod ratio] (ds4.c compressor_decode_one). */
export function compressorScore(w: LayerWeights, lane: CompressorLane, x: Vec, pos: number, ratio: number, p: Precision): Vec {
  const r = rounder(p);
  const tp = TENSOR_PREFIX[lane];
  const sc = matvec(compressorWeight(w, lane, 'gate'), x, p);
  const width = sc.length;
  const ape = w.get(`${tp}_ape.weight`);
  checkApe(ape, width, ratio);
  // ape element (j, pos mod ratio): ggml dims [width, ratio], so its row pos mod ratio (ds4.c tensor_2d_value)
  const rb = rowBytes(ape.type, width);
  const posMod = pos % ratio;
  const apeRow = dequantizeRow(ape.type, ape.data.subarray(posMod * rb, (posMod + 1) * rb), width);
  for (let j = 0; j < width; j++) sc[j] = r(sc[j] + apeRow[j]);
  return sc;
}

/**
 * The compressor state the window closing at `pos` pools, from the kv/score projections of its positions
 * (model/stages.ts windowPositions, oldest first). Ratio 128: row q mod ratio. Ratio 4: the current window
 * in rows 4..7, the previous one in rows 0..3 (empty — kv 0, score NEG_INF — for the first window), as
 * ds4.c keeps it by copying the closed window into rows 0..3.
 */
export function windowState(lane: CompressorLane, ratio: number, dim: number, pos: number, positions: number[], kv: Vec[], score: Vec[], p: Precision): CompressorState {
  const st = newCompressorState(p, lane, ratio, dim);
  positions.forEach((q, i) => {
    const row = ratio === 4 ? (q > pos - ratio ? ratio : 0) + (q % ratio) : q % ratio;
    st.kv.set(kv[i], row * st.width);
    st.score.set(score[i], row * st.width);
  });
  return st;
}

/**
 * The compressed row of the window that closes at `pos`: softmax pool of the state, RMSNorm with the
 * lane's norm, RoPE at the window's first position, then FP8 (attention lane, ds4 precision) or
 * Hadamard + FP4 (indexer lane) — catalog S7/S8, ds4.c compressor_pool_decode_state and what follows.
 */
export function closeCompressedRow(cfg: Ds4Config, il: number, w: LayerWeights, st: CompressorState, pos: number, p: Precision, margins?: RoundingMargins): Vec {
  const comp = rmsNorm(compressorPool(st, p), w.f32(`${TENSOR_PREFIX[st.lane]}_norm.weight`), cfg.rmsEps, p);
  ropeTailInplace(cfg, il, comp, 1, st.dim, pos + 1 - st.ratio, false, p);
  if (st.lane === 'attn') fp8KvQuantizeInplace(comp, 0, st.dim - cfg.nRot, margins);
  else indexerQat(comp, 0, margins);
  return comp;
}

/**
 * ds4.c `dsv4_indexer_qat_row_inplace_cpu` on the 128-wide row at `off`: Hadamard-128 then the FP4
 * activation round trip — a quantization point, so applied in both precisions. The Hadamard is
 * model/quant's f32 transform in both: the FP4 codes it feeds must be ds4's (its ~1e-7 relative
 * rounding is far below an FP4 code step).
 */
export function indexerQat(x: Vec, off: number, margins?: RoundingMargins): void {
  hadamard128Inplace(x, off);
  fp4ActQuantizeInplace(x, off, HADAMARD_N, margins);
}

/** The indexer's Hadamard transform is defined on 128-wide rows (ds4.c dies on anything else). */
export const HADAMARD_N = 128;

function checkApe(ape: Weight, width: number, ratio: number): void {
  if (ape.cols !== width || ape.rows !== ratio) {
    throw badInput(`${ape.name}: expected [${width}, ${ratio}] (compressor width, ratio), got [${ape.cols}, ${ape.rows}]`);
  }
}

/** Compressor widths of layer `il` are only defined for ratio 4 and 128 (catalog §0). */
export function checkCompressRatio(cfg: Ds4Config, il: number): number {
  const ratio = cfg.compressRatios[il];
  if (ratio !== 0 && ratio !== 4 && ratio !== 128) throw badInput(`layer ${il}: compress ratio ${ratio} is not 0, 4 or 128`);
  return ratio;
}
