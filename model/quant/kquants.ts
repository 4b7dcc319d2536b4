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
import { int8View, type Q8KAct } from './q8.ts';
import { QK_K } from './types.ts';

const fround = Math.fround;
// Module-local aliases: reading an imported binding in a hot loop is measurably slower than a local const.
const F16 = F16_TABLE;
const GRID = IQ2XXS_GRID;

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
 * Q2_K row (xq.d.length blocks at byte wOffset) · Q8_K activation, ds4 scalar order: per block the
 * integer sums isum = Σ (sc&15)·dot(q2, q8) and summs = Σ bsums·(sc>>4), then
 * sum += d_x·d_w·isum − d_x·dmin_w·summs in f32 (`exact`: in f64, the reference's rounding-noise twin).
 */
export function dotQ2_K_Q8_K(w: Uint8Array, wOffset: number, xq: Q8KAct, exact = false): number {
  const q8 = xq.q;
  let sum = 0;
  for (let b = 0, o = wOffset; b < xq.d.length; b++, o += Q2_K_BLOCK_BYTES) {
    let summs = 0;
    for (let s = 0; s < 16; s++) summs += xq.bsums[b * 16 + s] * (w[o + s] >> 4);
    // Each q byte holds the 2-bit codes of four elements 32 apart (shifts 0, 2, 4, 6); read it once.
    // Sub-block of element 128h + 32t + l is 8h + 2t + (l >= 16).
    let isum = 0;
    for (let h = 0; h < 2; h++) {
      for (let half = 0; half < 2; half++) {
        const qo = o + 16 + 32 * h + 16 * half;
        const xo = b * QK_K + 128 * h + 16 * half;
        let d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        for (let l = 0; l < 16; l++) {
          const byte = w[qo + l];
          d0 += (byte & 3) * q8[xo + l];
          d1 += ((byte >> 2) & 3) * q8[xo + 32 + l];
          d2 += ((byte >> 4) & 3) * q8[xo + 64 + l];
          d3 += (byte >> 6) * q8[xo + 96 + l];
        }
        const sc = o + 8 * h + half;
        isum += (w[sc] & 15) * d0 + (w[sc + 2] & 15) * d1 + (w[sc + 4] & 15) * d2 + (w[sc + 6] & 15) * d3;
      }
    }
    if (exact) {
      sum += xq.d[b] * f16At(w, o + 80) * isum - xq.d[b] * f16At(w, o + 82) * summs;
      continue;
    }
    const dall = fround(xq.d[b] * f16At(w, o + 80));
    const dmin = fround(xq.d[b] * f16At(w, o + 82));
    sum = fround(sum + fround(fround(dall * fround(isum)) - fround(dmin * fround(summs))));
  }
  return sum;
}

/**
 * IQ2_XXS row · Q8_K activation, ds4 scalar order: per 32-sub-block int dot of signed grid values
 * with q8, times ls = 2s+1 = 2·(0.5+s) so it stays an integer, summed as int per block;
 * sum += d_w·d_x·bsum in f32 (`exact`: in f64); result × 0.125 = the format's 1/4 times 1/2 undoing the 2 in ls.
 */
export function dotIQ2_XXS_Q8_K(w: Uint8Array, wOffset: number, xq: Q8KAct, exact = false): number {
  const q8 = xq.q;
  let sum = 0;
  for (let b = 0, o = wOffset; b < xq.d.length; b++, o += IQ2_XXS_BLOCK_BYTES) {
    let bsum = 0;
    for (let k = 0; k < 8; k++) {
      const so = o + 2 + 8 * k;
      const aux = u32At(w, so + 4);
      let sumi = 0;
      for (let l = 0; l < 4; l++) {
        const gs = (w[so + l] * 128 + ((aux >>> (7 * l)) & 127)) * 8;
        const xo = b * QK_K + 32 * k + 8 * l;
        sumi += SIGNED_GRID[gs] * q8[xo] + SIGNED_GRID[gs + 1] * q8[xo + 1] + SIGNED_GRID[gs + 2] * q8[xo + 2]
          + SIGNED_GRID[gs + 3] * q8[xo + 3] + SIGNED_GRID[gs + 4] * q8[xo + 4] + SIGNED_GRID[gs + 5] * q8[xo + 5]
          + SIGNED_GRID[gs + 6] * q8[xo + 6] + SIGNED_GRID[gs + 7] * q8[xo + 7];
      }
      bsum += sumi * (2 * (aux >>> 28) + 1);
    }
    if (exact) sum += f16At(w, o) * xq.d[b] * bsum;
    else sum = fround(sum + fround(fround(f16At(w, o) * xq.d[b]) * fround(bsum)));
  }
  return exact ? 0.125 * sum : fround(0.125 * sum);
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
