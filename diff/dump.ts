// The Arrow dump format: one IPC *file* per side of a run (reference.arrow, device.arrow, ...).
// One row per captured (stage, layer, pos); the run's identity lives in the schema metadata, so a
// dump is self-describing and readable by pyarrow/pandas with no code of ours:
//
//   stage      utf8              canonical registry name (or the producer's own name if unknown)
//   layer      int32             0..n_layer-1; 0 for the embedding; n_layer for the output head
//   pos        int32             absolute token position
//   token      int32             token id at pos (-1 if unknown)
//   dtype      utf8              'f32' | 'i32'
//   shape      list<int32>       row-major shape of the values
//   values_f32 list<float32>     the values when dtype = f32, null otherwise
//   values_i32 list<int32>       the values when dtype = i32, null otherwise
//   kind       utf8              'full' (the values are there) | 'stats' (only their statistics: values null)
//   stat_min, stat_max, stat_mean, stat_rms   float64   over the finite values (diff/stats.ts), every row
//   stat_nan, stat_inf           int32             NaN and ±Inf counts
//   stat_hash  utf8              64-bit hash of the value bits (16 hex digits): equal values, equal hash
//   metadata   ds4diff.format_version, ds4diff.model_fingerprint, ds4diff.prompt_tokens (JSON),
//              ds4diff.producer (JSON), ds4diff.side, ds4diff.created_at (ISO time),
//              ds4diff.capture (JSON {mode: full|stats, full: what a stats capture kept in full})
// Version 1 dumps (no kind and stat_* columns: every row full) are read as they are.
//
// Written streaming (one record batch per flush) into `<path>.tmp-<pid>` and renamed on close, so an
// interrupted run never leaves a file that looks complete. Uncompressed IPC on purpose: apache-arrow
// 21.2's compressed IPC writer is not reliable.
import * as fs from 'node:fs';
import {
  AsyncByteQueue, Data, DataType, Field, Float32, Float64, Int32, List, Precision, RecordBatch, RecordBatchFileWriter, RecordBatchReader,
  Schema, Struct, Utf8, Vector, makeData,
} from 'apache-arrow';
import { Footer as FbFooter } from 'apache-arrow/fb/footer';
import { Message as FbMessage } from 'apache-arrow/fb/message';
import { MessageHeader } from 'apache-arrow/fb/message-header';
import { RecordBatch as FbRecordBatch } from 'apache-arrow/fb/record-batch';
import * as flatbuffers from 'flatbuffers';
import type { Ds4Config } from '../model/config.ts';
import { badInput, fileError } from '../model/errors.ts';
import { onCancel } from './cancel.ts';
import { recordKey, resolveStage, type RowStats, type StageRecord } from '../model/stages.ts';
import { statsOf } from './stats.ts';

export const DUMP_FORMAT_VERSION = 2;

/** How a side was captured: every row in full, or statistics with the rows named in `full` kept in full. */
export interface CaptureMeta {
  mode: 'full' | 'stats';
  /** a stats capture: what it kept in full (diff/plan.ts describes them), e.g. `always: logits, choices…`, `q_rope@0` */
  full?: string[];
}

export interface DumpMeta {
  formatVersion: number;
  modelFingerprint: string;
  promptTokens: number[];
  producer: { backend: string; precision?: string; kernelMath?: string; options?: Record<string, unknown>; version: string; replayOf?: string; derivedInputs?: Record<string, string[]> };
  createdAt?: string;
  /** 'reference' | 'reference-f64' | 'device' | 'device-teacher' | 'ds4-import' | ... */
  side: string;
  /** absent in version 1 dumps: every row full */
  capture?: CaptureMeta;
}

const META = {
  formatVersion: 'ds4diff.format_version',
  fingerprint: 'ds4diff.model_fingerprint',
  promptTokens: 'ds4diff.prompt_tokens',
  producer: 'ds4diff.producer',
  side: 'ds4diff.side',
  createdAt: 'ds4diff.created_at',
  capture: 'ds4diff.capture',
} as const;

const listOf = (t: Int32 | Float32) => new List(new Field('item', t, true));

function dumpSchema(meta: DumpMeta): Schema {
  const fields = [
    new Field('stage', new Utf8(), false),
    new Field('layer', new Int32(), false),
    new Field('pos', new Int32(), false),
    new Field('token', new Int32(), false),
    new Field('dtype', new Utf8(), false),
    new Field('shape', listOf(new Int32()), false),
    new Field('values_f32', listOf(new Float32()), true),
    new Field('values_i32', listOf(new Int32()), true),
    new Field('kind', new Utf8(), false),
    new Field('stat_min', new Float64(), false),
    new Field('stat_max', new Float64(), false),
    new Field('stat_mean', new Float64(), false),
    new Field('stat_rms', new Float64(), false),
    new Field('stat_nan', new Int32(), false),
    new Field('stat_inf', new Int32(), false),
    new Field('stat_hash', new Utf8(), false),
  ];
  const md = new Map<string, string>([
    [META.formatVersion, String(DUMP_FORMAT_VERSION)],
    [META.fingerprint, meta.modelFingerprint],
    [META.promptTokens, JSON.stringify(meta.promptTokens)],
    [META.producer, JSON.stringify(meta.producer)],
    [META.side, meta.side],
    [META.createdAt, meta.createdAt ?? new Date().toISOString()],
    [META.capture, JSON.stringify(meta.capture ?? { mode: 'full' })],
  ]);
  return new Schema(fields, md);
}

/** Collects the writer's bytes so we can write them to the file ourselves, synchronously. */
class ChunkSink extends AsyncByteQueue {
  chunks: Uint8Array[] = [];
  override write(value: Uint8Array | ArrayBufferView): void {
    const v = value instanceof Uint8Array ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    if (v.byteLength > 0) this.chunks.push(v);
  }
}

function utf8Data(strings: string[]): Data<Utf8> {
  const enc = new TextEncoder();
  const bytes = strings.map((s) => enc.encode(s));
  const offsets = new Int32Array(strings.length + 1);
  for (let i = 0; i < bytes.length; i++) offsets[i + 1] = offsets[i] + bytes[i].length;
  const data = new Uint8Array(offsets[strings.length]);
  bytes.forEach((b, i) => data.set(b, offsets[i]));
  return makeData({ type: new Utf8(), length: strings.length, valueOffsets: offsets, data });
}

/** A list column; `pick(i)` null marks a null row. */
function listData<T extends Int32 | Float32>(type: T, n: number, pick: (i: number) => ArrayLike<number> | null): Data<List<T>> {
  const offsets = new Int32Array(n + 1);
  const valid = new Uint8Array((n + 7) >> 3);
  let nullCount = 0;
  for (let i = 0; i < n; i++) {
    const v = pick(i);
    if (v === null) nullCount++;
    else valid[i >> 3] |= 1 << (i & 7);
    offsets[i + 1] = offsets[i] + (v?.length ?? 0);
  }
  const values = type instanceof Float32 ? new Float32Array(offsets[n]) : new Int32Array(offsets[n]);
  for (let i = 0; i < n; i++) {
    const v = pick(i);
    if (v) values.set(v, offsets[i]);
  }
  const child = makeData({ type, length: offsets[n], data: values } as never) as unknown as Data<T>;
  return makeData({ type: listOf(type) as List<T>, length: n, nullCount, nullBitmap: nullCount ? valid : null, valueOffsets: offsets, child });
}

function int32Data(values: number[]): Data<Int32> {
  return makeData({ type: new Int32(), length: values.length, data: Int32Array.from(values) });
}

function float64Data(values: number[]): Data<Float64> {
  return makeData({ type: new Float64(), length: values.length, data: Float64Array.from(values) });
}

function recordBatch(schema: Schema, recs: StageRecord[]): RecordBatch {
  const n = recs.length;
  const full = (r: StageRecord) => r.kind !== 'stats';
  const stats = recs.map(statsOf);
  const children = [
    utf8Data(recs.map((r) => r.stage)),
    int32Data(recs.map((r) => r.layer)),
    int32Data(recs.map((r) => r.pos)),
    int32Data(recs.map((r) => r.token)),
    utf8Data(recs.map((r) => r.dtype)),
    listData(new Int32(), n, (i) => recs[i].shape),
    listData(new Float32(), n, (i) => (recs[i].dtype === 'f32' && full(recs[i]) ? recs[i].values : null)),
    listData(new Int32(), n, (i) => (recs[i].dtype === 'i32' && full(recs[i]) ? recs[i].values : null)),
    utf8Data(recs.map((r) => (full(r) ? 'full' : 'stats'))),
    float64Data(stats.map((s) => s.min)),
    float64Data(stats.map((s) => s.max)),
    float64Data(stats.map((s) => s.mean)),
    float64Data(stats.map((s) => s.rms)),
    int32Data(stats.map((s) => s.nan)),
    int32Data(stats.map((s) => s.inf)),
    utf8Data(stats.map((s) => s.hash)),
  ];
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children }));
}

// A batch is written automatically once this many values are pending, so a caller that never flushes
// still streams (and list offsets stay far below int32 range).
const AUTO_FLUSH_VALUES = 16 << 20;

export class DumpWriter {
  private pending: StageRecord[] = [];
  private pendingValues = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly tmp: string,
    private fd: number,
    private readonly schema: Schema,
    private readonly writer: RecordBatchFileWriter,
    private readonly sink: ChunkSink,
  ) {}

  static async open(file: string, meta: DumpMeta): Promise<DumpWriter> {
    const tmp = `${file}.tmp-${process.pid}`;
    let fd: number;
    try {
      fd = fs.openSync(tmp, 'w');
    } catch (e) {
      throw fileError(file, 'create the dump', e);
    }
    const schema = dumpSchema(meta);
    const sink = new ChunkSink();
    const writer = new RecordBatchFileWriter();
    writer.reset(sink, schema);
    const w = new DumpWriter(file, tmp, fd, schema, writer, sink);
    w.drain();
    return w;
  }

  write(rec: StageRecord): void {
    if (this.closed) throw new Error(`DumpWriter for ${this.path} is closed`);
    const n = rec.shape.reduce((a, b) => a * b, 1);
    const stored = rec.kind === 'stats' ? rec.stats?.n : rec.values.length;
    if (n !== stored) throw new Error(`${rec.stage} layer ${rec.layer} pos ${rec.pos}: shape [${rec.shape}] does not match ${stored} values`);
    if ((rec.dtype === 'f32') !== rec.values instanceof Float32Array) throw new Error(`${rec.stage}: dtype ${rec.dtype} does not match its value array`);
    this.pending.push(rec);
    this.pendingValues += rec.values.length + 16;
    if (this.pendingValues >= AUTO_FLUSH_VALUES) this.writeBatch();
  }

  /** Emits the pending records as one record batch. */
  async flush(): Promise<void> {
    this.writeBatch();
  }

  /** Writes the footer and atomically renames the temp file to its final name. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.writeBatch();
    this.writer.close();
    this.drain();
    this.closed = true;
    try {
      fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
      fs.renameSync(this.tmp, this.path);
    } catch (e) {
      fs.rmSync(this.tmp, { force: true });
      throw fileError(this.path, 'finish the dump', e);
    }
  }

  /** Drops everything: the temp file is removed and no file appears under the final name (synchronous). */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pending = [];
    try {
      fs.closeSync(this.fd);
    } finally {
      fs.rmSync(this.tmp, { force: true });
    }
  }

  private writeBatch(): void {
    if (this.pending.length === 0) return;
    this.writer.write(recordBatch(this.schema, this.pending));
    this.pending = [];
    this.pendingValues = 0;
    this.drain();
  }

  /** Writes what the Arrow writer produced; a full disk aborts the dump (no half file) and names it. */
  private drain(): void {
    try {
      for (const c of this.sink.chunks) {
        let off = 0;
        while (off < c.byteLength) off += fs.writeSync(this.fd, c, off);
      }
      this.sink.chunks = [];
    } catch (e) {
      void this.abort();
      throw fileError(this.path, 'write the dump', e);
    }
  }
}

const MAGIC = 'ARROW1';
// a ds4-diff batch holds at most ~16M values (64 MB, AUTO_FLUSH_VALUES); other writers get 2 GiB, the
// most the Arrow JS reader addresses with its int32 list offsets
const MAX_BATCH_BODY = 2 ** 31 - 1;
// generous bounds on the counts a damaged flatbuffer could claim (each is a loop in the reader)
const MAX_FIELDS = 64;
const MAX_CHILDREN = 4;
const MAX_KEYS = 64;
const MAX_NODES = 64;
const MAX_BUFFERS = 256;

/**
 * The structure of an Arrow IPC file, checked with bounded reads before the Arrow JS reader sees it:
 * that reader trusts the footer and each message header, and a damaged count or length there makes it
 * loop for hours or read gigabytes. Checked: both magics; the footer inside the file; the schema's
 * field counts; every record batch block inside the data section, in order, not overlapping; its
 * message a record batch whose body length is the block's, whose buffers lie inside the body and whose
 * column lengths are its row count; no dictionaries, no compression (ds4-diff writes neither).
 */
function checkIpcFile(file: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw badInput(`${file}: ${code === 'ENOENT' ? 'no such file' : `cannot open (${code})`}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw badInput(`${file}: not a regular file (${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : 'a device or special file'}); a dump is an Arrow IPC file`);
    const size = st.size;
    const at = (position: number, length: number): Buffer => {
      const b = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const n = fs.readSync(fd, b, done, length - done, position + done);
        if (n === 0) throw badInput(`${file}: corrupt Arrow dump (read past the end at ${position + done})`);
        done += n;
      }
      return b;
    };
    if (size < 12 + 8) throw badInput(`${file}: not an Arrow IPC file (only ${size} bytes)`);
    if (at(0, 6).toString('latin1') !== MAGIC) throw badInput(`${file}: not an Arrow IPC file (bad magic)`);
    if (at(size - 6, 6).toString('latin1') !== MAGIC) throw badInput(`${file}: truncated Arrow file (no footer; the writer did not finish)`);
    const footerLength = at(size - 10, 4).readInt32LE(0);
    const dataEnd = size - 10 - footerLength;
    if (footerLength <= 0 || dataEnd < 8) throw badInput(`${file}: corrupt Arrow dump (footer length ${footerLength} does not fit a ${size}-byte file)`);
    const footer = FbFooter.getRootAsFooter(new flatbuffers.ByteBuffer(new Uint8Array(at(dataEnd, footerLength))));
    const nodesPerField = checkFooterSchema(file, footer);
    if (footer.dictionariesLength() !== 0) throw badInput(`${file}: not a ds4-diff dump (it has dictionary batches)`);
    const n = footer.recordBatchesLength();
    if (n > dataEnd / 16) throw badInput(`${file}: corrupt Arrow dump (the footer lists ${n} record batches in ${dataEnd} bytes)`);
    let end = 8;
    for (let i = 0; i < n; i++) {
      const b = footer.recordBatches(i);
      const offset = Number(b?.offset() ?? -1), metaLength = b?.metaDataLength() ?? -1, bodyLength = Number(b?.bodyLength() ?? -1);
      if (!(offset >= end && metaLength >= 8 && bodyLength >= 0 && offset + metaLength + bodyLength <= dataEnd)) {
        throw badInput(`${file}: corrupt Arrow dump (record batch ${i} lies outside the data section or overlaps the one before)`);
      }
      if (bodyLength > MAX_BATCH_BODY) throw badInput(`${file}: record batch ${i} has a ${bodyLength}-byte body; batches over ${MAX_BATCH_BODY} bytes are not read (ds4-diff writes them under 100 MB)`);
      checkBatchMessage(file, i, at(offset, metaLength), bodyLength, nodesPerField);
      end = offset + metaLength + bodyLength;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Checks the footer's schema; returns how many column nodes each top-level field has (itself + its children). */
function checkFooterSchema(file: string, footer: FbFooter): number[] {
  const schema = footer.schema();
  if (!schema) throw badInput(`${file}: corrupt Arrow dump (the footer has no schema)`);
  const fields = schema.fieldsLength();
  if (fields > MAX_FIELDS || schema.customMetadataLength() > MAX_KEYS || schema.featuresLength() > MAX_KEYS) throw badInput(`${file}: corrupt Arrow dump (the schema claims ${fields} fields)`);
  for (let i = 0; i < fields; i++) {
    const f = schema.fields(i);
    if (!f || f.childrenLength() > MAX_CHILDREN || f.customMetadataLength() > MAX_KEYS) throw badInput(`${file}: corrupt Arrow dump (schema field ${i} is damaged)`);
    for (let j = 0; j < f.childrenLength(); j++) {
      const c = f.children(j);
      if (!c || c.childrenLength() !== 0 || c.customMetadataLength() > MAX_KEYS) throw badInput(`${file}: not a ds4-diff dump (schema field ${i} nests deeper than a list)`);
    }
  }
  return Array.from({ length: fields }, (_, i) => 1 + (schema.fields(i)?.childrenLength() ?? 0));
}

/** One record batch's message: a record batch whose stated lengths fit the block it sits in. */
function checkBatchMessage(file: string, i: number, meta: Buffer, bodyLength: number, nodesPerField: number[]): void {
  const bad = (why: string) => badInput(`${file}: corrupt Arrow dump (record batch ${i}: ${why})`);
  const continued = meta.readUInt32LE(0) === 0xffffffff;
  const length = continued ? meta.readInt32LE(4) : meta.readInt32LE(0);
  const start = continued ? 8 : 4;
  if (length <= 0 || start + length > meta.length) throw bad('damaged message header');
  const msg = FbMessage.getRootAsMessage(new flatbuffers.ByteBuffer(new Uint8Array(meta.subarray(start, start + length))));
  if (msg.headerType() !== MessageHeader.RecordBatch) throw bad('not a record batch message');
  if (Number(msg.bodyLength()) !== bodyLength) throw bad(`the message says ${msg.bodyLength()} body bytes, the footer ${bodyLength}`);
  if (msg.customMetadataLength() > MAX_KEYS) throw bad('damaged message metadata');
  const rb = msg.header(new FbRecordBatch()) as FbRecordBatch | null;
  if (!rb) throw bad('no record batch header');
  const rows = Number(rb.length());
  const nodes = rb.nodesLength(), buffers = rb.buffersLength();
  if (!(rows >= 0 && rows <= 2 ** 31 - 1) || nodes > MAX_NODES || buffers > MAX_BUFFERS || rb.variadicBufferCountsLength() > MAX_BUFFERS) throw bad(`damaged counts (${rows} rows, ${nodes} columns, ${buffers} buffers)`);
  if (rb.compression()) throw bad('compressed (ds4-diff dumps are uncompressed)');
  for (let k = 0; k < buffers; k++) {
    const buf = rb.buffers(k);
    const off = Number(buf?.offset() ?? -1), len = Number(buf?.length() ?? -1);
    if (!(off >= 0 && len >= 0 && off + len <= bodyLength)) throw bad(`buffer ${k} lies outside its body`);
  }
  if (nodes !== nodesPerField.reduce((a, b) => a + b, 0)) throw bad(`${nodes} column nodes for a schema of ${nodesPerField.length} columns`);
  for (let k = 0; k < nodes; k++) {
    const node = rb.nodes(k);
    const len = Number(node?.length() ?? -1), nulls = Number(node?.nullCount() ?? -1);
    if (!(len >= 0 && len <= 2 ** 31 - 1 && nulls >= 0 && nulls <= len)) throw bad(`column node ${k} has damaged lengths`);
  }
  // each column's top node holds one entry per row: the row count every column agrees on
  for (let f = 0, k = 0; f < nodesPerField.length; k += nodesPerField[f++]) {
    const len = Number(rb.nodes(k)?.length() ?? -1);
    if (len !== rows) throw bad(`column ${f} has ${len} rows, the batch ${rows}`);
  }
}

function parseMeta(file: string, md: Map<string, string>): DumpMeta {
  const get = (k: string) => {
    const v = md.get(k);
    if (v === undefined) throw badInput(`${file}: not a ds4-diff dump (schema metadata '${k}' missing)`);
    return v;
  };
  const formatVersion = Number(get(META.formatVersion));
  if (!Number.isInteger(formatVersion) || formatVersion < 1 || formatVersion > DUMP_FORMAT_VERSION) {
    throw badInput(`${file}: dump format version ${get(META.formatVersion)} is not supported (this ds4-diff reads up to ${DUMP_FORMAT_VERSION})`);
  }
  try {
    return {
      formatVersion,
      modelFingerprint: get(META.fingerprint),
      promptTokens: JSON.parse(get(META.promptTokens)) as number[],
      producer: JSON.parse(get(META.producer)) as DumpMeta['producer'],
      side: get(META.side),
      createdAt: md.get(META.createdAt),
      capture: formatVersion >= 2 ? captureMeta(file, JSON.parse(get(META.capture))) : { mode: 'full' },
    };
  } catch (e) {
    if (e instanceof SyntaxError) throw badInput(`${file}: corrupt schema metadata (${e.message})`);
    throw e;
  }
}

function captureMeta(file: string, v: unknown): CaptureMeta {
  const c = v as CaptureMeta;
  if (typeof c !== 'object' || c === null || (c.mode !== 'full' && c.mode !== 'stats') || (c.full !== undefined && (!Array.isArray(c.full) || c.full.some((x) => typeof x !== 'string')))) {
    throw badInput(`${file}: schema metadata '${META.capture}' must be {mode: full|stats, full?: [...]}`);
  }
  return c;
}

type ColumnType = { name: string; want: string; ok: (t: DataType) => boolean };

/** Each column the reader takes, with the Arrow type the format gives it (pyarrow may not widen them). */
const COLUMNS: ReadonlyArray<ColumnType> = [
  { name: 'stage', want: 'utf8', ok: (t) => DataType.isUtf8(t) },
  { name: 'layer', want: 'int32', ok: (t) => isInt32(t) },
  { name: 'pos', want: 'int32', ok: (t) => isInt32(t) },
  { name: 'token', want: 'int32', ok: (t) => isInt32(t) },
  { name: 'dtype', want: 'utf8', ok: (t) => DataType.isUtf8(t) },
  { name: 'shape', want: 'list<int32>', ok: (t) => DataType.isList(t) && isInt32(t.children[0].type) },
  { name: 'values_f32', want: 'list<float32>', ok: (t) => DataType.isList(t) && DataType.isFloat(t.children[0].type) && t.children[0].type.precision === Precision.SINGLE },
  { name: 'values_i32', want: 'list<int32>', ok: (t) => DataType.isList(t) && isInt32(t.children[0].type) },
];

/** The statistics columns of format version 2. */
const STAT_COLUMNS: ReadonlyArray<ColumnType> = [
  { name: 'kind', want: 'utf8', ok: (t) => DataType.isUtf8(t) },
  ...['stat_min', 'stat_max', 'stat_mean', 'stat_rms'].map((name) => ({ name, want: 'float64', ok: (t: DataType) => DataType.isFloat(t) && t.precision === Precision.DOUBLE })),
  ...['stat_nan', 'stat_inf'].map((name) => ({ name, want: 'int32', ok: isInt32 })),
  { name: 'stat_hash', want: 'utf8', ok: (t) => DataType.isUtf8(t) },
];

function isInt32(t: DataType): boolean {
  return DataType.isInt(t) && t.bitWidth === 32 && t.isSigned;
}

function checkColumns(file: string, schema: Schema, formatVersion: number): void {
  for (const c of [...COLUMNS, ...(formatVersion >= 2 ? STAT_COLUMNS : [])]) {
    const f = schema.fields.find((x) => x.name === c.name);
    if (!f) throw badInput(`${file}: not a ds4-diff dump (column '${c.name}' missing)`);
    if (!c.ok(f.type)) throw badInput(`${file}: column '${c.name}' is ${String(f.type)}, a ds4-diff dump has ${c.want}`);
  }
}

/** Values of list row `i` (a copy, so records do not pin the whole batch buffer); the list's offsets must lie inside its values. */
function listRow(file: string, vec: Vector, i: number, what: string): Float32Array | Int32Array | null {
  const d = vec.data[0];
  if (!vec.isValid(i)) return null;
  const offs = d.valueOffsets as Int32Array;
  const child = d.children[0];
  const vals = child.values as Float32Array | Int32Array;
  const at = d.offset + i;
  const a = child.offset + offs[at], b = child.offset + offs[at + 1];
  if (!(a >= 0 && a <= b && b <= vals.length)) throw badInput(`${file}: corrupt Arrow dump (row ${i}: ${what} offsets ${offs[at]}..${offs[at + 1]} outside its ${vals.length} values)`);
  return vals.slice(a, b);
}

/** What the rows read so far established: keys seen, and each (stage, layer)'s shape. */
interface RowCheck {
  keys: Set<string>;
  shapes: Map<string, string>;
  row: number;
  formatVersion: number;
  /** a facts side (`*-noise`, `*-ties`, reference/facts.ts): its rows are facts about a stage's row (a tie
   *  gap of an i32 choice, [2, n] distances), not the stage's values, so the registry's dtype and shape do not apply */
  facts: boolean;
}

/** Is a side one of the reference's facts (its rounding noise and approximation twin, its decisions)? */
export const isFactsSide = (side: string): boolean => /-(noise|ties)$/.test(side);

// The registry's shapes are functions of the config and a per-position count n: on a probe config
// (every dim 3), a stage whose shape changes with n is count-dependent (raw_cache rows, indexer
// candidates); every other stage has one shape at all positions of a layer.
const PROBE = new Proxy({}, { get: (_t, k) => (k === 'compressRatios' || k === 'swigluClamp' ? [] : 3) }) as Ds4Config;
const countDependent = (name: string): boolean => {
  const def = resolveStage(name);
  return def !== undefined && def.shape(PROBE, { n: 1 }).join() !== def.shape(PROBE, { n: 2 }).join();
};

/** The statistics columns of row i (version 2), checked. */
function rowStatsAt(file: string, batch: RecordBatch, i: number, n: number, what: string): RowStats {
  const num = (c: string) => batch.getChild(c)!.get(i) as number;
  const s: RowStats = { n, min: num('stat_min'), max: num('stat_max'), mean: num('stat_mean'), rms: num('stat_rms'), nan: num('stat_nan'), inf: num('stat_inf'), hash: batch.getChild('stat_hash')!.get(i) as string };
  if (!/^[0-9a-f]{16}$/.test(s.hash) || !(s.nan >= 0 && s.inf >= 0 && s.nan + s.inf <= n)) throw badInput(`${file}: row ${i} (${what}) has damaged statistics`);
  return s;
}

function* batchRecords(file: string, batch: RecordBatch, seen: RowCheck): Generator<StageRecord> {
  // record batches from the IPC reader have one chunk per column
  const col = (n: string) => batch.getChild(n)!;
  const stage = col('stage'), layer = col('layer'), pos = col('pos'), token = col('token'), dtype = col('dtype');
  const shape = col('shape'), f32 = col('values_f32'), i32 = col('values_i32');
  const kind = seen.formatVersion >= 2 ? col('kind') : undefined;
  for (let i = 0; i < batch.numRows; i++, seen.row++) {
    const row = seen.row;
    const st = stage.get(i) as string | null;
    const dt = dtype.get(i) as string | null;
    const ly = layer.get(i) as number | null, ps = pos.get(i) as number | null, tk = token.get(i) as number | null;
    if (typeof st !== 'string' || st === '') throw badInput(`${file}: row ${row} has no stage name`);
    if (dt !== 'f32' && dt !== 'i32') throw badInput(`${file}: row ${row} (${st}) has unknown dtype '${dt}'`);
    if (ly === null || ly < 0 || ps === null || ps < 0 || tk === null || tk < -1) throw badInput(`${file}: row ${row} (${st}) has layer ${ly}, pos ${ps}, token ${tk} (layer and pos >= 0, token >= -1)`);
    const k = (kind?.get(i) as string | null | undefined) ?? 'full';
    if (k !== 'full' && k !== 'stats') throw badInput(`${file}: row ${row} (${st}) has unknown kind '${k}'`);
    const def = seen.facts ? undefined : resolveStage(st);
    if (def && def.dtype !== dt) throw badInput(`${file}: row ${row} (${st} layer ${ly} pos ${ps}) is ${dt}, but stage ${def.name} is ${def.dtype}`);
    const shp = Array.from(listRow(file, shape, i, 'shape') ?? []);
    const n = shp.reduce((a, b) => a * b, 1);
    if (shp.some((d) => d < 0)) throw badInput(`${file}: row ${row} (${st}) has shape [${shp}]`);
    const key = `${st}\u0000${ly}\u0000${ps}`;
    if (seen.keys.has(key)) throw badInput(`${file}: row ${row} repeats ${st} layer ${ly} pos ${ps} (one row per stage, layer and position)`);
    seen.keys.add(key);
    // a registry stage's shape is the same at every position of a layer (its shape of the config);
    // an unknown name (kept from an import) may be anything
    if (def && !countDependent(st)) {
      const sk = `${st}\u0000${ly}`, was = seen.shapes.get(sk), now = shp.join('x');
      if (was === undefined) seen.shapes.set(sk, now);
      else if (was !== now) throw badInput(`${file}: row ${row} (${st} layer ${ly} pos ${ps}) has shape [${shp}], other positions of the layer [${was.split('x')}]`);
    }
    const base = { stage: st, layer: ly, pos: ps, token: tk, dtype: dt, shape: shp } as const;
    if (k === 'stats') {
      yield { ...base, values: dt === 'f32' ? new Float32Array(0) : new Int32Array(0), kind: 'stats', stats: rowStatsAt(file, batch, i, n, st) };
      continue;
    }
    const values = dt === 'f32' ? listRow(file, f32, i, 'values_f32') : listRow(file, i32, i, 'values_i32');
    if (!values) throw badInput(`${file}: row ${row} (${st}) has no values_${dt}`);
    if (n !== values.length) throw badInput(`${file}: row ${row} (${st}) shape [${shp}] does not match ${values.length} values`);
    yield { ...base, values, ...(kind ? { stats: rowStatsAt(file, batch, i, n, st) } : {}) };
  }
}

async function openReader(file: string) {
  checkIpcFile(file);
  const handle = await fs.promises.open(file, 'r');
  try {
    const reader = await RecordBatchReader.from(handle);
    await reader.open();
    const meta = parseMeta(file, reader.schema.metadata);
    checkColumns(file, reader.schema, meta.formatVersion);
    return { reader, meta };
  } catch (e) {
    await handle.close();
    throw wrapArrowError(file, e);
  }
}

function wrapArrowError(file: string, e: unknown): Error {
  if (e instanceof Error && e.name === 'Ds4DiffError') return e;
  return badInput(`${file}: corrupt Arrow dump (${(e as Error)?.message ?? String(e)})`);
}

/** The dump's metadata only (reads the schema, not the batches). */
export async function readDumpMeta(file: string): Promise<DumpMeta> {
  const { reader, meta } = await openReader(file);
  await reader.cancel();
  return meta;
}

/** Streams the records of a dump, one record batch in memory at a time. */
export async function* iterateDump(file: string): AsyncGenerator<StageRecord> {
  const { reader, meta } = await openReader(file);
  const seen: RowCheck = { keys: new Set(), shapes: new Map(), row: 0, formatVersion: meta.formatVersion, facts: isFactsSide(meta.side) };
  try {
    while (true) {
      let next: IteratorResult<RecordBatch>;
      try {
        next = await reader.next();
      } catch (e) {
        throw wrapArrowError(file, e);
      }
      if (next.done) break;
      yield* batchRecords(file, next.value, seen);
    }
  } finally {
    await reader.cancel();
  }
}

export async function readDump(file: string): Promise<{ meta: DumpMeta; records: StageRecord[] }> {
  const meta = await readDumpMeta(file);
  const records: StageRecord[] = [];
  for await (const r of iterateDump(file)) records.push(r);
  return { meta, records };
}

/**
 * Rewrites a dump with some of its rows replaced by full captures of the same rows (a stats capture's second
 * pass, ascend/pipeline.ts), its capture metadata set to `capture`. A replacement whose values do not hash to
 * what the first pass captured of it (`firstPass`: diff/sink.ts capturedRecord) is still written, and named in
 * `changed` (the producer is not deterministic: say so). Written like any dump: to a temp name, renamed when complete.
 */
export async function replaceRows(file: string, rows: Map<string, StageRecord>, capture: CaptureMeta, firstPass: (full: StageRecord) => StageRecord): Promise<{ replaced: number; changed: string[] }> {
  const meta = await readDumpMeta(file);
  const w = await DumpWriter.open(file, { ...meta, capture });
  // a signal mid-rewrite drops the temp file; the dump as it was stays
  const unhook = onCancel(() => void w.abort());
  let replaced = 0;
  const changed: string[] = [];
  try {
    for await (const r of iterateDump(file)) {
      const full = rows.get(recordKey(r));
      if (!full) {
        w.write(r);
        continue;
      }
      if (statsOf(r).hash !== statsOf(firstPass(full)).hash) changed.push(`${r.stage} layer ${r.layer} pos ${r.pos}`);
      w.write({ ...full, kind: 'full', stats: undefined });
      replaced++;
    }
  } catch (e) {
    await w.abort();
    throw e;
  } finally {
    unhook();
  }
  await w.close();
  return { replaced, changed };
}

/** The default file name of a side in a run directory. */
export function sideFileName(side: string): string {
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(side)) throw badInput(`invalid dump side name '${side}'`);
  return `${side}.arrow`;
}
