// GGUF access. OWNER: model helper (GGUF/config). Contract used by reference/, ascend/, diff/:
import type { GGMLType } from './quant/types.ts';

export interface TensorInfo {
  name: string;
  type: GGMLType;
  /** ggml order: dims[0] = ne0 = row length (input dim), dims[1] = rows (output dim), dims[2] = experts */
  dims: number[];
  /** absolute byte offset of the tensor data in the file (tensorDataOffset + offset) */
  offset: number;
  nbytes: number;
}

export interface GgufModel {
  path: string;
  metadata: Record<string, unknown>;
  tensors: Map<string, TensorInfo>;
  /** hex hash of the GGUF header + tensor table: identifies the model in dumps and baselines */
  fingerprint: string;
  /** positional read of `length` bytes at absolute `offset` (never maps the whole file) */
  read(offset: number, length: number): Buffer;
  close(): void;
}
