// 256-element "K" formats used by DS4 experts (catalog §3, §S15): dequantization and the dot
// products with a Q8_K activation (ds4.c ds4_vec_dot_q2_K_q8_K l.1769, ds4_vec_dot_iq2_xxs_q8_K
// l.1889, scalar paths). Block layouts are ggml's (ggml-common.h), all little-endian:
//
//   block_q2_K  (84 B):  u8 scales[16] | u8 qs[64] | f16 d | f16 dmin
//     16 sub-blocks of 16; scales[s] = scale (low nibble) | min (high nibble).
//     Element i (0..255): half h = i>>7, within it shift = 2·((i>>5)&3), byte qs[32h + (i&31)];
//     sub-block s = i>>4; value = d·(sc&15)·((qs>>shift)&3) − dmin·(sc>>4).
//   block_q4_K  (144 B): f16 d | f16 dmin | u8 scales[12] | u8 qs[128]
//     8 sub-blocks of 32 with 6-bit scale sc and 6-bit min m packed in 12 bytes (unpackQ4KScales);
//     pair p = i>>6 uses qs[32p..32p+31], low nibbles for sub-block 2p, high nibbles for 2p+1;
//     value = d·sc·q − dmin·m.
//   block_iq2_xxs (66 B): f16 d | u16 qs[32]
//     8 sub-blocks of 32; sub-block k owns 8 bytes at 2+8k: bytes 0..3 are grid indices (one per
//     8 elements), bytes 4..7 form u32 aux = 4 × 7-bit sign indices (bits 7l..7l+6) | 4-bit scale s (bits 28..31).
//     value = d·(0.5+s)/4 · grid[idx][j] · (bit j of ksigns(sign index) ? −1 : 1).

import { F16_TABLE } from './f16.ts';
import { IQ2XXS_GRID } from './iq2xxs-grid.ts';
import { CODES, dataView, int8View, stageCodes, type Q8KAct } from './q8.ts';
import { QK_K } from './types.ts';

const fround = Math.fround;
// Module-local aliases: reading an imported binding in a hot loop is measurably slower than a local const.
const F16 = F16_TABLE;
const GRID = IQ2XXS_GRID;
const C = CODES;
// non-exported aliases of the block sizes for the hot loops (an exported binding is reloaded from its module cell)
const Q2K_BYTES = 84;
const IQ2_BYTES = 66;

export const Q2_K_BLOCK_BYTES = 84;
export const Q4_K_BLOCK_BYTES = 144;
export const IQ2_XXS_BLOCK_BYTES = 66;

/**
 * ggml ksigns_iq2xs: a 7-bit index carries 7 explicit signs; the 8th sign is implied so that the
 * number of negative elements is even (bit 7 = parity of the low 7 bits).
 */
export function ksignsIq2xs(index: number): number {
  let parity = 0;
  for (let v = index & 127; v; v >>= 1) parity ^= v & 1;
  return (index & 127) | (parity << 7);
}

/** IQ2XXS_SIGNS[s·8 + j] = ±1: the sign of element j under 7-bit sign index s. */
const IQ2XXS_SIGNS: Int8Array = (() => {
  const t = new Int8Array(128 * 8);
  for (let s = 0; s < 128; s++) {
    const bits = ksignsIq2xs(s);
    for (let j = 0; j < 8; j++) t[s * 8 + j] = bits & (1 << j) ? -1 : 1;
  }
  return t;
})();

/**
 * SIGNED_GRID[(g·128 + s)·8 + j] = grid[g][j] · sign_j(s): every grid point under every sign
 * pattern (256 KB), so the dot's inner loop is one lookup and one multiply per element.
 */
const SIGNED_GRID: Int8Array = (() => {
  const t = new Int8Array(256 * 128 * 8);
  for (let g = 0; g < 256; g++) {
    for (let s = 0; s < 128; s++) {
      for (let j = 0; j < 8; j++) t[(g * 128 + s) * 8 + j] = IQ2XXS_GRID[g * 8 + j] * IQ2XXS_SIGNS[s * 8 + j];
    }
  }
  return t;
})();

/** SIGNED_GRID as int32 words: the 8 signed values of one (grid point, sign pattern) are words 2i, 2i + 1. */
const SIGNED_GRID_WORDS = new Int32Array(SIGNED_GRID.buffer);

function f16At(b: Uint8Array, o: number): number {
  return F16[b[o] | (b[o + 1] << 8)];
}

function u32At(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}

function wholeBlocks(name: string, n: number): number {
  if (n % QK_K !== 0) throw new Error(`${name}: ${n} elements is not a multiple of ${QK_K}`);
  return n / QK_K;
}

export function dequantizeQ2_K(src: Uint8Array, n: number, out: Float32Array): void {
  const blocks = wholeBlocks('Q2_K', n);
  for (let b = 0; b < blocks; b++) {
    const o = b * Q2_K_BLOCK_BYTES;
    const d = f16At(src, o + 80);
    const dmin = f16At(src, o + 82);
    for (let i = 0; i < QK_K; i++) {
      const sc = src[o + (i >> 4)];
      const q = (src[o + 16 + 32 * (i >> 7) + (i & 31)] >> (2 * ((i >> 5) & 3))) & 3;
      out[b * QK_K + i] = fround(fround(d * (sc & 15)) * q - fround(dmin * (sc >> 4)));
    }
  }
}

/** 6-bit scale and min of sub-block j (0..7) of a Q4_K block whose 12 scale bytes start at o (ggml get_scale_min_k4). */
export function unpackQ4KScales(b: Uint8Array, o: number, j: number): { sc: number; m: number } {
  if (j < 4) return { sc: b[o + j] & 63, m: b[o + j + 4] & 63 };
  return {
    sc: (b[o + j + 4] & 15) | ((b[o + j - 4] >> 6) << 4),
    m: (b[o + j + 4] >> 4) | ((b[o + j] >> 6) << 4),
  };
}

export function dequantizeQ4_K(src: Uint8Array, n: number, out: Float32Array): void {
  const blocks = wholeBlocks('Q4_K', n);
  for (let b = 0; b < blocks; b++) {
    const o = b * Q4_K_BLOCK_BYTES;
    const d = f16At(src, o);
    const dmin = f16At(src, o + 2);
    for (let s = 0; s < 8; s++) {
      const { sc, m } = unpackQ4KScales(src, o + 4, s);
      const ds = fround(d * sc);
      const ms = fround(dmin * m);
      const qo = o + 16 + 32 * (s >> 1);
      const shift = 4 * (s & 1);
      for (let l = 0; l < 32; l++) out[b * QK_K + s * 32 + l] = fround(ds * ((src[qo + l] >> shift) & 15) - ms);
    }
  }
}

export function dequantizeIQ2_XXS(src: Uint8Array, n: number, out: Float32Array): void {
  const blocks = wholeBlocks('IQ2_XXS', n);
  for (let b = 0; b < blocks; b++) {
    const o = b * IQ2_XXS_BLOCK_BYTES;
    const d = f16At(src, o);
    for (let k = 0; k < 8; k++) {
      const so = o + 2 + 8 * k;
      const aux = u32At(src, so + 4);
      const db = fround(fround(d * (0.5 + (aux >>> 28))) * 0.25);
      for (let l = 0; l < 4; l++) {
        const g = src[so + l] * 8;
        const s = ((aux >>> (7 * l)) & 127) * 8;
        for (let j = 0; j < 8; j++) {
          out[b * QK_K + k * 32 + l * 8 + j] = fround(db * GRID[g + j] * IQ2XXS_SIGNS[s + j]);
        }
      }
    }
  }
}

/**
 * Rows [r0, r1) of a Q2_K matrix (`blocks` 256-blocks per row) · a Q8_K activation, ds4
 * ds4_vec_dot_q2_K_q8_K's scalar order: per block the integer sums isum = Σ (sc&15)·dot(q2, q8) and
 * summs = Σ bsums·(sc>>4), then sum += d_x·d_w·isum − d_x·dmin_w·summs in f32 into out32[r], and/or the
 * same terms in f64 into out64[r] (the rounding-noise twin) — one pass over the weights for both. The
 * activation comes as its arrays (codes staged in CODES at xo, scales xd, 16-element sums bsums), not as
 * the Q8KAct: a worker receives structured clones, objects whose maps come and go with them, and optimized
 * code that checked one such map was thrown away mid-run.
 */
export function q2kRows(w: Uint8Array, xd: Float32Array, bsums: Int16Array, xo: number, r0: number, r1: number, out32?: Float32Array, out64?: Float64Array): void {
  const q8 = C, blocks = xd.length;
  const rb = blocks * Q2K_BYTES;
  const dv = dataView(w);
  for (let r = r0; r < r1; r++) {
    let s32 = 0, s64 = 0;
    for (let b = 0, o = r * rb; b < blocks; b++, o += Q2K_BYTES) {
      let summs = 0;
      for (let s = 0; s < 16; s++) summs += bsums[b * 16 + s] * (w[o + s] >> 4);
      // Each q byte holds the 2-bit codes of four elements 32 apart (shifts 0, 2, 4, 6); read four bytes at
      // once. Sub-block of element 128h + 32t + l is 8h + 2t + (l >= 16).
      let isum = 0;
      for (let h = 0; h < 2; h++) {
        for (let half = 0; half < 2; half++) {
          const qo = o + 16 + 32 * h + 16 * half;
          const xb = xo + b * QK_K + 128 * h + 16 * half;
          let d0 = 0, d1 = 0, d2 = 0, d3 = 0;
          for (let l = 0; l < 16; l += 4) {
            const v = dv.getInt32(qo + l, true);
            for (let k = 0; k < 4; k++) {
              const byte = (v >>> (8 * k)) & 255, x = xb + l + k;
              d0 += (byte & 3) * q8[x];
              d1 += ((byte >> 2) & 3) * q8[x + 32];
              d2 += ((byte >> 4) & 3) * q8[x + 64];
              d3 += (byte >> 6) * q8[x + 96];
            }
          }
          const sc = o + 8 * h + half;
          isum += (w[sc] & 15) * d0 + (w[sc + 2] & 15) * d1 + (w[sc + 4] & 15) * d2 + (w[sc + 6] & 15) * d3;
        }
      }
      const d = f16At(w, o + 80), dmin = f16At(w, o + 82);
      s64 += xd[b] * d * isum - xd[b] * dmin * summs;
      const dall = fround(xd[b] * d);
      const dm = fround(xd[b] * dmin);
      s32 = fround(s32 + fround(fround(dall * fround(isum)) - fround(dm * fround(summs))));
    }
    if (out32) out32[r] = s32;
    if (out64) out64[r] = s64;
  }
}

/** One Q2_K row (xq.d.length blocks at byte wOffset) · Q8_K activation (q2kRows); `exact`: the f64 twin. */
export function dotQ2_K_Q8_K(w: Uint8Array, wOffset: number, xq: Q8KAct, exact = false): number {
  const row = w.subarray(wOffset, wOffset + xq.d.length * Q2_K_BLOCK_BYTES);
  if (exact) {
    const o = new Float64Array(1);
    q2kRows(row, xq.d, xq.bsums, stageCodes([xq.q])[0], 0, 1, undefined, o);
    return o[0];
  }
  const o = new Float32Array(1);
  q2kRows(row, xq.d, xq.bsums, stageCodes([xq.q])[0], 0, 1, o);
  return o[0];
}

/**
 * Rows [r0, r1) of an IQ2_XXS matrix · a Q8_K activation, ds4 ds4_vec_dot_iq2_xxs_q8_K's scalar order:
 * per 32-sub-block the int dot of signed grid values with q8, times ls = 2s+1 = 2·(0.5+s) so it stays an
 * integer, summed as int per block; sum += d_w·d_x·bsum in f32 into out32[r] (and/or in f64 into out64[r],
 * the twin); result × 0.125 = the format's 1/4 times 1/2 undoing the 2 in ls. Four rows run side by side,
 * each loaded group of eight activation codes used for the four (as q8_0Rows; the same bits per row).
 * The activation as its arrays (codes at xo, scales xd), as q2kRows takes it.
 */
export function iq2xxsRows(w: Uint8Array, xd: Float32Array, xo: number, r0: number, r1: number, out32?: Float32Array, out64?: Float64Array): void {
  const q8 = C, blocks = xd.length;
  const rb = blocks * IQ2_BYTES;
  const G = SIGNED_GRID_WORDS;
  const dv = dataView(w);
  for (let i0 = r0; i0 < r1; i0 += 4) {
    const i1 = Math.min(i0 + 1, r1 - 1), i2 = Math.min(i0 + 2, r1 - 1), i3 = Math.min(i0 + 3, r1 - 1);
    // the other rows' byte offsets from the first's
    const o1 = (i1 - i0) * rb, o2 = (i2 - i0) * rb, o3 = (i3 - i0) * rb;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, e0 = 0, e1 = 0, e2 = 0, e3 = 0;
    for (let b = 0, o = i0 * rb; b < blocks; b++, o += IQ2_BYTES) {
      let b0 = 0, b1 = 0, b2 = 0, b3 = 0;
      for (let k = 0, so = o + 2, xi = xo + b * QK_K; k < 8; k++, so += 8) {
        const idx0 = dv.getUint32(so, true), aux0 = dv.getUint32(so + 4, true);
        const idx1 = dv.getUint32(so + o1, true), aux1 = dv.getUint32(so + o1 + 4, true);
        const idx2 = dv.getUint32(so + o2, true), aux2 = dv.getUint32(so + o2 + 4, true);
        const idx3 = dv.getUint32(so + o3, true), aux3 = dv.getUint32(so + o3 + 4, true);
        let u0 = 0, u1 = 0, u2 = 0, u3 = 0;
        for (let l = 0; l < 4; l++, xi += 8) {
          const x0 = q8[xi], x1 = q8[xi + 1], x2 = q8[xi + 2], x3 = q8[xi + 3], x4 = q8[xi + 4], x5 = q8[xi + 5], x6 = q8[xi + 6], x7 = q8[xi + 7];
          // the 8 signed grid values of (grid index byte l, sign index l): words gs, gs + 1 of G
          let gs = (((idx0 >>> (8 * l)) & 255) * 128 + ((aux0 >>> (7 * l)) & 127)) * 2;
          let a = G[gs], c = G[gs + 1];
          u0 += ((a << 24) >> 24) * x0 + ((a << 16) >> 24) * x1 + ((a << 8) >> 24) * x2 + (a >> 24) * x3
            + ((c << 24) >> 24) * x4 + ((c << 16) >> 24) * x5 + ((c << 8) >> 24) * x6 + (c >> 24) * x7;
          gs = (((idx1 >>> (8 * l)) & 255) * 128 + ((aux1 >>> (7 * l)) & 127)) * 2;
          a = G[gs], c = G[gs + 1];
          u1 += ((a << 24) >> 24) * x0 + ((a << 16) >> 24) * x1 + ((a << 8) >> 24) * x2 + (a >> 24) * x3
            + ((c << 24) >> 24) * x4 + ((c << 16) >> 24) * x5 + ((c << 8) >> 24) * x6 + (c >> 24) * x7;
          gs = (((idx2 >>> (8 * l)) & 255) * 128 + ((aux2 >>> (7 * l)) & 127)) * 2;
          a = G[gs], c = G[gs + 1];
          u2 += ((a << 24) >> 24) * x0 + ((a << 16) >> 24) * x1 + ((a << 8) >> 24) * x2 + (a >> 24) * x3
            + ((c << 24) >> 24) * x4 + ((c << 16) >> 24) * x5 + ((c << 8) >> 24) * x6 + (c >> 24) * x7;
          gs = (((idx3 >>> (8 * l)) & 255) * 128 + ((aux3 >>> (7 * l)) & 127)) * 2;
          a = G[gs], c = G[gs + 1];
          u3 += ((a << 24) >> 24) * x0 + ((a << 16) >> 24) * x1 + ((a << 8) >> 24) * x2 + (a >> 24) * x3
            + ((c << 24) >> 24) * x4 + ((c << 16) >> 24) * x5 + ((c << 8) >> 24) * x6 + (c >> 24) * x7;
        }
        b0 += u0 * (2 * (aux0 >>> 28) + 1);
        b1 += u1 * (2 * (aux1 >>> 28) + 1);
        b2 += u2 * (2 * (aux2 >>> 28) + 1);
        b3 += u3 * (2 * (aux3 >>> 28) + 1);
      }
      const x = xd[b];
      const d0 = F16[dv.getUint16(o, true)], d1 = F16[dv.getUint16(o + o1, true)];
      const d2 = F16[dv.getUint16(o + o2, true)], d3 = F16[dv.getUint16(o + o3, true)];
      e0 += d0 * x * b0;
      e1 += d1 * x * b1;
      e2 += d2 * x * b2;
      e3 += d3 * x * b3;
      s0 = fround(s0 + fround(fround(d0 * x) * fround(b0)));
      s1 = fround(s1 + fround(fround(d1 * x) * fround(b1)));
      s2 = fround(s2 + fround(fround(d2 * x) * fround(b2)));
      s3 = fround(s3 + fround(fround(d3 * x) * fround(b3)));
    }
    if (out32) out32[i0] = fround(0.125 * s0), out32[i1] = fround(0.125 * s1), out32[i2] = fround(0.125 * s2), out32[i3] = fround(0.125 * s3);
    if (out64) out64[i0] = 0.125 * e0, out64[i1] = 0.125 * e1, out64[i2] = 0.125 * e2, out64[i3] = 0.125 * e3;
  }
}

/** One IQ2_XXS row (xq.d.length blocks at byte wOffset) · Q8_K activation (iq2xxsRows); `exact`: the f64 twin. */
export function dotIQ2_XXS_Q8_K(w: Uint8Array, wOffset: number, xq: Q8KAct, exact = false): number {
  const row = w.subarray(wOffset, wOffset + xq.d.length * IQ2_XXS_BLOCK_BYTES);
  if (exact) {
    const o = new Float64Array(1);
    iq2xxsRows(row, xq.d, stageCodes([xq.q])[0], 0, 1, undefined, o);
    return o[0];
  }
  const o = new Float32Array(1);
  iq2xxsRows(row, xq.d, stageCodes([xq.q])[0], 0, 1, o);
  return o[0];
}

/** Q8_K block values d·q (used to dequantize stored Q8_K rows). Layout: f32 d | i8 qs[256] | i16 bsums[16]. */
export function dequantizeQ8_K(src: Uint8Array, n: number, out: Float32Array): void {
  const blocks = wholeBlocks('Q8_K', n);
  const i8 = int8View(src);
  const bytes = 4 + QK_K + 32;
  for (let b = 0; b < blocks; b++) {
    const o = b * bytes;
    const d = new DataView(src.buffer, src.byteOffset + o, 4).getFloat32(0, true);
    for (let i = 0; i < QK_K; i++) out[b * QK_K + i] = fround(d * i8[o + 4 + i]);
  }
}
