// GGML tensor types that a DS4 GGUF uses, with their ggml type ids and block geometry.
// Ids and block layouts are ggml's (ggml.h `enum ggml_type`, ggml-common.h block structs).
export enum GGMLType {
  F32 = 0,
  F16 = 1,
  Q8_0 = 8,
  Q2_K = 10,
  Q4_K = 12,
  Q8_K = 15,
  IQ2_XXS = 16,
  I32 = 26,
  BF16 = 30,
}

export interface TypeTraits {
  name: string;
  /** elements per block */
  blockSize: number;
  /** bytes per block */
  typeSize: number;
}

export const QK_K = 256;

export const TYPE_TRAITS: Record<GGMLType, TypeTraits> = {
  [GGMLType.F32]: { name: 'F32', blockSize: 1, typeSize: 4 },
  [GGMLType.F16]: { name: 'F16', blockSize: 1, typeSize: 2 },
  [GGMLType.BF16]: { name: 'BF16', blockSize: 1, typeSize: 2 },
  [GGMLType.I32]: { name: 'I32', blockSize: 1, typeSize: 4 },
  // block_q8_0: f16 d; int8 qs[32]
  [GGMLType.Q8_0]: { name: 'Q8_0', blockSize: 32, typeSize: 34 },
  // block_q8_K: f32 d; int8 qs[256]; int16 bsums[16]
  [GGMLType.Q8_K]: { name: 'Q8_K', blockSize: QK_K, typeSize: 4 + QK_K + 2 * (QK_K / 16) },
  // block_q2_K: u8 scales[16]; u8 qs[64]; f16 d; f16 dmin
  [GGMLType.Q2_K]: { name: 'Q2_K', blockSize: QK_K, typeSize: 16 + 64 + 2 + 2 },
  // block_q4_K: f16 d; f16 dmin; u8 scales[12]; u8 qs[128]
  [GGMLType.Q4_K]: { name: 'Q4_K', blockSize: QK_K, typeSize: 2 + 2 + 12 + 128 },
  // block_iq2_xxs: f16 d; u16 qs[32]
  [GGMLType.IQ2_XXS]: { name: 'IQ2_XXS', blockSize: QK_K, typeSize: 2 + 64 },
};

export function isKnownType(t: number): t is GGMLType {
  return Object.prototype.hasOwnProperty.call(TYPE_TRAITS, t);
}

export function typeName(t: number): string {
  return isKnownType(t) ? TYPE_TRAITS[t].name : `type#${t}`;
}

/** Bytes of one row of `n` elements; `n` must be a multiple of the block size. */
export function rowBytes(t: GGMLType, n: number): number {
  const tr = TYPE_TRAITS[t];
  if (n % tr.blockSize !== 0) throw new Error(`${tr.name} row of ${n} elements is not a whole number of ${tr.blockSize}-blocks`);
  return (n / tr.blockSize) * tr.typeSize;
}
