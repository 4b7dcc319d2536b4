// Public entry of the quant formats: everything other folders call lives behind this one import.
export * from './types.ts';
export { F16_TABLE, f16ToF32, f32ToF16, f16Round, f16Margin, bf16ToF32, f32ToBf16 } from './f16.ts';
export { type RoundingMargins, newMargins, noteTie } from './margins.ts';
export { dequantizeRow } from './dequant.ts';
export {
  type Q8Act, type Q8KAct, Q8_0_BLOCK_BYTES, roundHalfEven, quantizeQ8_0Act, dotQ8_0, matvecQ8_0, matvecQ8_0Act,
  matvecF16, quantizeQ8_K, q8_0Rows, q8_0RowsPaired, f16Rows, stageCodes, stagePairedCodes, CODES_CAPACITY,
} from './q8.ts';
export {
  IQ2_XXS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q4_K_BLOCK_BYTES, ksignsIq2xs, unpackQ4KScales, dotQ2_K_Q8_K, dotIQ2_XXS_Q8_K,
  q2kRows, iq2xxsRows,
} from './kquants.ts';
export { IQ2XXS_GRID } from './iq2xxs-grid.ts';
export { e4m3fnRound, e2m1Round, fp8KvQuantizeInplace, fp4ActQuantizeInplace, hadamard128Inplace } from './fp8.ts';
export { encodeF16, encodeBF16, quantizeQ8_0Weights, synthIQ2_XXS, synthQ2_K, synthQ4_K, packQ4KScales } from './synth.ts';
