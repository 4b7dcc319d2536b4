// GGUF access. OWNER: model helper (GGUF/config). Contract used by reference/, ascend/, diff/:
// the header is parsed by @huggingface/gguf; tensor bytes come from positional reads at absolute offsets
// (fs.readSync), so nothing ever maps or reads the whole file: the real q2 GGUF is ~81 GB and offsets
// go far past 4 GB (JS numbers are exact up to 2^53, checked below).
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { constants as bufferConstants } from 'node:buffer';
import { gguf } from '@huggingface/gguf';
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
  metadata: Record<string, unknown>;
  tensors: Map<string, TensorInfo>;
  /** hex hash of the GGUF header + tensor table: identifies the model in dumps and baselines */
  fingerprint: string;
  /** positional read of `length` bytes at absolute `offset` (never maps the whole file); `shared`
   *  puts the bytes in a SharedArrayBuffer so worker threads can read them without a copy */
  read(offset: number, length: number, shared?: boolean): Buffer;
  close(): void;
  /** GGUF value type of each metadata key, so config reading can tell f32 from u32 from string */
  metadataTypes: Record<string, MetaTypeInfo>;
  /** file size in bytes (apparent size for sparse files) */
  fileSize: number;
  /** absolute offset of the tensor data section */
  dataOffset: number;
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

function hashRange(fd: number, path: string, end: number): string {
  const h = createHash('sha256');
  const chunk = Buffer.alloc(1 << 20);
  for (let pos = 0; pos < end; pos += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, end - pos));
    readExactly(fd, path, part, pos);
    h.update(part);
  }
  return h.digest('hex');
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

export async function openGguf(path: string): Promise<GgufModel> {
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
    return await parse(fd, path);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

async function parse(fd: number, path: string): Promise<GgufModel> {
  const fileSize = fs.fstatSync(fd).size;
  checkPreamble(fd, path, fileSize);
  let parsed;
  try {
    parsed = await gguf(path, { allowLocalFile: true, typedMetadata: true });
  } catch (err) {
    // The parser's own messages are single sentences (bad counts, limits, unknown value types).
    throw badInput(`${path}: malformed GGUF header: ${(err as Error).message}`);
  }
  // The parser reads past EOF as zeros rather than failing, so a header cut short must be caught here.
  const headerEnd = parsed.tensorInfoByteRange[1];
  if (headerEnd > fileSize) throw badInput(`${path}: truncated GGUF: header and tensor table need ${headerEnd} bytes, file has ${fileSize}`);
  const dataOffset = safeNumber(parsed.tensorDataOffset, () => `${path}: tensor data offset`);

  const metadata: Record<string, unknown> = {};
  const metadataTypes: Record<string, MetaTypeInfo> = {};
  for (const [key, entry] of Object.entries(parsed.typedMetadata)) {
    if (key === 'version' || key === 'tensor_count' || key === 'kv_count') continue;
    const e = entry as { value: unknown; type: number; subType?: number };
    metadata[key] = e.value;
    metadataTypes[key] = e.subType === undefined ? { type: e.type } : { type: e.type, subType: e.subType };
  }

  const alignment = dataAlignment(path, metadataTypes['general.alignment'], metadata['general.alignment']);
  if (dataOffset % alignment !== 0 || dataOffset < headerEnd) throw badInput(`${path}: tensor data starts at ${dataOffset}, not the first multiple of ${alignment} after the tensor table (${headerEnd})`);
  const tensors = new Map<string, TensorInfo>();
  for (const ti of parsed.tensorInfos) {
    const name = ti.name;
    if (tensors.has(name)) throw badInput(`${path}: tensor ${name} appears twice in the tensor table`);
    const dtype: number = ti.dtype;
    if (!isKnownType(dtype)) throw badInput(`${path}: tensor ${name} has unknown ggml type ${dtype}`);
    if (ti.shape.length === 0) throw badInput(`${path}: tensor ${name} has no dimensions`);
    const tr = TYPE_TRAITS[dtype];
    const dims = ti.shape.map((d, i) => safeNumber(d, () => `${path}: tensor ${name} dim ${i}`));
    let elements = 1;
    for (const d of dims) {
      elements *= d;
      if (!Number.isSafeInteger(elements)) throw badInput(`${path}: tensor ${name} dims [${dims.join(', ')}] overflow (element count beyond 2^53)`);
    }
    if (dims[0] % tr.blockSize !== 0) throw badInput(`${path}: tensor ${name} row length ${dims[0]} is not a multiple of the ${tr.name} block size ${tr.blockSize}`);
    const nbytes = (elements / tr.blockSize) * tr.typeSize;
    if (!Number.isSafeInteger(nbytes)) throw badInput(`${path}: tensor ${name} byte size overflows`);
    // ggml's loader requires each tensor at a multiple of the alignment (kernels read whole aligned blocks)
    if (BigInt(ti.offset) % BigInt(alignment) !== 0n) throw badInput(`${path}: tensor ${name} data offset ${ti.offset} is not a multiple of the alignment ${alignment}`);
    const offset = safeNumber(BigInt(dataOffset) + BigInt(ti.offset), () => `${path}: tensor ${name} offset`);
    if (offset + nbytes > fileSize) {
      throw badInput(`${path}: tensor ${name} (${nbytes} bytes at offset ${offset}) runs past the end of the file (${fileSize} bytes; truncated?)`);
    }
    tensors.set(name, { name, type: dtype, dims, offset, nbytes });
  }

  checkNoOverlap(path, tensors);
  const fingerprint = hashRange(fd, path, headerEnd);
  let open = true;
  return {
    path,
    metadata,
    metadataTypes,
    tensors,
    fingerprint,
    fileSize,
    dataOffset,
    read(offset: number, length: number, shared = false): Buffer {
      if (!open) throw new Error(`${path}: read after close`);
      if (offset < 0 || length < 0 || offset + length > fileSize) throw badInput(`${path}: read of ${length} bytes at ${offset} is outside the file (${fileSize} bytes)`);
      const buf = shared ? Buffer.from(new SharedArrayBuffer(length)) : Buffer.allocUnsafe(length);
      readExactly(fd, path, buf, offset);
      return buf;
    },
    close() {
      if (open) fs.closeSync(fd);
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

/** Bytes of ggml rows [r0, r1) of a tensor (rows run over dims[1], then dims[2], ...). */
export function readRows(m: GgufModel, name: string, r0: number, r1: number): Uint8Array {
  const t = tensorInfo(m, name);
  const { rows, rowBytes } = tensorRows(t);
  if (!(Number.isInteger(r0) && Number.isInteger(r1) && 0 <= r0 && r0 <= r1 && r1 <= rows)) {
    throw badInput(`${m.path}: rows ${r0}:${r1} are outside tensor ${name} (${rows} rows)`);
  }
  return m.read(t.offset + r0 * rowBytes, (r1 - r0) * rowBytes);
}
