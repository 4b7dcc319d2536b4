// Quant formats: known answers built by hand from the format definitions (ggml block layouts,
// IEEE half/bfloat16, E4M3FN/E2M1 code tables, ds4.c activation quantizers), plus properties
// (dot products equal the dot of the dequantized operands, round trips, determinism).
import { describe, it, expect } from 'vitest';
import {
  GGMLType, IQ2XXS_GRID, QK_K, bf16ToF32, dequantizeRow, dotIQ2_XXS_Q8_K, dotQ2_K_Q8_K, dotQ8_0, e2m1Round,
  e4m3fnRound, encodeBF16, encodeF16, f16Round, f16ToF32, f32ToBf16, f32ToF16, fp4ActQuantizeInplace,
  fp8KvQuantizeInplace, hadamard128Inplace, ksignsIq2xs, matvecF16, matvecQ8_0, matvecQ8_0Act, packQ4KScales,
  quantizeQ8_0Act, quantizeQ8_0Weights, quantizeQ8_K, synthIQ2_XXS, synthQ2_K, synthQ4_K, unpackQ4KScales,
  type Q8KAct, F16_TABLE, IQ2_XXS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, f16Rows, iq2xxsRows, q2kRows, q8_0Rows, q8_0RowsPaired, stageCodes,
  stagePairedCodes,
} from '../model/quant/index.ts';
import { Ds4DiffError } from '../model/errors.ts';

/** Deterministic uniform [0,1) generator (32-bit LCG, Numerical Recipes constants). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

const f32 = Math.fround;

describe('f16', () => {
  it('decodes known half bit patterns', () => {
    expect(f16ToF32(0x3c00)).toBe(1);
    expect(f16ToF32(0xc000)).toBe(-2);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0400)).toBe(2 ** -14); // smallest normal
    expect(f16ToF32(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(f16ToF32(0x03ff)).toBe(1023 * 2 ** -24); // largest subnormal
    expect(f16ToF32(0x3555)).toBe(0.333251953125);
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
    expect(f16ToF32(0x7e00)).toBeNaN();
  });

  it('encodes with round-to-nearest-even, subnormals, overflow and NaN', () => {
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(-2)).toBe(0xc000);
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65519)).toBe(0x7bff); // below the midpoint to 65536
    expect(f32ToF16(65520)).toBe(0x7c00); // exact midpoint: even neighbour is the carry into inf
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-1e6)).toBe(0xfc00);
    expect(f32ToF16(NaN)).toBe(0x7e00);
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie between 0x3c00 and 0x3c01 → even
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie between 0x3c01 and 0x3c02 → even
    expect(f32ToF16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(f32ToF16(2 ** -24)).toBe(0x0001);
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie between 0 and 1 ulp → 0
    expect(f32ToF16(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002); // tie between subnormals 1 and 2 → 2
    expect(f32ToF16(2 ** -14 - 2 ** -25)).toBe(0x0400); // tie at the subnormal/normal border carries up
    expect(f32ToF16(2 ** -30)).toBe(0x0000);
    expect(f32ToF16(-(2 ** -30))).toBe(0x8000);
    expect(f16Round(0.1)).toBe(0.0999755859375); // 0x2e66
  });

  it('every finite or infinite half survives decode → encode', () => {
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue; // NaNs collapse to 0x7e00
      if (f32ToF16(f16ToF32(h)) !== h) throw new Error(`half 0x${h.toString(16)} did not round trip`);
    }
  });

  it('encodeF16 writes little-endian halves', () => {
    expect([...encodeF16(new Float32Array([1, -2, 65504]))]).toEqual([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b]);
  });
});

describe('bf16', () => {
  it('decodes and rounds to nearest even', () => {
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc040)).toBe(-3);
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even
    expect(f32ToBf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(bf16ToF32(f32ToBf16(NaN))).toBeNaN();
    expect([...encodeBF16(new Float32Array([1, -3]))]).toEqual([0x80, 0x3f, 0x40, 0xc0]);
  });
});

describe('dequantizeRow', () => {
  it('F32, I32 (as float) and BF16 rows, also at an unaligned byte offset', () => {
    const buf = new Uint8Array(1 + 8);
    const dv = new DataView(buf.buffer);
    dv.setFloat32(1, 1.5, true);
    dv.setFloat32(5, -7, true);
    expect([...dequantizeRow(GGMLType.F32, buf.subarray(1), 2)]).toEqual([1.5, -7]);
    dv.setInt32(1, -123456, true);
    dv.setInt32(5, 42, true);
    expect([...dequantizeRow(GGMLType.I32, buf.subarray(1), 2)]).toEqual([-123456, 42]);
    expect([...dequantizeRow(GGMLType.BF16, new Uint8Array([0x80, 0x3f, 0x40, 0xc0]), 2)]).toEqual([1, -3]);
    expect([...dequantizeRow(GGMLType.F16, new Uint8Array([0x00, 0x38, 0x01, 0x00]), 2)]).toEqual([0.5, 2 ** -24]);
  });

  it('Q8_0 block: d = 0.5 (f16 0x3800), value = d·q', () => {
    const blk = new Uint8Array(34);
    blk[0] = 0x00;
    blk[1] = 0x38;
    const q = Array.from({ length: 32 }, (_, j) => (j % 2 === 0 ? j + 1 : -(j + 1))); // 1, -2, 3, -4, …
    q[31] = -128;
    q.forEach((v, j) => (blk[2 + j] = v & 0xff));
    const out = dequantizeRow(GGMLType.Q8_0, blk, 32);
    expect(out[0]).toBe(0.5);
    expect(out[1]).toBe(-1);
    expect(out[2]).toBe(1.5);
    expect(out[30]).toBe(15.5);
    expect(out[31]).toBe(-64);
  });

  it('Q2_K block with hand-picked scales, mins and 2-bit codes', () => {
    const blk = new Uint8Array(84);
    blk[80] = 0x00; blk[81] = 0x3c; // d = 1
    blk[82] = 0x00; blk[83] = 0x38; // dmin = 0.5
    blk[0] = 0x23; // sub-block 0 (elements 0..15): scale 3, min 2
    blk[2] = 0x15; // sub-block 2 (32..47): scale 5, min 1
    blk[4] = 0x01; // sub-block 4 (64..79): scale 1, min 0
    blk[6] = 0xf7; // sub-block 6 (96..111): scale 7, min 15
    blk[9] = 0x12; // sub-block 9 (144..159): scale 2, min 1
    blk[16] = 0b11_10_01_00; // qs[0]: element 0 ← bits 0-1 (0), 32 ← bits 2-3 (1), 64 ← bits 4-5 (2), 96 ← bits 6-7 (3)
    blk[16 + 32 + 16] = 0x03; // qs[48]: second half, element 128 + 16 = 144 ← 3
    const out = dequantizeRow(GGMLType.Q2_K, blk, 256);
    expect(out[0]).toBe(1 * 3 * 0 - 0.5 * 2);
    expect(out[5]).toBe(-1); // same sub-block, q = 0
    expect(out[32]).toBe(5 * 1 - 0.5 * 1);
    expect(out[33]).toBe(-0.5);
    expect(out[64]).toBe(1 * 2 - 0);
    expect(out[96]).toBe(7 * 3 - 0.5 * 15);
    expect(out[100]).toBe(-7.5);
    expect(out[144]).toBe(2 * 3 - 0.5 * 1);
    expect(out[145]).toBe(-0.5);
    for (const i of [16, 31, 48, 128, 200, 255]) expect(out[i]).toBe(0); // scale byte 0 → 0
  });

  it('Q4_K scale/min unpacking and values', () => {
    const blk = new Uint8Array(144);
    blk[0] = 0x00; blk[1] = 0x3c; // d = 1
    blk[2] = 0x00; blk[3] = 0x34; // dmin = 0.25
    // sub-block 0: sc = 10, m = 3 (low 6 bits of scale bytes 0 and 4)
    // sub-block 1: sc = 4, m = 8
    // sub-block 5: sc = 37 = 0b10_0101, m = 50 = 0b11_0010: low nibbles in byte 9, top two bits in bytes 1 and 5
    const s = blk.subarray(4, 16);
    s[0] = 10; s[4] = 3;
    s[1] = 0x80 | 4; s[5] = 0xc0 | 8;
    s[9] = 0x25;
    expect(unpackQ4KScales(blk, 4, 0)).toEqual({ sc: 10, m: 3 });
    expect(unpackQ4KScales(blk, 4, 1)).toEqual({ sc: 4, m: 8 });
    expect(unpackQ4KScales(blk, 4, 5)).toEqual({ sc: 37, m: 50 });
    expect(unpackQ4KScales(blk, 4, 4)).toEqual({ sc: 0, m: 0 });
    blk[16] = 0x07; // qs[0]: element 0 (low nibble, sub-block 0) = 7, element 32 (high nibble, sub-block 1) = 0
    blk[16 + 64 + 3] = 0xc0; // qs[67]: pair 2 high nibble → sub-block 5, element 160 + 3 = 12
    const out = dequantizeRow(GGMLType.Q4_K, blk, 256);
    expect(out[0]).toBe(10 * 7 - 0.25 * 3);
    expect(out[32]).toBe(-0.25 * 8);
    expect(out[163]).toBe(37 * 12 - 0.25 * 50);
    expect(out[160]).toBe(-0.25 * 50);
    expect(out[128]).toBe(0); // sub-block 4: sc = m = 0
  });

  it('packQ4KScales is the inverse of unpackQ4KScales for all 6-bit values', () => {
    const rng = lcg(5);
    const b = new Uint8Array(12);
    for (let t = 0; t < 200; t++) {
      const sc = Array.from({ length: 8 }, () => Math.floor(rng() * 64));
      const m = Array.from({ length: 8 }, () => Math.floor(rng() * 64));
      packQ4KScales(b, 0, sc, m);
      for (let j = 0; j < 8; j++) expect(unpackQ4KScales(b, 0, j)).toEqual({ sc: sc[j], m: m[j] });
    }
  });

  it('IQ2_XXS block with hand-picked grid points, signs and sub-scale', () => {
    // ksigns: 7 explicit sign bits + a parity bit so the count of negatives is even.
    expect(ksignsIq2xs(0)).toBe(0);
    expect(ksignsIq2xs(1)).toBe(129);
    expect(ksignsIq2xs(3)).toBe(3);
    expect(ksignsIq2xs(126)).toBe(126);
    expect(ksignsIq2xs(127)).toBe(255);
    // grid entries from the table definition: iq2xxs_grid[1] = 0x080808080808082b,
    // [2] = 0x0808080808081919, [255] = 0x2b2b2b1908081908 (byte j = element j)
    expect([...IQ2XXS_GRID.subarray(8, 16)]).toEqual([43, 8, 8, 8, 8, 8, 8, 8]);
    expect([...IQ2XXS_GRID.subarray(16, 24)]).toEqual([25, 25, 8, 8, 8, 8, 8, 8]);
    expect([...IQ2XXS_GRID.subarray(255 * 8)]).toEqual([8, 25, 8, 8, 25, 43, 43, 43]);
    expect(IQ2XXS_GRID.every((v) => v === 8 || v === 25 || v === 43)).toBe(true);

    const blk = new Uint8Array(66);
    blk[0] = 0x00; blk[1] = 0x3c; // d = 1
    // sub-block 0: grid indices [1, 2, 0, 0]; sign indices [1, 3, 0, 0]; sub-scale s = 3
    blk.set([1, 2, 0, 0], 2);
    const aux = 1 | (3 << 7) | (3 << 28);
    blk.set([aux & 0xff, (aux >>> 8) & 0xff, (aux >>> 16) & 0xff, aux >>> 24], 6);
    const out = dequantizeRow(GGMLType.IQ2_XXS, blk, 256);
    const db = (0.5 + 3) * 0.25; // 0.875
    const want0 = [-43, 8, 8, 8, 8, 8, 8, -8].map((v) => v * db); // ksigns(1) = 129: elements 0 and 7 negative
    const want1 = [-25, -25, 8, 8, 8, 8, 8, 8].map((v) => v * db); // ksigns(3) = 3: elements 0 and 1 negative
    expect([...out.subarray(0, 8)]).toEqual(want0);
    expect([...out.subarray(8, 16)]).toEqual(want1);
    expect([...out.subarray(16, 32)]).toEqual(Array(16).fill(8 * db));
    // all-zero sub-blocks: grid 0 (all 8), no signs, s = 0 → 8 · 0.5/4 = 1
    expect([...out.subarray(32)]).toEqual(Array(224).fill(1));
  });

  it('Q8_K block: f32 d, int8 q (bsums are not part of the values)', () => {
    const blk = new Uint8Array(292);
    new DataView(blk.buffer).setFloat32(0, 0.5, true);
    blk[4] = -3 & 0xff;
    blk[4 + 255] = 100;
    blk[260] = 0x7f; // a bsum byte: must not leak into the values
    const out = dequantizeRow(GGMLType.Q8_K, blk, 256);
    expect([out[0], out[1], out[255]]).toEqual([-1.5, 0, 50]);
  });

  it('rejects short rows and unknown types with a one-line bad-input error', () => {
    expect(() => dequantizeRow(GGMLType.Q8_0, new Uint8Array(33), 32)).toThrow(Ds4DiffError);
    expect(() => dequantizeRow(GGMLType.Q8_0, new Uint8Array(33), 32)).toThrow(/Q8_0.*34 bytes.*33/);
    expect(() => dequantizeRow(99 as GGMLType, new Uint8Array(8), 2)).toThrow(/type#99/);
    expect(() => dequantizeRow(GGMLType.Q2_K, new Uint8Array(84), 100)).toThrow(/256-blocks/);
  });
});

describe('Q8_0 activation quantization and dot products', () => {
  it('d = amax/127, round half to even, zero blocks, zero padding', () => {
    const x = new Float32Array(40);
    x[0] = 127; // d = 1 exactly, so x·(1/d) = x
    x.set([2.5, 3.5, -2.5, -0.5, 1.5, 0.49], 1);
    // second block: all zero except nothing → d = 0
    const act = quantizeQ8_0Act(x);
    expect(act.d.length).toBe(2);
    expect(act.q.length).toBe(64);
    expect(act.d[0]).toBe(1);
    expect([...act.q.subarray(0, 7)]).toEqual([127, 2, 4, -2, 0, 2, 0]);
    expect(act.d[1]).toBe(0);
    expect(act.q.subarray(32).every((v) => v === 0)).toBe(true);
  });

  it('uses the reciprocal scale and the off/n window', () => {
    const x = new Float64Array([99, 99, -3, 1, 0.75, 99]);
    const act = quantizeQ8_0Act(x, 2, 3);
    const d = f32(3 / 127);
    expect(act.d[0]).toBe(d);
    const id = f32(1 / d);
    expect([...act.q.subarray(0, 4)]).toEqual([-127, Math.round(f32(id)), Math.round(f32(0.75 * id)), 0]);
  });

  it('dotQ8_0 matches a hand-computed int8 dot', () => {
    // weight block: d = 0.5, all q = 2; activation: x[0] = 127, others 1 → d_x = 1, q_x = [127, 1, …]
    const w = new Uint8Array(3 + 34);
    w.set([0x00, 0x38], 3);
    w.fill(2, 5);
    const x = new Float32Array(32).fill(1);
    x[0] = 127;
    expect(dotQ8_0(w, 3, quantizeQ8_0Act(x))).toBe(0.5 * 1 * (2 * 127 + 2 * 31));
  });

  it('matvecQ8_0 equals the dot of dequantized weights with the dequantized activation', () => {
    const rng = lcg(11);
    const rows = 24, cols = 256;
    const wv = Float32Array.from({ length: rows * cols }, () => rng() * 2 - 1);
    const w = quantizeQ8_0Weights(wv);
    const x = Float32Array.from({ length: cols }, () => (rng() * 2 - 1) * 3);
    const act = quantizeQ8_0Act(x);
    const xd = Float64Array.from(act.q, (q, i) => q * act.d[i >> 5]);
    const out = new Float32Array(rows).fill(-999);
    matvecQ8_0(w, rows, cols, x, out, 4, 20);
    const rb = (cols / 32) * 34;
    for (let r = 0; r < rows; r++) {
      if (r < 4 || r >= 20) {
        expect(out[r]).toBe(-999); // outside [rowStart, rowEnd) untouched
        continue;
      }
      const wr = dequantizeRow(GGMLType.Q8_0, w.subarray(r * rb), cols);
      let ref = 0, mag = 0;
      for (let i = 0; i < cols; i++) { ref += wr[i] * xd[i]; mag += Math.abs(wr[i] * xd[i]); }
      expect(Math.abs(out[r] - ref)).toBeLessThan(1e-6 * mag);
      expect(out[r]).toBe(dotQ8_0(w, r * rb, act));
    }
    const out2 = new Float32Array(rows);
    matvecQ8_0Act(w, rows, cols, act, out2);
    expect(out2.subarray(4, 20)).toEqual(out.subarray(4, 20));
  });

  it('quantizeQ8_0Weights: ggml reference rounding (halves away from zero) and error ≤ d/2', () => {
    const v = new Float32Array(64);
    v[0] = -127; // d = 1
    v.set([2.5, -2.5, 3.5, 0.4], 1);
    const b = quantizeQ8_0Weights(v);
    expect([b[0], b[1]]).toEqual([0x00, 0x3c]);
    expect(new Int8Array(b.buffer, 2, 5)).toEqual(new Int8Array([-127, 3, -3, 4, 0]));
    const rng = lcg(3);
    const r = Float32Array.from({ length: 1024 }, () => rng() - 0.5);
    const back = dequantizeRow(GGMLType.Q8_0, quantizeQ8_0Weights(r), 1024);
    for (let blk = 0; blk < 32; blk++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(r[blk * 32 + j]));
      const d = amax / 127;
      // d/2 from rounding q plus the f16 rounding of d (relative 2^-11, times |q| ≤ 127)
      for (let j = 0; j < 32; j++) expect(Math.abs(back[blk * 32 + j] - r[blk * 32 + j])).toBeLessThanOrEqual(d / 2 + amax * 2 ** -11);
    }
  });
});

describe('F16 matvec', () => {
  it('hand-computed 2×3 product, rows in range only', () => {
    const w = encodeF16(new Float32Array([1, 2, 0.5, -1, 0.25, 4]));
    const out = new Float32Array(2).fill(7);
    matvecF16(w, 2, 3, new Float32Array([2, 3, -4]), out);
    expect([...out]).toEqual([1 * 2 + 2 * 3 + 0.5 * -4, -1 * 2 + 0.25 * 3 + 4 * -4]);
    const out2 = new Float32Array(2).fill(7);
    matvecF16(w, 2, 3, new Float32Array([2, 3, -4]), out2, 1, 2);
    expect([...out2]).toEqual([7, -17.25]);
  });
});

describe('Q8_K activation quantization', () => {
  it('signed max, negative iscale, round half to even, bsums', () => {
    const x = new Float32Array(512);
    x.fill(1, 0, 16); // group 0: sixteen 1's
    x[20] = -2; // largest |x|, negative → max = -2, iscale = -127/-2 = 63.5
    x[21] = 0.5; // 31.75 → 32
    // block 1 stays zero → d = 0
    const xq = quantizeQ8_K(x);
    expect(xq.d[0]).toBe(f32(1 / 63.5));
    expect(xq.q[0]).toBe(64); // 63.5 is a tie → even
    expect(xq.q[20]).toBe(-127);
    expect(xq.q[21]).toBe(32);
    expect(xq.bsums[0]).toBe(16 * 64);
    expect(xq.bsums[1]).toBe(-127 + 32);
    expect(xq.bsums.subarray(2).every((v) => v === 0)).toBe(true);
    expect(xq.d[1]).toBe(0);
    expect(xq.q.subarray(256).every((v) => v === 0)).toBe(true);
  });

  it('a positive max gives a negative d and d·q reconstructs x', () => {
    const rng = lcg(9);
    const x = Float32Array.from({ length: 256 }, () => rng() - 0.5);
    x[100] = 2; // max, positive
    const xq = quantizeQ8_K(x);
    expect(xq.q[100]).toBe(-127);
    expect(xq.d[0]).toBeLessThan(0);
    for (let i = 0; i < 256; i++) expect(Math.abs(xq.d[0] * xq.q[i] - x[i])).toBeLessThanOrEqual(Math.abs(xq.d[0]) * 0.5 + 1e-7);
    for (let g = 0; g < 16; g++) {
      let s = 0;
      for (let i = 0; i < 16; i++) s += xq.q[g * 16 + i];
      expect(xq.bsums[g]).toBe(s);
    }
  });
});

describe('K-quant · Q8_K dot products', () => {
  const n = 1024;
  const dotDequant = (w: Float32Array, xq: Q8KAct) => {
    let s = 0, mag = 0;
    for (let i = 0; i < w.length; i++) {
      const p = w[i] * xq.d[Math.floor(i / QK_K)] * xq.q[i];
      s += p;
      mag += Math.abs(p);
    }
    return { s, mag };
  };

  for (const [name, type, synth, dot, bytes] of [
    ['Q2_K', GGMLType.Q2_K, synthQ2_K, dotQ2_K_Q8_K, 84],
    ['IQ2_XXS', GGMLType.IQ2_XXS, synthIQ2_XXS, dotIQ2_XXS_Q8_K, 66],
  ] as const) {
    it(`${name} dot equals the dot of dequantized operands`, () => {
      const rng = lcg(21);
      const rows = 6;
      const w = synth(rng, rows * n, 0.05);
      const x = Float32Array.from({ length: n }, () => rng() * 2 - 1);
      const xq = quantizeQ8_K(x);
      for (let r = 0; r < rows; r++) {
        const off = r * (n / QK_K) * bytes;
        const { s, mag } = dotDequant(dequantizeRow(type, w.subarray(off), n), xq);
        const got = dot(w, off, xq);
        expect(Math.abs(got - s)).toBeLessThan(1e-5 * mag);
      }
    });
  }

  it('IQ2_XXS dot of the hand block with a constant activation', () => {
    // hand block from the dequant test: sub-block 0 sums to 0.875·(−43+48−8 −50+48 +128) = 0.875·123, the
    // other 7 sub-blocks are 32 ones each; activation: all x = 1 → max = 1, q = −127, d = −1/127.
    const blk = new Uint8Array(66);
    blk[1] = 0x3c;
    blk.set([1, 2, 0, 0], 2);
    const aux = 1 | (3 << 7) | (3 << 28);
    blk.set([aux & 0xff, (aux >>> 8) & 0xff, (aux >>> 16) & 0xff, aux >>> 24], 6);
    const xq = quantizeQ8_K(new Float32Array(256).fill(1));
    const want = (0.875 * 123 + 7 * 32) * f32(-1 / 127) * -127;
    expect(Math.abs(dotIQ2_XXS_Q8_K(blk, 0, xq) - want)).toBeLessThan(1e-4);
  });
});

describe('synthetic K-quant encoders', () => {
  for (const [name, type, synth] of [
    ['IQ2_XXS', GGMLType.IQ2_XXS, synthIQ2_XXS],
    ['Q2_K', GGMLType.Q2_K, synthQ2_K],
    ['Q4_K', GGMLType.Q4_K, synthQ4_K],
  ] as const) {
    it(`${name}: deterministic for a seed, RMS ≈ scale, roughly zero mean`, () => {
      const a = synth(lcg(7), 4096, 0.03);
      expect(synth(lcg(7), 4096, 0.03)).toEqual(a);
      expect(synth(lcg(8), 4096, 0.03)).not.toEqual(a);
      const v = dequantizeRow(type, a, 4096);
      let ss = 0, sum = 0;
      for (const x of v) { ss += x * x; sum += x; }
      const rms = Math.sqrt(ss / v.length);
      expect(Math.abs(rms / 0.03 - 1)).toBeLessThan(0.01); // only the f16 rounding of the super-scales
      expect(Math.abs(sum / v.length)).toBeLessThan(0.2 * 0.03);
    });
  }

  it('IQ2_XXS signs always have an even number of negatives per group of 8', () => {
    const v = dequantizeRow(GGMLType.IQ2_XXS, synthIQ2_XXS(lcg(1), 2048, 1), 2048);
    for (let g = 0; g < 2048; g += 8) {
      let neg = 0;
      for (let j = 0; j < 8; j++) if (v[g + j] < 0) neg++;
      expect(neg % 2).toBe(0);
    }
  });
});

describe('E4M3FN and FP8 KV simulation', () => {
  it('saturates at 448 and rounds to the nearest code, ties to the even code', () => {
    expect(e4m3fnRound(448)).toBe(448);
    expect(e4m3fnRound(464)).toBe(448);
    expect(e4m3fnRound(1e9)).toBe(448);
    expect(e4m3fnRound(-1000)).toBe(-448);
    expect(e4m3fnRound(432)).toBe(448); // tie 416 (code 125) / 448 (code 126)
    expect(e4m3fnRound(400)).toBe(384); // tie 384 (code 124) / 416 (code 125)
    expect(e4m3fnRound(1.0625)).toBe(1); // tie 1 (code 56) / 1.125 (57)
    expect(e4m3fnRound(1.1875)).toBe(1.25); // tie 1.125 (57) / 1.25 (58)
    expect(e4m3fnRound(1.1)).toBe(1.125);
    expect(e4m3fnRound(248)).toBe(256); // tie 240 (code 119) / 256 (120)
    expect(e4m3fnRound(-0.3)).toBe(-0.3125);
    expect(e4m3fnRound(2 ** -10)).toBe(0); // tie 0 / 2^-9 (smallest subnormal)
    expect(e4m3fnRound(3 * 2 ** -10)).toBe(2 ** -8); // tie code 1 / code 2
    expect(e4m3fnRound(7 * 2 ** -9)).toBe(7 * 2 ** -9); // largest subnormal is exact
  });

  it('FP8 KV row: power-of-two block scale, E4M3 values, RoPE tail untouched', () => {
    const nope = 448, rot = 64;
    const rng = lcg(17);
    const x = Float32Array.from({ length: nope + rot }, () => (rng() - 0.5) * 10);
    x.fill(0, 128, 192); // block 2 all zero
    x.set([56, 1.0, 0.3, -0.3], 0); // block 0: amax 56 = 448/8 → scale 1/8
    for (let i = 4; i < 64; i++) x[i] = (rng() - 0.5) * 2;
    x.set([100, -1], 64); // block 1: amax 100 → 100/448 → scale 2^ceil(-2.16) = 1/4
    for (let i = 66; i < 128; i++) x[i] = (rng() - 0.5) * 2;
    const before = x.slice();
    fp8KvQuantizeInplace(x, 0, nope);
    expect([x[0], x[1], x[2], x[3]]).toEqual([56, 1, 2.5 / 8, -2.5 / 8]); // 0.3·8 = 2.4 → 2.5
    expect([x[64], x[65]]).toEqual([96, -1]); // 100·4 = 400 → tie → 384
    expect(x.subarray(128, 192).every((v) => v === 0)).toBe(true);
    expect(x.subarray(nope)).toEqual(before.subarray(nope));
    for (let b = 0; b < nope; b += 64) {
      let amax = 0;
      for (let i = b; i < b + 64; i++) amax = Math.max(amax, Math.abs(before[i]));
      const scale = 2 ** Math.ceil(Math.log2(Math.max(amax, 1e-4) / 448));
      for (let i = b; i < b + 64; i++) {
        expect(e4m3fnRound(x[i] / scale)).toBe(x[i] / scale); // representable after scaling
        expect(Math.abs(x[i] - before[i])).toBeLessThanOrEqual(Math.max(Math.abs(before[i]) / 16, scale * 2 ** -10));
      }
    }
  });

  it('works at an offset inside a Float64Array', () => {
    const x = new Float64Array(200).fill(3);
    x[10] = 0.3;
    fp8KvQuantizeInplace(x, 10, 64);
    // amax 3 → scale 2^ceil(log2(3/448)) = 2^-7; 0.3·128 = 38.4 → 40 (codes 36, 40); 3·128 = 384 exact
    expect(x[10]).toBe(40 / 128);
    expect(x[11]).toBe(3);
    expect(x[9]).toBe(3);
  });
});

describe('E2M1 and FP4 activation simulation', () => {
  it('ties go to the even code and |x| saturates at 6', () => {
    const cases: [number, number][] = [
      [0.25, 0], [0.75, 1], [1.25, 1], [1.75, 2], [2.5, 2], [3.5, 4], [5, 4],
      [0.3, 0.5], [7, 6], [-5.5, -6], [-0.74, -0.5], [6, 6],
    ];
    for (const [x, want] of cases) expect(e2m1Round(x)).toBe(want);
  });

  it('FP4 block: scale = 2^ceil(log2(amax/6))', () => {
    const x = new Float32Array(64).fill(0.1);
    x.set([1.5, 0.3, 0.1875, -1.5], 0); // amax 1.5 → scale 1/4: 1.2 → 1, 0.75 → 1 (tie → even code), -6
    x.fill(0, 32); // zero block stays zero (amax floored, no NaN)
    fp4ActQuantizeInplace(x, 0, 64);
    expect([x[0], x[1], x[2], x[3], x[4]]).toEqual([1.5, 0.25, 0.25, -1.5, 0.125]); // 0.1·4 = 0.4 → 0.5
    expect(x.subarray(32).every((v) => v === 0)).toBe(true);
  });
});

describe('Hadamard-128', () => {
  const c = f32(0.08838834764831845);
  it('maps a unit vector to a ±1/√128 Walsh row', () => {
    for (const k of [0, 5, 127]) {
      const x = new Float32Array(130);
      x[1 + k] = 1;
      hadamard128Inplace(x, 1);
      expect(x[0]).toBe(0);
      expect(x[129]).toBe(0);
      for (let i = 0; i < 128; i++) {
        let parity = 0;
        for (let v = i & k; v; v >>= 1) parity ^= v & 1;
        expect(x[1 + i]).toBe(parity ? -c : c);
      }
    }
  });

  it('is orthonormal: applying it twice is the identity, norms are preserved', () => {
    const rng = lcg(2);
    const x = Float64Array.from({ length: 128 }, () => rng() * 2 - 1);
    const y = x.slice();
    hadamard128Inplace(y, 0);
    const n0 = x.reduce((s, v) => s + v * v, 0);
    const n1 = y.reduce((s, v) => s + v * v, 0);
    expect(Math.abs(n1 / n0 - 1)).toBeLessThan(1e-5);
    hadamard128Inplace(y, 0);
    for (let i = 0; i < 128; i++) expect(Math.abs(y[i] - x[i])).toBeLessThan(1e-5);
  });
});

// The row kernels (model/quant q8_0Rows, f16Rows, iq2xxsRows, q2kRows) are written for the JIT: words of
// four codes through a DataView, codes as doubles, several rows interleaved, both precisions in one pass.
// Each must give the bits of the plain ds4 scalar loop, written here from the formulas (catalog §3).
describe('row kernels = the plain ds4 loops, bit for bit', () => {
  const rnd = lcg(11);
  const sym = () => rnd() * 2 - 1;
  const signed = (b: number) => (b << 24) >> 24;
  const half = (w: Uint8Array, o: number) => F16_TABLE[w[o] | (w[o + 1] << 8)];

  it('Q8_0: f32 accumulation of f16(d_w)·d_x·(int8 dot) per block, and the f64 twin', () => {
    // 5 blocks per row: rows start at odd and even multiples of 34 bytes (every word alignment)
    const rows = 9, cols = 160, blocks = cols / 32;
    const w = quantizeQ8_0Weights(Float32Array.from({ length: rows * cols }, () => sym() * (rnd() < 0.05 ? 40 : 1)));
    // the int8 extremes, -128 included (a file may hold it even if ggml's quantizer never writes it)
    w[2] = 0x80, w[3] = 0x7f;
    const x = Float32Array.from({ length: cols }, () => sym() * 3);
    const act = quantizeQ8_0Act(x);
    const o32 = new Float32Array(rows), o64 = new Float64Array(rows);
    q8_0Rows(w, blocks, stageCodes([act.q])[0], act.d, 0, rows, o32, o64);
    for (let r = 0; r < rows; r++) {
      let a32 = 0, a64 = 0;
      for (let b = 0; b < blocks; b++) {
        const o = (r * blocks + b) * 34;
        let dot = 0;
        for (let i = 0; i < 32; i++) dot += signed(w[o + 2 + i]) * act.q[b * 32 + i];
        a32 = f32(a32 + f32(f32(half(w, o) * act.d[b]) * dot));
        a64 += half(w, o) * act.d[b] * dot;
      }
      expect(Object.is(o32[r], a32)).toBe(true);
      expect(Object.is(o64[r], a64)).toBe(true);
    }
  });

  it('Q8_0 over a batch: two activations per double (paired codes) give each one\'s own result, an odd one out included', () => {
    const rows = 6, cols = 96, blocks = cols / 32;
    const w = quantizeQ8_0Weights(Float32Array.from({ length: rows * cols }, sym));
    w[5] = 0x80; // a -128 weight code against ±127 activation codes: the largest block sums there are
    const acts = [0, 1, 2, 3, 4].map((k) => {
      const a = quantizeQ8_0Act(Float32Array.from({ length: cols }, () => sym() * (k + 1)));
      if (k === 1) a.q.fill(127, 0, 32);
      if (k === 2) a.q.fill(-127, 0, 32);
      return a;
    });
    const p32 = acts.map(() => new Float32Array(rows)), p64 = acts.map(() => new Float64Array(rows));
    q8_0RowsPaired(w, blocks, stagePairedCodes(acts.map((a) => a.q)), acts.map((a) => a.d), 0, rows, p32, p64);
    acts.forEach((a, t) => {
      const o32 = new Float32Array(rows), o64 = new Float64Array(rows);
      q8_0Rows(w, blocks, stageCodes([a.q])[0], a.d, 0, rows, o32, o64);
      expect(Buffer.from(p32[t].buffer).equals(Buffer.from(o32.buffer))).toBe(true);
      expect(Buffer.from(p64[t].buffer).equals(Buffer.from(o64.buffer))).toBe(true);
    });
  });

  it('F16: one f32 accumulator per row in column order (rows four at a time and the remainder), and the f64 twin', () => {
    const rows = 7, cols = 37;
    const w = encodeF16(Float32Array.from({ length: rows * cols }, sym));
    const x = Float32Array.from({ length: cols }, () => sym() * 5);
    const o32 = new Float32Array(rows), o64 = new Float64Array(rows);
    f16Rows(w, cols, Float64Array.from(x), 0, rows, o32, o64);
    for (let r = 0; r < rows; r++) {
      let a32 = 0, a64 = 0;
      for (let c = 0; c < cols; c++) {
        const v = half(w, 2 * (r * cols + c));
        a32 = f32(a32 + f32(v * x[c]));
        a64 += v * x[c];
      }
      expect(Object.is(o32[r], a32)).toBe(true);
      expect(Object.is(o64[r], a64)).toBe(true);
    }
  });

  it('IQ2_XXS and Q2_K · Q8_K: the dequantized-code dots of ds4\'s scalar order, and their f64 twins', () => {
    const rows = 3, cols = 512, nb = cols / QK_K;
    const x = Float32Array.from({ length: cols }, () => sym() * 2);
    const xq = quantizeQ8_K(x);
    const at = stageCodes([xq.q])[0];
    const iq = synthIQ2_XXS(rnd, rows * cols, 0.05), q2 = synthQ2_K(rnd, rows * cols, 0.05);
    const i32 = new Float32Array(rows), i64 = new Float64Array(rows), k32 = new Float32Array(rows), k64 = new Float64Array(rows);
    iq2xxsRows(iq, xq.d, at, 0, rows, i32, i64);
    q2kRows(q2, xq.d, xq.bsums, at, 0, rows, k32, k64);
    for (let r = 0; r < rows; r++) {
      // IQ2_XXS: per 32-sub-block Σ grid·sign·q8, times 2s+1, per block f32 += f16(d)·d_x·bsum, × 1/8
      let s32 = 0, s64 = 0;
      for (let b = 0; b < nb; b++) {
        const o = (r * nb + b) * IQ2_XXS_BLOCK_BYTES;
        let bsum = 0;
        for (let k = 0; k < 8; k++) {
          const so = o + 2 + 8 * k;
          const aux = (iq[so + 4] | (iq[so + 5] << 8) | (iq[so + 6] << 16) | (iq[so + 7] << 24)) >>> 0;
          let sumi = 0;
          for (let l = 0; l < 4; l++) {
            const signs = ksignsIq2xs((aux >>> (7 * l)) & 127);
            for (let j = 0; j < 8; j++) sumi += IQ2XXS_GRID[iq[so + l] * 8 + j] * (signs & (1 << j) ? -1 : 1) * xq.q[b * QK_K + 32 * k + 8 * l + j];
          }
          bsum += sumi * (2 * (aux >>> 28) + 1);
        }
        s32 = f32(s32 + f32(f32(half(iq, o) * xq.d[b]) * f32(bsum)));
        s64 += half(iq, o) * xq.d[b] * bsum;
      }
      expect(Object.is(i32[r], f32(0.125 * s32))).toBe(true);
      expect(Object.is(i64[r], 0.125 * s64)).toBe(true);
      // Q2_K: isum = Σ (sc&15)·dot(2-bit codes, q8) per 16, summs = Σ bsums·(sc>>4), f32 += d_x·d·isum − d_x·dmin·summs
      let t32 = 0, t64 = 0;
      for (let b = 0; b < nb; b++) {
        const o = (r * nb + b) * Q2_K_BLOCK_BYTES;
        let isum = 0, summs = 0;
        for (let i = 0; i < QK_K; i++) {
          const code = (q2[o + 16 + 32 * (i >> 7) + (i & 31)] >> (2 * ((i >> 5) & 3))) & 3;
          isum += (q2[o + (i >> 4)] & 15) * code * xq.q[b * QK_K + i];
        }
        for (let s = 0; s < 16; s++) summs += xq.bsums[b * 16 + s] * (q2[o + s] >> 4);
        const d = half(q2, o + 80), dmin = half(q2, o + 82);
        t32 = f32(t32 + f32(f32(f32(xq.d[b] * d) * f32(isum)) - f32(f32(xq.d[b] * dmin) * f32(summs))));
        t64 += xq.d[b] * d * isum - xq.d[b] * dmin * summs;
      }
      expect(Object.is(k32[r], t32)).toBe(true);
      expect(Object.is(k64[r], t64)).toBe(true);
    }
  });
});
