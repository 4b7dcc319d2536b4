// GGUF access. OWNER: model helper (GGUF/config). Contract used by reference/, ascend/, diff/:
// the header is read by our own lean parser (metadata scalars decoded, arrays — a vocabulary is ~130k
// strings — kept as byte ranges and decoded only when asked); tensor bytes come from the addon's
// read-only file mapping (no copy) when it is built, else from positional reads at absolute offsets, so
// nothing ever reads the whole file: the real q2 GGUF is ~81 GB and offsets go far past 4 GB (JS numbers
// are exact up to 2^53, checked below).
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { constants as bufferConstants } from 'node:buffer';
import { loadAddon, type NativeAddon } from '../ascend/native.ts';
import { badInput } from './errors.ts';
import { GGMLType, TYPE_TRAITS, isKnownType } from './quant/types.ts';

export interface TensorInfo {
  name: string;
  type: GGMLType;
  /** ggml order: dims[0] = ne0 = row length (input dim), dims[1] = rows (output dim), dims[2] = experts */
  dims: number[];
  /** absolute byte offset of the tensor data in the file (tensorDataOffset + offset) */
  offset: number;
  nbytes: number;
}

/** GGUF value type of a metadata key (gguf_type ids: 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 12 f64...). */
export interface MetaTypeInfo {
  type: number;
  /** element type of an array */
  subType?: number;
}

export interface GgufModel {
  path: string;
  /** every metadata key; an array value is decoded when it is first read (stringArray looks without decoding) */
  metadata: Record<string, unknown>;
  tensors: Map<string, TensorInfo>;
  /** hex hash of the GGUF header + tensor table: identifies the model in dumps and baselines */
  fingerprint: string;
  /** positional read of `length` bytes at absolute `offset` into memory of its own (a copy); `shared`
   *  puts the bytes in a SharedArrayBuffer so worker threads can read them without a copy */
  read(offset: number, length: number, shared?: boolean): Buffer;
  /**
   * The `length` bytes at absolute `offset`, read-only: a view of the file mapping when the addon maps
   * the file (no copy: pages come from the page cache as they are touched), else `read(offset, length, true)`.
   */
  bytes(offset: number, length: number): Uint8Array;
  /** the addon's mapping of the file when bytes() are views of it — worker threads and the simulated device
   *  read the weights through it (ascend/native.ts NativeAddon.mapRange, NativeDevice.mapWeight) — else undefined */
  mapping?: { id: number; addon: NativeAddon };
  /** a string array of the metadata read in place (nothing decoded), or undefined when `key` is not one */
  stringArray(key: string): GgufStrings | undefined;
  close(): void;
  /** GGUF value type of each metadata key, so config reading can tell f32 from u32 from string */
  metadataTypes: Record<string, MetaTypeInfo>;
  /** file size in bytes (apparent size for sparse files) */
  fileSize: number;
  /** absolute offset of the tensor data section */
  dataOffset: number;
}

/** A string array of the header, read in place: its length, one element, whether it holds given texts. */
export interface GgufStrings {
  length: number;
  /** element i, decoded alone (undefined past the end) */
  at(i: number): string | undefined;
  /** which of `texts` occur in the array (a byte comparison per element: nothing else is decoded) */
  present(texts: readonly string[]): Set<string>;
  /** the position of the last element equal to `text`, or -1: a hash index over the elements' bytes, built on first use */
  indexOf(text: string): number;
}

export const GGUF_VALUE = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const PREAMBLE_BYTES = 24; // magic, version, u64 tensor_count, u64 kv_count

function readExactly(fd: number, path: string, buf: Buffer, position: number) {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) throw badInput(`${path}: short read of ${buf.length} bytes at offset ${position} (file truncated?)`);
    done += n;
  }
}

/** bigint or number from the parser → a safe JS number, or a one-line error naming what overflowed. */
function safeNumber(v: bigint | number, what: () => string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw badInput(`${what()} is ${v}, beyond what can be addressed`);
  return n;
}

/** Magic and version are checked by hand first: ds4 accepts only GGUF v3 (ds4.c model_open). */
function checkPreamble(fd: number, path: string, fileSize: number) {
  if (fileSize < PREAMBLE_BYTES) throw badInput(`${path}: truncated GGUF (${fileSize} bytes, the header alone needs ${PREAMBLE_BYTES})`);
  const b = Buffer.alloc(PREAMBLE_BYTES);
  readExactly(fd, path, b, 0);
  if (b.readUInt32LE(0) !== GGUF_MAGIC) throw badInput(`${path}: not a GGUF file (magic ${JSON.stringify(b.subarray(0, 4).toString('latin1'))}, expected "GGUF")`);
  const version = b.readUInt32LE(4);
  if (version !== 3) throw badInput(`${path}: unsupported GGUF version ${version} (only v3 is supported, as in ds4)`);
}

/**
 * The data alignment: `general.alignment` when it is a u32 power of two, 32 without it. ds4 uses the
 * key only when it is a nonzero u32 (model_open parse_metadata) and the header parser reads any
 * integer: any other type or value would make the two disagree on where the tensor data starts.
 */
function dataAlignment(path: string, type: MetaTypeInfo | undefined, value: unknown): number {
  if (!type) return 32;
  const n = Number(value);
  if (type.type !== GGUF_VALUE.u32 || !Number.isInteger(n) || n <= 0 || (n & (n - 1)) !== 0) {
    throw badInput(`${path}: general.alignment must be a u32 power of two, found ${String(value)} (GGUF type ${type.type})`);
  }
  return n;
}

/** No two tensors share bytes: a table whose entries overlap (or point at one blob twice) is corrupt. */
function checkNoOverlap(path: string, tensors: Map<string, TensorInfo>): void {
  const byOffset = [...tensors.values()].filter((t) => t.nbytes > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const a = byOffset[i - 1], b = byOffset[i];
    if (a.offset + a.nbytes > b.offset) throw badInput(`${path}: tensors ${a.name} (${a.nbytes} bytes at ${a.offset}) and ${b.name} (at ${b.offset}) overlap`);
  }
}

export async function openGguf(path: string, opts: { map?: boolean } = {}): Promise<GgufModel> {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO named as the model must not wait for a writer (refused below)
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw badInput(`${path}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'is a directory' : e.message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw badInput(`${path}: not a regular file (${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : 'a device or special file'}); a model is a GGUF file`);
    return parse(fd, path, opts.map ?? true);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

// Bounds a malformed header cannot make us exceed (counts are read before anything is allocated).
const MAX_KV_COUNT = 1e5;
const MAX_TENSOR_COUNT = 1e7;
const MAX_STRING_BYTES = 1e7;
const MAX_ARRAY_LENGTH = 1e6;
const MAX_ARRAY_DEPTH = 4;
const MAX_TENSOR_DIMS = 8;
const MAX_TENSOR_DIM = 2 ** 32;
/** Byte size of each fixed-size GGUF value type. */
const VALUE_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/**
 * The header bytes, read from the file as far as the parser gets (doubling a window over the file):
 * a malformed count fails on a bound or on the end of the file, never on an allocation.
 */
class HeaderReader {
  buf: Buffer;
  pos = 0;

  constructor(private readonly fd: number, readonly path: string, private readonly fileSize: number) {
    // a DS4 header with its vocabulary is ~5 MB: most are read in one go
    this.buf = Buffer.allocUnsafe(Math.min(fileSize, 8 << 20));
    readExactly(fd, path, this.buf, 0);
  }

  /** Makes bytes [pos, pos + n) available. */
  need(n: number): void {
    const end = this.pos + n;
    if (end <= this.buf.length) return;
    if (end > this.fileSize) throw badInput(`${this.path}: truncated GGUF: the header runs past the end of the file (${this.fileSize} bytes)`);
    // every byte of it is written: the old bytes, then the file's
    const grown = Buffer.allocUnsafe(Math.min(this.fileSize, Math.max(end, 2 * this.buf.length)));
    this.buf.copy(grown);
    readExactly(this.fd, this.path, grown.subarray(this.buf.length), this.buf.length);
    this.buf = grown;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A u64 count or size, which must be at most `max` (a safe integer). */
  count(max: number, what: () => string): number {
    this.need(8);
    const v = u64At(this.buf, this.pos);
    this.pos += 8;
    if (v > max) throw malformed(this.path, `${what()} is ${this.buf.readBigUInt64LE(this.pos - 8)}, more than the ${max} allowed`);
    return v;
  }

  /** A GGUF string: u64 byte length, then UTF-8 bytes. */
  string(what: () => string): string {
    const n = this.count(MAX_STRING_BYTES, () => `the length of ${what()}`);
    this.need(n);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** A value of type `type`: scalars decoded, an array kept in place (LazyArray). */
  value(type: number, what: () => string): unknown {
    if (type === GGUF_VALUE.string) return this.string(what);
    if (type === GGUF_VALUE.array) return this.array(0, what);
    const size = VALUE_BYTES[type];
    if (size === undefined) throw malformed(this.path, `${what()} has unknown value type ${type}`);
    this.need(size);
    const v = scalarAt(this.buf, this.pos, type);
    this.pos += size;
    return v;
  }

  /** An array: element type, count, then the elements, skipped (their bounds checked) and kept for later decoding. */
  array(depth: number, what: () => string): LazyArray {
    if (depth >= MAX_ARRAY_DEPTH) throw malformed(this.path, `${what()} nests arrays deeper than ${MAX_ARRAY_DEPTH}`);
    const type = this.u32();
    const n = this.count(MAX_ARRAY_LENGTH, () => `the length of ${what()}`);
    const at = this.pos;
    if (type === GGUF_VALUE.string) {
      // a vocabulary is ~130k strings: lengths read in a plain loop, nothing allocated per element
      for (let i = 0; i < n; i++) {
        this.need(8);
        const len = u64At(this.buf, this.pos);
        if (len > MAX_STRING_BYTES) throw malformed(this.path, `the length of element ${i} of ${what()} is ${this.buf.readBigUInt64LE(this.pos)}, more than the ${MAX_STRING_BYTES} allowed`);
        this.pos += 8;
        this.need(len);
        this.pos += len;
      }
    } else if (type === GGUF_VALUE.array) {
      for (let i = 0; i < n; i++) this.array(depth + 1, () => `element ${i} of ${what()}`);
    } else {
      const size = VALUE_BYTES[type];
      if (size === undefined) throw malformed(this.path, `${what()} has unknown element type ${type}`);
      this.need(n * size);
      this.pos += n * size;
    }
    return { type, n, at };
  }
}

/** An array value left where it is in the header: its element type, its length and where its elements start. */
interface LazyArray {
  type: number;
  n: number;
  at: number;
}

/**
 * A little-endian u64 as a number: exact below 2^53, and above it still larger than every bound we check
 * against. Byte arithmetic, not Buffer.readUInt32LE: it runs once per vocabulary entry, several times.
 */
function u64At(b: Buffer, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 16777216 + ((b[o + 4] | (b[o + 5] << 8) | (b[o + 6] << 16)) + b[o + 7] * 16777216) * 4294967296;
}

function malformed(path: string, what: string) {
  return badInput(`${path}: malformed GGUF header: ${what}`);
}

function scalarAt(b: Buffer, o: number, type: number): unknown {
  switch (type) {
    case GGUF_VALUE.u8: return b.readUInt8(o);
    case GGUF_VALUE.i8: return b.readInt8(o);
    case GGUF_VALUE.u16: return b.readUInt16LE(o);
    case GGUF_VALUE.i16: return b.readInt16LE(o);
    case GGUF_VALUE.u32: return b.readUInt32LE(o);
    case GGUF_VALUE.i32: return b.readInt32LE(o);
    case GGUF_VALUE.f32: return b.readFloatLE(o);
    case GGUF_VALUE.bool: return b.readUInt8(o) !== 0;
    case GGUF_VALUE.u64: return b.readBigUInt64LE(o);
    case GGUF_VALUE.i64: return b.readBigInt64LE(o);
    default: return b.readDoubleLE(o);
  }
}

/** Decodes a (validated) array in place: elements of its type, nested arrays as arrays; returns the end offset too. */
function decodeArray(b: Buffer, a: LazyArray): { values: unknown[]; end: number } {
  const values = new Array<unknown>(a.n);
  let o = a.at;
  for (let i = 0; i < a.n; i++) {
    if (a.type === GGUF_VALUE.string) {
      const len = u64At(b, o);
      values[i] = b.toString('utf8', o + 8, o + 8 + len);
      o += 8 + len;
    } else if (a.type === GGUF_VALUE.array) {
      const inner = decodeArray(b, { type: b.readUInt32LE(o), n: u64At(b, o + 4), at: o + 12 });
      values[i] = inner.values;
      o = inner.end;
    } else {
      values[i] = scalarAt(b, o, a.type);
      o += VALUE_BYTES[a.type];
    }
  }
  return { values, end: o };
}

/** FNV-1a of bytes [at, end) of b: the hash the in-place string index probes with. */
function fnv1a(b: Uint8Array, at: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = at; i < end; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

/** A string array read in place (GgufStrings); where each element's bytes are is indexed on first use. */
function stringsIn(b: Buffer, a: LazyArray): GgufStrings {
  // element i's bytes are [start[i], start[i] + len[i]) of the header (which is far below 4 GB)
  let start: Uint32Array | undefined, len: Uint32Array | undefined;
  const index = (): void => {
    if (start) return;
    start = new Uint32Array(a.n);
    len = new Uint32Array(a.n);
    for (let i = 0, o = a.at; i < a.n; i++) {
      const n = u64At(b, o);
      start[i] = o + 8;
      len[i] = n;
      o += 8 + n;
    }
  };
  const same = (i: number, q: Uint8Array, qo: number, qn: number) => len![i] === qn && b.compare(q, qo, qo + qn, start![i], start![i] + qn) === 0;
  // open addressing over the elements' bytes: slot → element + 1 (0 empty); a later duplicate takes the slot
  let slots: Int32Array | undefined;
  const table = (): Int32Array => {
    if (slots) return slots;
    index();
    slots = new Int32Array(2 ** Math.ceil(Math.log2(2 * a.n + 2)));
    const mask = slots.length - 1;
    for (let i = 0; i < a.n; i++) {
      const o = start![i], n = len![i];
      for (let s = fnv1a(b, o, o + n) & mask; ; s = (s + 1) & mask) {
        const e = slots[s];
        if (e === 0 || same(e - 1, b, o, n)) {
          slots[s] = i + 1;
          break;
        }
      }
    }
    return slots;
  };
  return {
    length: a.n,
    at(i) {
      if (!(Number.isInteger(i) && i >= 0 && i < a.n)) return undefined;
      index();
      return b.toString('utf8', start![i], start![i] + len![i]);
    },
    present(texts) {
      const wanted = texts.map((t) => Buffer.from(t, 'utf8'));
      const found = new Set<string>();
      for (let i = 0, o = a.at; i < a.n && found.size < texts.length; i++) {
        const len = u64At(b, o);
        for (let k = 0; k < wanted.length; k++) {
          // the first byte before the call: a vocabulary has many tokens as long as a special one
          const w = wanted[k];
          if (w.length === len && (len === 0 || w[0] === b[o + 8]) && b.compare(w, 0, len, o + 8, o + 8 + len) === 0) found.add(texts[k]);
        }
        o += 8 + len;
      }
      return found;
    },
    indexOf(text) {
      const q = Buffer.from(text, 'utf8');
      const t = table(), mask = t.length - 1;
      for (let s = fnv1a(q, 0, q.length) & mask; t[s] !== 0; s = (s + 1) & mask) if (same(t[s] - 1, q, 0, q.length)) return t[s] - 1;
      return -1;
    },
  };
}

function parse(fd: number, path: string, map: boolean): GgufModel {
  const fileSize = fs.fstatSync(fd).size;
  checkPreamble(fd, path, fileSize);
  const h = new HeaderReader(fd, path, fileSize);
  h.pos = 8;
  const tensorCount = h.count(MAX_TENSOR_COUNT, () => 'the tensor count');
  const kvCount = h.count(MAX_KV_COUNT, () => 'the metadata key count');

  const metadata: Record<string, unknown> = {};
  const metadataTypes: Record<string, MetaTypeInfo> = {};
  const arrays = new Map<string, LazyArray>();
  for (let i = 0; i < kvCount; i++) {
    const key = h.string(() => `metadata key ${i}`);
    const type = h.u32();
    const value = h.value(type, () => `metadata ${key}`);
    if (type === GGUF_VALUE.array) {
      const a = value as LazyArray;
      arrays.set(key, a);
      metadataTypes[key] = { type, subType: a.type };
      // decoded on first read (and kept): a --tokens run never decodes the vocabulary
      Object.defineProperty(metadata, key, {
        enumerable: true,
        configurable: true,
        get: () => {
          const values = decodeArray(h.buf, a).values;
          Object.defineProperty(metadata, key, { value: values, enumerable: true, configurable: true, writable: true });
          return values;
        },
      });
    } else {
      // a key given twice: the later wins, as in ds4's table
      arrays.delete(key);
      Object.defineProperty(metadata, key, { value, enumerable: true, configurable: true, writable: true });
      metadataTypes[key] = { type };
    }
  }

  const alignment = dataAlignment(path, metadataTypes['general.alignment'], metadata['general.alignment']);
  const table: Array<{ name: string; dtype: number; dims: number[]; offset: bigint }> = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = h.string(() => `tensor name ${i}`);
    const nDims = h.u32();
    if (nDims > MAX_TENSOR_DIMS) throw malformed(path, `tensor ${name} has ${nDims} dimensions, more than ${MAX_TENSOR_DIMS}`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(h.count(MAX_TENSOR_DIM, () => `tensor ${name} dim ${d}`));
    const dtype = h.u32();
    h.need(8);
    const offset = h.buf.readBigUInt64LE(h.pos);
    h.pos += 8;
    table.push({ name, dtype, dims, offset });
  }
  const headerEnd = h.pos;
  const dataOffset = Math.ceil(headerEnd / alignment) * alignment;

  const tensors = new Map<string, TensorInfo>();
  for (const ti of table) {
    const { name, dtype, dims } = ti;
    if (tensors.has(name)) throw badInput(`${path}: tensor ${name} appears twice in the tensor table`);
    if (!isKnownType(dtype)) throw badInput(`${path}: tensor ${name} has unknown ggml type ${dtype}`);
    if (dims.length === 0) throw badInput(`${path}: tensor ${name} has no dimensions`);
    const tr = TYPE_TRAITS[dtype];
    let elements = 1;
    for (const d of dims) {
      elements *= d;
      if (!Number.isSafeInteger(elements)) throw badInput(`${path}: tensor ${name} dims [${dims.join(', ')}] overflow (element count beyond 2^53)`);
    }
    if (dims[0] % tr.blockSize !== 0) throw badInput(`${path}: tensor ${name} row length ${dims[0]} is not a multiple of the ${tr.name} block size ${tr.blockSize}`);
    const nbytes = (elements / tr.blockSize) * tr.typeSize;
    if (!Number.isSafeInteger(nbytes)) throw badInput(`${path}: tensor ${name} byte size overflows`);
    // ggml's loader requires each tensor at a multiple of the alignment (kernels read whole aligned blocks)
    if (ti.offset % BigInt(alignment) !== 0n) throw badInput(`${path}: tensor ${name} data offset ${ti.offset} is not a multiple of the alignment ${alignment}`);
    const offset = safeNumber(BigInt(dataOffset) + ti.offset, () => `${path}: tensor ${name} offset`);
    if (offset + nbytes > fileSize) {
      throw badInput(`${path}: tensor ${name} (${nbytes} bytes at offset ${offset}) runs past the end of the file (${fileSize} bytes; truncated?)`);
    }
    tensors.set(name, { name, type: dtype, dims, offset, nbytes });
  }

  checkNoOverlap(path, tensors);
  let fingerprint: string | undefined;
  const strings = new Map<string, GgufStrings>();
  const addon = map ? loadAddon() : undefined;
  const mapping = addon?.ok ? { id: addon.addon.mapFile(fd), addon: addon.addon } : undefined;
  let open = true;
  const read = (offset: number, length: number, shared = false): Buffer => {
    if (!open) throw new Error(`${path}: read after close`);
    if (offset < 0 || length < 0 || offset + length > fileSize) throw badInput(`${path}: read of ${length} bytes at ${offset} is outside the file (${fileSize} bytes)`);
    const buf = shared ? Buffer.from(new SharedArrayBuffer(length)) : Buffer.allocUnsafe(length);
    readExactly(fd, path, buf, offset);
    return buf;
  };
  return {
    path,
    metadata,
    metadataTypes,
    tensors,
    // hashed when first asked for (tokenize never asks)
    get fingerprint() {
      return (fingerprint ??= createHash('sha256').update(h.buf.subarray(0, headerEnd)).digest('hex'));
    },
    fileSize,
    dataOffset,
    read,
    bytes(offset: number, length: number): Uint8Array {
      if (!mapping) return read(offset, length, true);
      if (!open) throw new Error(`${path}: read after close`);
      if (offset < 0 || length < 0 || offset + length > fileSize) throw badInput(`${path}: read of ${length} bytes at ${offset} is outside the file (${fileSize} bytes)`);
      return new Uint8Array(mapping.addon.mapRange(mapping.id, offset, length));
    },
    mapping,
    stringArray(key: string): GgufStrings | undefined {
      const a = arrays.get(key);
      if (!a || a.type !== GGUF_VALUE.string) return undefined;
      // one per key: its index is built once
      let s = strings.get(key);
      if (!s) strings.set(key, (s = stringsIn(h.buf, a)));
      return s;
    },
    close() {
      if (open) fs.closeSync(fd);
      // views still held keep the mapping until they are collected
      if (open && mapping) mapping.addon.unmapFile(mapping.id);
      open = false;
    },
  };
}

/** The tensor's table entry; a missing tensor is bad input naming the tensor and the file. */
export function tensorInfo(m: GgufModel, name: string): TensorInfo {
  const t = m.tensors.get(name);
  if (!t) throw badInput(`${m.path}: tensor ${name} not found`);
  return t;
}

/** Number of ggml rows (product of dims[1..]) and the bytes of one row. */
export function tensorRows(t: TensorInfo): { rows: number; rowBytes: number } {
  const rows = t.dims.slice(1).reduce((a, b) => a * b, 1);
  return { rows, rowBytes: t.nbytes / rows };
}

/** All bytes of a tensor. For the multi-GB routed experts prefer readRows. */
export function readTensor(m: GgufModel, name: string): Uint8Array {
  const t = tensorInfo(m, name);
  if (t.nbytes > bufferConstants.MAX_LENGTH) throw badInput(`${m.path}: tensor ${name} is ${t.nbytes} bytes, too large to read at once; read it by rows`);
  return m.read(t.offset, t.nbytes);
}

/**
 * The layers (n_layer for the output head) whose every tensor holds no data: the bytes sampled at a tensor's
 * start, middle and end all zero — a hole of a sparse file (a layer a fixture did not populate), which reads
 * as zeros; a trained layer's norm weights alone are never zero. A run through such a layer multiplies zeros
 * and tests none of its kernels.
 */
export function layersWithoutData(m: GgufModel, nLayer: number, lastLayer: number): number[] {
  const groups = new Map<number, TensorInfo[]>();
  for (const t of m.tensors.values()) {
    const l = /^blk\.(\d+)\./.exec(t.name)?.[1];
    const layer = l !== undefined ? Number(l) : t.name.startsWith('output') ? nLayer : undefined;
    if (layer === undefined || (layer > lastLayer && layer !== nLayer)) continue;
    (groups.get(layer) ?? groups.set(layer, []).get(layer)!).push(t);
  }
  const empty = (t: TensorInfo) => {
    const n = Math.min(256, t.nbytes);
    return [0, Math.floor((t.nbytes - n) / 2), t.nbytes - n].every((at) => m.read(t.offset + at, n).every((b) => b === 0));
  };
  return [...groups].filter(([, ts]) => ts.every(empty)).map(([l]) => l).sort((a, b) => a - b);
}

/** Bytes of ggml rows [r0, r1) of a tensor (rows run over dims[1], then dims[2], ...). */
export function readRows(m: GgufModel, name: string, r0: number, r1: number): Uint8Array {
  const t = tensorInfo(m, name);
  const { rows, rowBytes } = tensorRows(t);
  if (!(Number.isInteger(r0) && Number.isInteger(r1) && 0 <= r0 && r0 <= r1 && r1 <= rows)) {
    throw badInput(`${m.path}: rows ${r0}:${r1} are outside tensor ${name} (${rows} rows)`);
  }
  return m.read(t.offset + r0 * rowBytes, (r1 - r0) * rowBytes);
}
