// Types shared by the reference stages and the graph runner.
import type { GGMLType } from '../model/quant/types.ts';
import type { MappedRange } from './rowpool.ts';

/**
 * `ds4`: the CPU path's arithmetic — f32 storage and the same quantization points as ds4.c
 * (Q8_0 activations before every Q8_0 matvec, Q8_K before expert matvecs, FP8 + f16 on cache rows,
 * Hadamard + FP4 in the indexer). `f64`: the rounding-noise twin — the same graph and the same
 * quantization points (quantization is part of DS4's semantics: every quantizer still sees its input
 * as f32 and picks the same codes), but every other result kept in f64. On the same inputs the two
 * differ only by ds4's float rounding: each stage's own rounding noise, the yardstick the judge
 * measures a device kernel's own error against. `ascend`: the approximation twin — ds4's float arithmetic
 * with exp, rsqrt, sqrt and log replaced by the approximations the ds4-ascend kernels are documented to
 * use (catalog §10; reference/math.ts). On the same inputs it differs from `ds4` by what those
 * approximations do to this row: the judge's model of the Ascend kernel math's own error, row by row,
 * instead of a kernel's worst case over every input. It is never a reference.
 */
export type Precision = 'ds4' | 'f64' | 'ascend';

/** A vector in the precision's storage type: Float64Array for `f64`, Float32Array otherwise. */
export type Vec = Float32Array | Float64Array;

export function allocVec(p: Precision, n: number): Vec {
  return p === 'f64' ? new Float64Array(n) : new Float32Array(n);
}

/** A 2-D weight matrix (or one expert's slice of a 3-D one): `rows` rows of `cols` elements, ggml row-major. */
export interface Weight {
  name: string;
  type: GGMLType;
  cols: number;
  rows: number;
  /** exactly rows * rowBytes(type, cols) bytes */
  data: Uint8Array;
  /** where those bytes are in the model file's mapping, when they are a view of it (worker threads map them too) */
  src?: MappedRange;
}

/** Tensors of one layer, by the name after `blk.N.` (e.g. `attn_q_a.weight`, `indexer.proj.weight`). */
export interface LayerWeights {
  il: number;
  has(name: string): boolean;
  /** 2-D weight (F16, F32, Q8_0, ...) */
  get(name: string): Weight;
  /** F32 vector (norm weights, biases, scales), as stored */
  f32(name: string): Float32Array;
  /** I32 table (`ffn_gate_tid2eid.weight`), row-major [rows][ne0] */
  i32(name: string): Int32Array;
  /** expert `e`'s 2-D slice of a 3-D expert tensor */
  expert(name: string, e: number): Weight;
}
