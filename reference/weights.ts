// Weight access for the reference: a tensor is a view of the GGUF's file mapping (model/gguf.ts bytes():
// no copy, the page cache serves the pages a product touches; an expert slice or an embedding row is a
// piece of its tensor's view) or, without the addon, read by positional reads into shared memory when first
// used, and kept — routed experts (0.5-0.7 GB per tensor in the real q2 file) and embedding rows then one
// slice at a time in a small LRU, the way ds4 touches only the six selected experts.
import type { Ds4Config } from '../model/config.ts';
import { tensorInfo, tensorRows } from '../model/gguf.ts';
import type { GgufModel, TensorInfo } from '../model/gguf.ts';
import { badInput } from '../model/errors.ts';
import { GGMLType, typeName } from '../model/quant/types.ts';
import { f16ToF32 } from '../model/quant/index.ts';
import type { LayerWeights, Weight } from './types.ts';

const SLICE_LRU = 64;

/** What the reference's steps read of the model: a layer's tensors, the global tensors, embedding rows. */
export type Weights = Pick<ModelWeights, 'layer' | 'global' | 'globalF32' | 'embeddingRow'>;

export class ModelWeights {
  private cache = new Map<string, Uint8Array>();
  private slices = new Map<string, Uint8Array>();

  constructor(readonly model: GgufModel, readonly cfg: Ds4Config) {}

  info(name: string): TensorInfo {
    return tensorInfo(this.model, name);
  }

  has(name: string): boolean {
    return this.model.tensors.has(name);
  }

  bytes(name: string): Uint8Array {
    let b = this.cache.get(name);
    if (!b) {
      const t = this.info(name);
      b = this.model.bytes(t.offset, t.nbytes);
      this.cache.set(name, b);
    }
    return b;
  }

  /** Where a tensor's bytes at `offset` in it are in the file mapping, when the model is mapped. */
  private src(t: TensorInfo, offset = 0): Weight['src'] {
    return this.model.mapping && { mapId: this.model.mapping.id, offset: t.offset + offset };
  }

  /** A 2-D tensor as a Weight (dims[0] = row length, dims[1] = rows). */
  global(name: string): Weight {
    const t = this.info(name);
    if (t.dims.length > 2) throw badInput(`${this.model.path}: tensor ${name} has ${t.dims.length} dims, expected a matrix`);
    return { name, type: t.type, cols: t.dims[0], rows: t.dims[1] ?? 1, data: this.bytes(name), src: this.src(t) };
  }

  globalF32(name: string): Float32Array {
    const t = this.info(name);
    if (t.type !== GGMLType.F32) throw badInput(`${this.model.path}: tensor ${name} is ${typeName(t.type)}, expected F32`);
    return f32Of(this.bytes(name));
  }

  i32(name: string): Int32Array {
    const t = this.info(name);
    if (t.type !== GGMLType.I32) throw badInput(`${this.model.path}: tensor ${name} is ${typeName(t.type)}, expected I32`);
    const b = this.bytes(name);
    return b.byteOffset % 4 === 0 ? new Int32Array(b.buffer, b.byteOffset, b.length / 4) : new Int32Array(b.slice().buffer);
  }

  /** Expert `e`'s [rows x cols] slice of a 3-D expert tensor [cols, rows, nExpert]. */
  expert(name: string, e: number): Weight {
    const t = this.info(name);
    const [cols, rows, n] = t.dims;
    if (t.dims.length !== 3 || e < 0 || e >= n) throw badInput(`${this.model.path}: expert ${e} of ${name} (dims ${t.dims.join('x')}) does not exist`);
    const { rowBytes } = tensorRows(t);
    const at = e * rows * rowBytes;
    return { name: `${name}[${e}]`, type: t.type, cols, rows, data: this.slice(name, t, at, rows * rowBytes), src: this.src(t, at) };
  }

  /**
   * `length` bytes at `at` in a tensor: a piece of the whole tensor's view when the model is mapped (one view
   * per tensor however many experts or rows are used), else a positional read kept in a small LRU.
   */
  private slice(name: string, t: TensorInfo, at: number, length: number): Uint8Array {
    if (this.model.mapping) return this.bytes(name).subarray(at, at + length);
    const key = `${name}@${at}`;
    let b = this.slices.get(key);
    if (b) {
      this.slices.delete(key);
    } else {
      b = this.model.bytes(t.offset + at, length);
      if (this.slices.size >= SLICE_LRU) this.slices.delete(this.slices.keys().next().value as string);
    }
    this.slices.set(key, b);
    return b;
  }

  /** S0: the embedding row of `token`, decoded to f32 (token_embd is F16 [nEmbd, nVocab]). */
  embeddingRow(token: number): Float32Array {
    const t = this.info('token_embd.weight');
    const { rows, rowBytes } = tensorRows(t);
    if (!Number.isInteger(token) || token < 0 || token >= rows) throw badInput(`token id ${token} is outside the vocabulary (0..${rows - 1})`);
    if (t.type !== GGMLType.F16) throw badInput(`${this.model.path}: token_embd.weight is ${typeName(t.type)}, expected F16`);
    const raw = this.slice('token_embd.weight', t, token * rowBytes, rowBytes);
    const out = new Float32Array(t.dims[0]);
    for (let i = 0; i < out.length; i++) out[i] = f16ToF32(raw[2 * i] | (raw[2 * i + 1] << 8));
    return out;
  }

  layer(il: number): LayerWeights {
    const prefix = `blk.${il}.`;
    return {
      il,
      has: (name) => this.has(prefix + name),
      get: (name) => this.global(prefix + name),
      f32: (name) => this.globalF32(prefix + name),
      i32: (name) => this.i32(prefix + name),
      expert: (name, e) => this.expert(prefix + name, e),
    };
  }
}

function f32Of(b: Uint8Array): Float32Array {
  return b.byteOffset % 4 === 0 ? new Float32Array(b.buffer, b.byteOffset, b.length / 4) : new Float32Array(b.slice().buffer);
}
