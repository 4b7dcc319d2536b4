// GGUF v3 writer (little endian) for the synthetic fixtures. Layout per the GGUF spec (ggml docs/gguf.md):
// magic "GGUF", u32 version, u64 tensor_count, u64 kv_count, the key/value table, the tensor table
// (name, n_dims, u64 dims in ggml order, u32 type, u64 offset relative to the data section), padding to
// `alignment`, then the tensor data with every tensor starting on an `alignment` boundary.
// Tensors whose data is `null` are left as holes: the file is extended with ftruncate, so on a sparse
// filesystem the untouched regions cost no disk (the ds4-flash preset is ~81 GB apparent, a few MB real).
import fs from 'node:fs';
import { GGMLType, TYPE_TRAITS, isKnownType } from './quant/types.ts';
import { writeAll, writeFileAtomic } from './atomic-write.ts';

export type MetaType = 'u32' | 'i32' | 'f32' | 'f64' | 'u64' | 'bool' | 'string' | 'arr_u32' | 'arr_i32' | 'arr_f32' | 'arr_string';

export interface MetaEntry {
  key: string;
  type: MetaType;
  value: unknown;
}

/** A streaming tensor source: calls `emit` with consecutive chunks that together make the tensor's bytes. */
export type TensorSource = (emit: (chunk: Uint8Array) => void) => void;

export interface TensorSpec {
  name: string;
  type: GGMLType;
  dims: number[];
  /** the bytes, a streaming source, or null for a hole (reads back as zeros) */
  data: Uint8Array | TensorSource | null;
}

export interface GgufSpec {
  metadata: MetaEntry[];
  tensors: TensorSpec[];
  alignment?: number;
}

// gguf_type ids (GGUF spec)
const GGUF_TYPE = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, f64: 12 } as const;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Bytes of a tensor of `type` with ggml dims `dims` (dims[0] must be a whole number of blocks). */
export function tensorNbytes(type: GGMLType, dims: number[]): number {
  const tr = TYPE_TRAITS[type];
  if (dims[0] % tr.blockSize !== 0) throw new Error(`row of ${dims[0]} is not a whole number of ${tr.name} blocks`);
  const elements = dims.reduce((a, b) => a * b, 1);
  return (elements / tr.blockSize) * tr.typeSize;
}

const alignUp = (x: number, a: number) => Math.ceil(x / a) * a;

/** Grows as bytes are appended; the header of the real vocab is a few MB, so one buffer is fine. */
class ByteSink {
  buf = Buffer.alloc(1 << 16);
  len = 0;
  private reserve(n: number) {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
  u32(v: number) { this.reserve(4); this.buf.writeUInt32LE(v, this.len); this.len += 4; }
  i32(v: number) { this.reserve(4); this.buf.writeInt32LE(v, this.len); this.len += 4; }
  u64(v: number | bigint) { this.reserve(8); this.buf.writeBigUInt64LE(BigInt(v), this.len); this.len += 8; }
  f32(v: number) { this.reserve(4); this.buf.writeFloatLE(v, this.len); this.len += 4; }
  f64(v: number) { this.reserve(8); this.buf.writeDoubleLE(v, this.len); this.len += 8; }
  u8(v: number) { this.reserve(1); this.buf[this.len++] = v; }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.reserve(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }
  bytes(): Buffer { return this.buf.subarray(0, this.len); }
}

function num(e: MetaEntry, v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  throw new Error(`metadata ${e.key}: ${e.type} value is not a number`);
}

function arr(e: MetaEntry): unknown[] {
  if (!Array.isArray(e.value)) throw new Error(`metadata ${e.key}: ${e.type} value is not an array`);
  return e.value;
}

function writeMeta(s: ByteSink, e: MetaEntry) {
  s.str(e.key);
  switch (e.type) {
    case 'u32': s.u32(GGUF_TYPE.u32); s.u32(num(e, e.value)); break;
    case 'i32': s.u32(GGUF_TYPE.i32); s.i32(num(e, e.value)); break;
    case 'f32': s.u32(GGUF_TYPE.f32); s.f32(num(e, e.value)); break;
    case 'f64': s.u32(GGUF_TYPE.f64); s.f64(num(e, e.value)); break;
    case 'u64': s.u32(GGUF_TYPE.u64); s.u64(typeof e.value === 'bigint' ? e.value : num(e, e.value)); break;
    case 'bool': s.u32(GGUF_TYPE.bool); s.u8(e.value ? 1 : 0); break;
    case 'string': s.u32(GGUF_TYPE.string); s.str(String(e.value)); break;
    case 'arr_u32': case 'arr_i32': case 'arr_f32': {
      const a = arr(e);
      const sub = e.type === 'arr_u32' ? GGUF_TYPE.u32 : e.type === 'arr_i32' ? GGUF_TYPE.i32 : GGUF_TYPE.f32;
      s.u32(GGUF_TYPE.array); s.u32(sub); s.u64(a.length);
      for (const v of a) (sub === GGUF_TYPE.u32 ? s.u32(num(e, v)) : sub === GGUF_TYPE.i32 ? s.i32(num(e, v)) : s.f32(num(e, v)));
      break;
    }
    case 'arr_string': {
      const a = arr(e);
      s.u32(GGUF_TYPE.array); s.u32(GGUF_TYPE.string); s.u64(a.length);
      for (const v of a) s.str(String(v));
      break;
    }
  }
}

export interface GgufLayout {
  header: Buffer;
  dataStart: number;
  /** offsets relative to the data section, one per tensor */
  offsets: number[];
  nbytes: number[];
  totalSize: number;
}

/** Serializes the header and assigns every tensor its aligned place in the data section. */
export function layoutGguf(spec: GgufSpec): GgufLayout {
  const alignment = spec.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const metadata = spec.metadata.slice();
  // A non-default alignment must be declared, or readers would place the data section elsewhere.
  if (alignment !== GGUF_DEFAULT_ALIGNMENT && !metadata.some((e) => e.key === 'general.alignment')) {
    metadata.unshift({ key: 'general.alignment', type: 'u32', value: alignment });
  }
  const s = new ByteSink();
  s.u8(0x47); s.u8(0x47); s.u8(0x55); s.u8(0x46); // "GGUF"
  s.u32(3);
  s.u64(spec.tensors.length);
  s.u64(metadata.length);
  for (const e of metadata) writeMeta(s, e);
  const offsets: number[] = [];
  const nbytes: number[] = [];
  let rel = 0;
  for (const t of spec.tensors) {
    if (!isKnownType(t.type)) throw new Error(`tensor ${t.name}: unknown ggml type ${t.type}`);
    const n = tensorNbytes(t.type, t.dims);
    s.str(t.name);
    s.u32(t.dims.length);
    for (const d of t.dims) s.u64(d);
    s.u32(t.type);
    s.u64(rel);
    offsets.push(rel);
    nbytes.push(n);
    rel = alignUp(rel + n, alignment);
  }
  const dataStart = alignUp(s.len, alignment);
  return { header: s.bytes(), dataStart, offsets, nbytes, totalSize: dataStart + rel };
}

/** Writes `spec` to `path` atomically (temporary name, then rename). */
export function writeGguf(path: string, spec: GgufSpec): void {
  const lay = layoutGguf(spec);
  writeFileAtomic(path, 'write the GGUF', (fd) => {
    writeAll(fd, lay.header, 0);
    spec.tensors.forEach((t, i) => {
      const start = lay.dataStart + lay.offsets[i];
      if (t.data === null) return;
      if (typeof t.data === 'function') {
        let pos = 0;
        t.data((chunk) => {
          if (pos + chunk.length > lay.nbytes[i]) throw new Error(`tensor ${t.name}: source produced more than ${lay.nbytes[i]} bytes`);
          writeAll(fd, chunk, start + pos);
          pos += chunk.length;
        });
        if (pos !== lay.nbytes[i]) throw new Error(`tensor ${t.name}: source produced ${pos} of ${lay.nbytes[i]} bytes`);
      } else {
        if (t.data.length !== lay.nbytes[i]) throw new Error(`tensor ${t.name}: ${t.data.length} bytes given, ${lay.nbytes[i]} expected`);
        writeAll(fd, t.data, start);
      }
    });
    // Extends the file to its full size; regions never written stay holes.
    fs.ftruncateSync(fd, lay.totalSize);
  });
}
