// Row dequantization for every tensor type a DS4 GGUF holds (model/quant/types.ts), ggml semantics.

import { badInput } from '../errors.ts';
import { F16_TABLE, bf16ToF32 } from './f16.ts';
import { dequantizeIQ2_XXS, dequantizeQ2_K, dequantizeQ4_K, dequantizeQ8_K } from './kquants.ts';
import { int8View } from './q8.ts';
import { GGMLType, TYPE_TRAITS, isKnownType, typeName } from './types.ts';

const fround = Math.fround;
// Module-local aliases: reading an imported binding in a hot loop is measurably slower than a local const.
const F16 = F16_TABLE;

/** Decode n elements of `type` starting at src[0] into out (allocated if absent); n must be whole blocks. */
export function dequantizeRow(type: GGMLType, src: Uint8Array, n: number, out: Float32Array = new Float32Array(n)): Float32Array {
  if (!isKnownType(type)) throw badInput(`cannot dequantize tensor type ${typeName(type)}`);
  const tr = TYPE_TRAITS[type];
  if (n % tr.blockSize !== 0) throw badInput(`${tr.name} row of ${n} elements is not a whole number of ${tr.blockSize}-blocks`);
  const need = (n / tr.blockSize) * tr.typeSize;
  if (src.length < need) throw badInput(`${tr.name} row of ${n} elements needs ${need} bytes, got ${src.length}`);
  if (out.length < n) throw new Error(`dequantizeRow: output of ${out.length} floats is shorter than ${n}`);
  switch (type) {
    case GGMLType.F32:
    case GGMLType.I32: {
      const dv = new DataView(src.buffer, src.byteOffset, need);
      if (type === GGMLType.F32) for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      else for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      break;
    }
    case GGMLType.F16:
      for (let i = 0; i < n; i++) out[i] = F16[src[2 * i] | (src[2 * i + 1] << 8)];
      break;
    case GGMLType.BF16:
      for (let i = 0; i < n; i++) out[i] = bf16ToF32(src[2 * i] | (src[2 * i + 1] << 8));
      break;
    case GGMLType.Q8_0: {
      // block: f16 d | int8 q[32]; value = d·q
      const i8 = int8View(src);
      for (let b = 0; b < n / 32; b++) {
        const o = b * 34;
        const d = F16[src[o] | (src[o + 1] << 8)];
        for (let j = 0; j < 32; j++) out[b * 32 + j] = fround(d * i8[o + 2 + j]);
      }
      break;
    }
    case GGMLType.Q8_K:
      dequantizeQ8_K(src, n, out);
      break;
    case GGMLType.Q2_K:
      dequantizeQ2_K(src, n, out);
      break;
    case GGMLType.Q4_K:
      dequantizeQ4_K(src, n, out);
      break;
    case GGMLType.IQ2_XXS:
      dequantizeIQ2_XXS(src, n, out);
      break;
  }
  return out;
}
