// Encoders for synthetic fixtures: plain f16/bf16, ggml's reference Q8_0 weight quantizer, and
// random but valid K-quant blocks whose dequantized values have a chosen RMS. Block layouts are
// documented in kquants.ts; the random fields are drawn from rng() (uniform [0,1)) in a fixed
// order, so a seeded rng gives byte-identical tensors.

import { f32ToBf16, f32ToF16 } from './f16.ts';
import { dequantizeIQ2_XXS, dequantizeQ2_K, dequantizeQ4_K, IQ2_XXS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q4_K_BLOCK_BYTES } from './kquants.ts';
import { Q8_0_BLOCK_BYTES } from './q8.ts';
import { QK_K } from './types.ts';

function encode16(values: Float32Array, toBits: (x: number) => number): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  for (let i = 0; i < values.length; i++) {
    const h = toBits(values[i]);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >> 8;
  }
  return out;
}

/** Little-endian IEEE half of each value (round to nearest even). */
export function encodeF16(values: Float32Array): Uint8Array {
  return encode16(values, f32ToF16);
}

/** Little-endian bfloat16 of each value (round to nearest even). */
export function encodeBF16(values: Float32Array): Uint8Array {
  return encode16(values, f32ToBf16);
}

function putF16(b: Uint8Array, o: number, x: number): void {
  const h = f32ToF16(x);
  b[o] = h & 0xff;
  b[o + 1] = h >> 8;
}

/**
 * ggml quantize_row_q8_0_ref: per 32-block d = amax/127 (stored as f16), q = round(x/d) with
 * halves away from zero (roundf), computed with the unrounded d. values.length must be a multiple of 32.
 */
export function quantizeQ8_0Weights(values: Float32Array): Uint8Array {
  if (values.length % 32 !== 0) throw new Error(`Q8_0 quantization: ${values.length} values is not a multiple of 32`);
  const out = new Uint8Array((values.length / 32) * Q8_0_BLOCK_BYTES);
  for (let b = 0; b < values.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(values[b * 32 + j]));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const o = b * Q8_0_BLOCK_BYTES;
    putF16(out, o, d);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(values[b * 32 + j] * id);
      out[o + 2 + j] = (Math.sign(v) * Math.round(Math.abs(v))) & 0xff; // roundf, stored as two's complement
    }
  }
  return out;
}

const randInt = (rng: () => number, n: number): number => Math.floor(rng() * n);

/**
 * Build n/256 blocks: `fill` writes a block with unit super-scale(s) (d = 1, and dmin = its fixed ratio),
 * then the super-scale(s) are multiplied so the block's dequantized RMS is `scale`.
 */
function synthBlocks(
  n: number, scale: number, bytesPerBlock: number, fill: (blk: Uint8Array) => void,
  dequant: (src: Uint8Array, n: number, out: Float32Array) => void, superScales: { at: number; unit: number }[],
): Uint8Array {
  if (n % QK_K !== 0) throw new Error(`synthetic K-quant tensor: ${n} elements is not a multiple of ${QK_K}`);
  const out = new Uint8Array((n / QK_K) * bytesPerBlock);
  const vals = new Float32Array(QK_K);
  for (let b = 0; b < n / QK_K; b++) {
    const blk = out.subarray(b * bytesPerBlock, (b + 1) * bytesPerBlock);
    fill(blk);
    for (const s of superScales) putF16(blk, s.at, s.unit);
    dequant(blk, QK_K, vals);
    let ss = 0;
    for (let i = 0; i < QK_K; i++) ss += vals[i] * vals[i];
    const rms = Math.sqrt(ss / QK_K);
    const k = rms > 0 ? scale / rms : 0;
    for (const s of superScales) putF16(blk, s.at, s.unit * k);
  }
  return out;
}

/** Random valid IQ2_XXS blocks: random grid indices, 7-bit sign indices (parity implied) and 4-bit sub-scales. */
export function synthIQ2_XXS(rng: () => number, n: number, scale: number): Uint8Array {
  return synthBlocks(n, scale, IQ2_XXS_BLOCK_BYTES, (blk) => {
    for (let k = 0; k < 8; k++) {
      const so = 2 + 8 * k;
      for (let l = 0; l < 4; l++) blk[so + l] = randInt(rng, 256);
      let aux = randInt(rng, 16) * 2 ** 28;
      for (let l = 0; l < 4; l++) aux += randInt(rng, 128) * 2 ** (7 * l);
      for (let i = 0; i < 4; i++) blk[so + 4 + i] = Math.floor(aux / 2 ** (8 * i)) & 0xff;
    }
  }, dequantizeIQ2_XXS, [{ at: 0, unit: 1 }]);
}

/**
 * Random valid Q2_K blocks, roughly zero-mean: sub-scale sc in 1..10 and min m = round(1.5·sc),
 * with dmin = d, so each sub-block's values d·(sc·q − m) are centred on q = 1.5.
 */
export function synthQ2_K(rng: () => number, n: number, scale: number): Uint8Array {
  return synthBlocks(n, scale, Q2_K_BLOCK_BYTES, (blk) => {
    for (let s = 0; s < 16; s++) {
      const sc = 1 + randInt(rng, 10);
      blk[s] = sc | (Math.round(1.5 * sc) << 4);
    }
    for (let i = 16; i < 80; i++) blk[i] = randInt(rng, 256);
  }, dequantizeQ2_K, [{ at: 80, unit: 1 }, { at: 82, unit: 1 }]);
}

/**
 * Random valid Q4_K blocks, roughly zero-mean: 6-bit sc in 1..63 and m = round(7.5·sc/8) with
 * dmin = 8·d, so each sub-block's values d·(sc·q − 8m) are centred on q = 7.5.
 */
export function synthQ4_K(rng: () => number, n: number, scale: number): Uint8Array {
  return synthBlocks(n, scale, Q4_K_BLOCK_BYTES, (blk) => {
    const sc: number[] = [];
    const m: number[] = [];
    for (let s = 0; s < 8; s++) {
      sc.push(1 + randInt(rng, 63));
      m.push(Math.round((7.5 * sc[s]) / 8));
    }
    packQ4KScales(blk, 4, sc, m);
    for (let i = 16; i < 144; i++) blk[i] = randInt(rng, 256);
  }, dequantizeQ4_K, [{ at: 0, unit: 1 }, { at: 2, unit: 8 }]);
}

/** Inverse of unpackQ4KScales: sub-blocks 0..3 keep sc/m in the low 6 bits of bytes 0..7; 4..7 split into nibbles + top bits. */
export function packQ4KScales(b: Uint8Array, o: number, sc: number[], m: number[]): void {
  for (let j = 0; j < 4; j++) {
    b[o + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
    b[o + j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
    b[o + j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
  }
}
