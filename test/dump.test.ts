// The Arrow dump format and the run manifest: schema column by column, round trips, streaming batches,
// atomic writes and the refusals (corrupt/truncated dump, incomplete manifest).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  DataType, Field, Float32, Float64, Int32, Int64, List, RecordBatch, RecordBatchReader, Schema, Table, Type, Utf8, Vector,
  tableFromArrays, tableFromIPC, tableToIPC, vectorFromArray,
} from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { DUMP_FORMAT_VERSION, DumpWriter, iterateDump, readDump, readDumpMeta, replaceRows, type DumpMeta } from '../diff/dump.ts';
import { fileInRun, readManifest, writeManifest, type RunManifest } from '../diff/manifest.ts';
import { rowStats, statsRecord } from '../diff/stats.ts';
import type { StageRecord } from '../model/stages.ts';
import { Ds4DiffError } from '../model/errors.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-dump-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const META: DumpMeta = { formatVersion: DUMP_FORMAT_VERSION, modelFingerprint: 'f00d', promptTokens: [0, 42, 7], producer: { backend: 'sim', precision: 'ds4', kernelMath: 'exact', options: { window: 8 }, version: '0.1.0' }, side: 'device', createdAt: '2026-01-02T03:04:05.000Z', capture: { mode: 'full' } };
const COLUMNS = ['stage', 'layer', 'pos', 'token', 'dtype', 'shape', 'values_f32', 'values_i32'];

const RECS: StageRecord[] = [
  { stage: 'attn_norm', layer: 0, pos: 0, token: 0, dtype: 'f32', shape: [2, 3], values: Float32Array.of(1, -0, NaN, Infinity, 2 ** -149, -3.5) },
  { stage: 'router_topk', layer: 0, pos: 0, token: 0, dtype: 'i32', shape: [2], values: Int32Array.of(5, -1) },
  { stage: 'logits', layer: 6, pos: 2, token: 7, dtype: 'f32', shape: [4], values: Float32Array.of(0.25, 0.5, 0.75, 1) },
];

async function writeDump(file: string, recs: StageRecord[], flushEvery = 1): Promise<void> {
  const w = await DumpWriter.open(file, META);
  recs.forEach((r, i) => {
    w.write(r);
    if ((i + 1) % flushEvery === 0) void w.flush();
  });
  await w.close();
}

async function expectBadInput(p: Promise<unknown>, re: RegExp): Promise<void> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(Ds4DiffError);
  expect((e as Ds4DiffError).exitCode).toBe(3);
  expect((e as Error).message).toMatch(re);
}

describe('Arrow dump', () => {
  it('has the documented schema, column by column, readable without our code', async () => {
    const file = path.join(dir, 'schema.arrow');
    await writeDump(file, RECS);
    const t = tableFromIPC(fs.readFileSync(file));
    const fields = t.schema.fields.map((f) => [f.name, Type[f.type.typeId]]);
    expect(fields).toEqual([
      ['stage', 'Utf8'], ['layer', 'Int'], ['pos', 'Int'], ['token', 'Int'], ['dtype', 'Utf8'], ['shape', 'List'], ['values_f32', 'List'], ['values_i32', 'List'],
      ['kind', 'Utf8'], ['stat_min', 'Float'], ['stat_max', 'Float'], ['stat_mean', 'Float'], ['stat_rms', 'Float'], ['stat_nan', 'Int'], ['stat_inf', 'Int'], ['stat_hash', 'Utf8'],
    ]);
    for (const n of ['stat_min', 'stat_max', 'stat_mean', 'stat_rms']) expect(t.schema.fields.find((f) => f.name === n)!.type.toString()).toBe('Float64');
    for (const n of ['layer', 'pos', 'token']) expect(t.schema.fields.find((f) => f.name === n)!.type.toString()).toBe('Int32');
    expect(t.schema.fields.find((f) => f.name === 'values_f32')!.type.toString()).toBe('List<Float32>');
    expect(t.schema.fields.find((f) => f.name === 'values_i32')!.type.toString()).toBe('List<Int32>');
    expect(t.schema.fields.find((f) => f.name === 'shape')!.type.toString()).toBe('List<Int32>');
    expect(t.numRows).toBe(3);
    expect([...t.getChild('stage')!]).toEqual(['attn_norm', 'router_topk', 'logits']);
    expect([...t.getChild('layer')!]).toEqual([0, 0, 6]);
    expect([...t.getChild('pos')!]).toEqual([0, 0, 2]);
    expect([...t.getChild('token')!]).toEqual([0, 0, 7]);
    expect([...t.getChild('dtype')!]).toEqual(['f32', 'i32', 'f32']);
    expect([...t.getChild('shape')!.get(0)!]).toEqual([2, 3]);
    // f32 values are null on the i32 row and vice versa
    expect(t.getChild('values_f32')!.isValid(1)).toBe(false);
    expect(t.getChild('values_i32')!.isValid(0)).toBe(false);
    expect([...t.getChild('values_i32')!.get(1)!]).toEqual([5, -1]);
    expect([...t.getChild('values_f32')!.get(2)!]).toEqual([0.25, 0.5, 0.75, 1]);
    // every row carries its statistics: over the finite values, NaN and ±Inf counted apart
    expect([...t.getChild('kind')!]).toEqual(['full', 'full', 'full']);
    expect([t.getChild('stat_min')!.get(2), t.getChild('stat_max')!.get(2), t.getChild('stat_mean')!.get(2)]).toEqual([0.25, 1, 0.625]);
    expect(t.getChild('stat_rms')!.get(2)).toBeCloseTo(Math.sqrt((0.0625 + 0.25 + 0.5625 + 1) / 4), 15);
    expect([t.getChild('stat_nan')!.get(0), t.getChild('stat_inf')!.get(0), t.getChild('stat_min')!.get(0), t.getChild('stat_max')!.get(0)]).toEqual([1, 1, -3.5, 1]);
    expect(t.getChild('stat_hash')!.get(0)).toMatch(/^[0-9a-f]{16}$/);
    const md = t.schema.metadata;
    expect(md.get('ds4diff.format_version')).toBe(String(DUMP_FORMAT_VERSION));
    expect(JSON.parse(md.get('ds4diff.capture')!)).toEqual({ mode: 'full' });
    expect(md.get('ds4diff.model_fingerprint')).toBe('f00d');
    expect(JSON.parse(md.get('ds4diff.prompt_tokens')!)).toEqual([0, 42, 7]);
    expect(JSON.parse(md.get('ds4diff.producer')!)).toEqual(META.producer);
    expect(md.get('ds4diff.side')).toBe('device');
    expect(md.get('ds4diff.created_at')).toBe('2026-01-02T03:04:05.000Z');
  });

  it('round-trips values bit-exactly (NaN, -0, denormals) and meta', async () => {
    const file = path.join(dir, 'rt.arrow');
    await writeDump(file, RECS);
    const { meta, records } = await readDump(file);
    expect(meta).toEqual(META);
    expect(records.length).toBe(3);
    const a = records[0].values as Float32Array;
    expect(a).toBeInstanceOf(Float32Array);
    expect(new Uint32Array(a.buffer, a.byteOffset, a.length)).toEqual(new Uint32Array((RECS[0].values as Float32Array).buffer));
    expect(Object.is(a[1], -0)).toBe(true);
    const { stats: s1, ...r1 } = records[1];
    expect(r1).toEqual(RECS[1]);
    expect(s1).toEqual(rowStats(RECS[1].values));
    expect({ ...records[2], stats: undefined }).toEqual({ ...RECS[2], stats: undefined });
  });

  it('a stats capture keeps a row\'s shape and statistics, not its values; a full row hashes to the same statistics', async () => {
    const file = path.join(dir, 'stats.arrow');
    const big: StageRecord = { stage: 'q_rope', layer: 0, pos: 1, token: 42, dtype: 'f32', shape: [4, 64], values: Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)) };
    const w = await DumpWriter.open(file, { ...META, capture: { mode: 'stats', full: ['always: logits'] } });
    w.write(statsRecord(big));
    w.write(RECS[2]);
    await w.close();
    const t = tableFromIPC(fs.readFileSync(file));
    expect([...t.getChild('kind')!]).toEqual(['stats', 'full']);
    expect(t.getChild('values_f32')!.isValid(0)).toBe(false);
    expect([...t.getChild('shape')!.get(0)!]).toEqual([4, 64]);
    const { meta, records } = await readDump(file);
    expect(meta.capture).toEqual({ mode: 'stats', full: ['always: logits'] });
    expect(records[0]).toMatchObject({ stage: 'q_rope', kind: 'stats', shape: [4, 64], stats: rowStats(big.values) });
    expect(records[0].values.length).toBe(0);
    // the second pass writes the full row in place of its statistics, and says when it is not the same row
    const changed = { ...big, values: big.values.map((v, i) => (i === 7 ? v + 1e-3 : v)) };
    expect(await replaceRows(file, new Map([['q_rope/0/1', big]]), { mode: 'stats', full: ['region'] }, statsRecord)).toEqual({ replaced: 1, changed: [] });
    const after = await readDump(file);
    expect(after.meta.capture).toEqual({ mode: 'stats', full: ['region'] });
    expect(after.records[0].kind).toBeUndefined();
    expect(after.records[0].values).toEqual(big.values);
    // the statistics of a full row are those of a stats capture of it
    expect(after.records[0].stats).toEqual(records[0].stats);
    const rewritten = path.join(dir, 'stats2.arrow');
    const w2 = await DumpWriter.open(rewritten, META);
    w2.write(statsRecord(big));
    await w2.close();
    expect((await replaceRows(rewritten, new Map([['q_rope/0/1', changed]]), { mode: 'stats' }, statsRecord)).changed).toEqual(['q_rope layer 0 pos 1']);
  });

  it('reads version 1 dumps (no kind and statistics columns): every row full', async () => {
    const file = path.join(dir, 'v2.arrow');
    await writeDump(file, RECS);
    const t = tableFromIPC(fs.readFileSync(file));
    const v1 = t.select(COLUMNS);
    v1.schema.metadata.set('ds4diff.format_version', '1');
    v1.schema.metadata.delete('ds4diff.capture');
    const old = path.join(dir, 'v1.arrow');
    fs.writeFileSync(old, tableToIPC(v1, 'file'));
    const { meta, records } = await readDump(old);
    expect(meta).toMatchObject({ formatVersion: 1, capture: { mode: 'full' } });
    expect(records.map((r) => [r.stage, r.kind, r.stats])).toEqual([['attn_norm', undefined, undefined], ['router_topk', undefined, undefined], ['logits', undefined, undefined]]);
    expect(records[2].values).toEqual(RECS[2].values);
  });

  it('writes one record batch per flush and streams them back', async () => {
    const file = path.join(dir, 'batches.arrow');
    const w = await DumpWriter.open(file, META);
    w.write(RECS[0]);
    await w.flush();
    w.write(RECS[1]);
    w.write(RECS[2]);
    await w.flush();
    await w.flush(); // nothing pending: no empty batch
    await w.close();
    expect(tableFromIPC(fs.readFileSync(file)).batches.length).toBe(2);
    const stages: string[] = [];
    for await (const r of iterateDump(file)) stages.push(r.stage);
    expect(stages).toEqual(['attn_norm', 'router_topk', 'logits']);
  });

  it('is written atomically: no final file until close, abort leaves nothing', async () => {
    const file = path.join(dir, 'atomic.arrow');
    const w = await DumpWriter.open(file, META);
    w.write(RECS[0]);
    await w.flush();
    expect(fs.existsSync(file)).toBe(false);
    await w.abort();
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('atomic'))).toEqual([]);
  });

  it('refuses records whose shape does not match their values', async () => {
    const w = await DumpWriter.open(path.join(dir, 'bad.arrow'), META);
    expect(() => w.write({ ...RECS[0], shape: [5] })).toThrow(/shape/);
    await w.abort();
  });

  it('corrupt, truncated or foreign Arrow files are bad input naming the file', async () => {
    const good = path.join(dir, 'good.arrow');
    await writeDump(good, RECS);
    const bytes = fs.readFileSync(good);
    const truncated = path.join(dir, 'truncated.arrow');
    fs.writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await expectBadInput(readDump(truncated), /truncated\.arrow: truncated/);
    const garbage = path.join(dir, 'garbage.arrow');
    fs.writeFileSync(garbage, Buffer.from('this is not arrow at all, just text'));
    await expectBadInput(readDump(garbage), /garbage\.arrow: not an Arrow IPC file/);
    const mangled = path.join(dir, 'mangled.arrow');
    const m = Buffer.from(bytes);
    m.fill(0xff, 8, 200); // schema message destroyed, magic intact
    fs.writeFileSync(mangled, m);
    await expectBadInput(readDump(mangled), /mangled\.arrow/);
    const foreign = path.join(dir, 'foreign.arrow');
    fs.writeFileSync(foreign, tableToIPC(tableFromArrays({ x: Float32Array.of(1, 2) }), 'file'));
    await expectBadInput(readDumpMeta(foreign), /foreign\.arrow: not a ds4-diff dump/);
    await expectBadInput(readDump(path.join(dir, 'missing.arrow')), /missing\.arrow: no such file/);
  });
});

describe('Arrow dump: the reader validates before it trusts', () => {
  /** A dump whose columns are written with other Arrow types (as another writer or pyarrow may). */
  function foreignTyped(file: string, override: Record<string, DataType>): void {
    const cols: Record<string, { type: DataType; values: unknown[] }> = {
      stage: { type: new Utf8(), values: ['attn_norm'] },
      layer: { type: new Int32(), values: [0] },
      pos: { type: new Int32(), values: [0] },
      token: { type: new Int32(), values: [0] },
      dtype: { type: new Utf8(), values: ['f32'] },
      shape: { type: new List(new Field('item', new Int32(), true)), values: [[2]] },
      values_f32: { type: new List(new Field('item', new Float32(), true)), values: [[1, 2]] },
      values_i32: { type: new List(new Field('item', new Int32(), true)), values: [null] },
    };
    const vectors: Record<string, Vector> = {};
    for (const [k, c] of Object.entries(cols)) {
      const type = override[k] ?? c.type;
      const values = DataType.isInt(type) && type.bitWidth === 64 ? c.values.map((v) => BigInt(v as number)) : c.values;
      vectors[k] = vectorFromArray(values, type);
    }
    const t = new Table(vectors);
    const md = new Map([['ds4diff.format_version', '1'], ['ds4diff.model_fingerprint', 'f00d'], ['ds4diff.prompt_tokens', '[0]'], ['ds4diff.producer', '{"backend":"x","version":"0"}'], ['ds4diff.side', 'device']]);
    fs.writeFileSync(file, tableToIPC(new Table(new Schema(t.schema.fields, md), t.batches.map((b) => new RecordBatch(new Schema(t.schema.fields, md), b.data))), 'file'));
  }

  it('column types are checked one by one (list<float64> values, BigInt columns): one line naming the column', async () => {
    const f = path.join(dir, 'typed.arrow');
    foreignTyped(f, { values_f32: new List(new Field('item', new Float64(), true)) });
    await expectBadInput(readDump(f), /typed\.arrow: column 'values_f32' is List<Float64>, a ds4-diff dump has list<float32>/);
    foreignTyped(f, { layer: new Int64() });
    await expectBadInput(readDump(f), /typed\.arrow: column 'layer' is Int64, a ds4-diff dump has int32/);
    foreignTyped(f, {});
    expect((await readDump(f)).records).toHaveLength(1);
  });

  it('a damaged footer or message header is refused in bounded time, never trusted', async () => {
    const good = path.join(dir, 'hdr.arrow');
    await writeDump(good, RECS, 3);
    const bytes = fs.readFileSync(good);
    // the first record batch's message: its body length gets a high byte (the reader would read gigabytes)
    const firstMeta = 8 + 8;
    const body = Buffer.from(bytes);
    const flatbuf = body.subarray(firstMeta, firstMeta + body.readInt32LE(12));
    const at = flatbuf.indexOf(Buffer.from(new BigUint64Array([BigInt((await footerBlocks(good))[0].bodyLength)]).buffer));
    expect(at).toBeGreaterThan(0);
    flatbuf[at + 3] = 0xa2;
    const f = path.join(dir, 'hdr-bad.arrow');
    fs.writeFileSync(f, body);
    await expectBadInput(readDump(f), /hdr-bad\.arrow: corrupt Arrow dump \(record batch 0: the message says \d+ body bytes, the footer \d+\)/);
    // the footer's length points before the start of the file
    const footer = Buffer.from(bytes);
    footer.writeInt32LE(bytes.length, bytes.length - 10);
    fs.writeFileSync(f, footer);
    await expectBadInput(readDump(f), /corrupt Arrow dump \(footer length \d+ does not fit/);
  });

  it('rows: one per stage, layer and pos; the registry\'s dtype; one shape per stage and layer; offsets inside their values', async () => {
    const f = path.join(dir, 'rows.arrow');
    await writeDump(f, [RECS[0], { ...RECS[0] }]);
    await expectBadInput(readDump(f), /rows\.arrow: row 1 repeats attn_norm layer 0 pos 0/);
    await writeDump(f, [{ ...RECS[1], dtype: 'f32', values: Float32Array.of(5, 1) }]);
    await expectBadInput(readDump(f), /rows\.arrow: row 0 \(router_topk layer 0 pos 0\) is f32, but stage router_topk is i32/);
    await writeDump(f, [RECS[0], { ...RECS[0], pos: 1, shape: [3, 2] }]);
    await expectBadInput(readDump(f), /row 1 \(attn_norm layer 0 pos 1\) has shape \[3,2\], other positions of the layer \[2,3\]/);
    // raw_cache grows with the position: its shape may differ
    await writeDump(f, [{ ...RECS[0], stage: 'raw_cache', shape: [1, 6] }, { ...RECS[0], stage: 'raw_cache', pos: 1, shape: [2, 3] }]);
    expect((await readDump(f)).records).toHaveLength(2);
  });
});

/** The footer's record batch blocks of an Arrow file. */
async function footerBlocks(file: string): Promise<Array<{ offset: number; bodyLength: number }>> {
  const r = await RecordBatchReader.from(await fs.promises.open(file, 'r'));
  await r.open();
  const footer = (r as unknown as { footer: { numRecordBatches: number; getRecordBatch(i: number): { offset: number; bodyLength: number } } }).footer;
  const out = Array.from({ length: footer.numRecordBatches }, (_, i) => footer.getRecordBatch(i));
  await r.cancel();
  return out;
}

describe('run manifest', () => {
  const manifest: RunManifest = {
    formatVersion: 1, complete: true, createdAt: '2026-01-01T00:00:00Z', model: { path: '/m/tiny.gguf', fingerprint: 'f00d' },
    prompt: 'Hello', promptTokens: [0, 42], layers: { last: 0, all: false }, backend: 'sim', options: {}, files: { reference: 'reference.arrow' },
    noHostFallback: true, fallbackLedger: [],
  };

  it('round-trips and is written atomically', () => {
    const run = path.join(dir, 'run1');
    writeManifest(run, manifest);
    expect(readManifest(run)).toEqual(manifest);
    expect(fs.readdirSync(run)).toEqual(['manifest.json']);
  });

  it('an incomplete run is refused with exit 3', () => {
    const run = path.join(dir, 'run2');
    writeManifest(run, { ...manifest, complete: false });
    expect(() => readManifest(run)).toThrow(/incomplete/);
    try {
      readManifest(run);
    } catch (e) {
      expect((e as Ds4DiffError).exitCode).toBe(3);
    }
    expect(() => readManifest(path.join(dir, 'nowhere'))).toThrow(/manifest\.json: no such file/);
  });

  it('file names in a manifest never escape the run directory', () => {
    expect(fileInRun('/r', 'device.arrow')).toBe(path.join('/r', 'device.arrow'));
    expect(() => fileInRun('/r', '../etc/passwd')).toThrow(/not a plain file name/);
    expect(() => fileInRun('/r', '..')).toThrow(/not a plain file name/);
  });
});
