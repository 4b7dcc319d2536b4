// GGUF writer/reader: round trip, byte sizes from the block definitions, big offsets, and bad input.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeGguf, type MetaEntry, type TensorSpec } from '../model/gguf-writer.ts';
import { openGguf, readRows, readTensor, tensorInfo } from '../model/gguf.ts';
import { GGMLType } from '../model/quant/types.ts';
import { Ds4DiffError } from '../model/errors.ts';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-gguf-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

const bytes = (n: number, salt: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + salt) & 0xff);

const META: MetaEntry[] = [
  { key: 'general.architecture', type: 'string', value: 'deepseek4' },
  { key: 't.u32', type: 'u32', value: 4000000000 },
  { key: 't.i32', type: 'i32', value: -7 },
  { key: 't.f32', type: 'f32', value: 1.5 },
  { key: 't.f64', type: 'f64', value: 1e-6 },
  { key: 't.u64', type: 'u64', value: 2 ** 40 },
  { key: 't.bool', type: 'bool', value: true },
  { key: 't.arr_u32', type: 'arr_u32', value: [0, 0, 4, 128] },
  { key: 't.arr_i32', type: 'arr_i32', value: [-1, 2] },
  { key: 't.arr_f32', type: 'arr_f32', value: [10, 0.25] },
  { key: 't.arr_string', type: 'arr_string', value: ['<｜User｜>', 'Ġa', ''] },
];

// Byte sizes worked out by hand from the ggml block structs (see model/quant/types.ts comments).
const TENSORS: Array<{ name: string; type: GGMLType; dims: number[]; nbytes: number }> = [
  { name: 'f32', type: GGMLType.F32, dims: [3, 2], nbytes: 24 },
  { name: 'f16', type: GGMLType.F16, dims: [5], nbytes: 10 },
  { name: 'bf16', type: GGMLType.BF16, dims: [4, 1], nbytes: 8 },
  { name: 'i32', type: GGMLType.I32, dims: [6, 3], nbytes: 72 },
  { name: 'q8_0', type: GGMLType.Q8_0, dims: [64, 3], nbytes: 2 * 34 * 3 },
  { name: 'q8_k', type: GGMLType.Q8_K, dims: [256, 1], nbytes: 4 + 256 + 32 },
  { name: 'q2_k', type: GGMLType.Q2_K, dims: [512, 1], nbytes: 2 * 84 },
  { name: 'q4_k', type: GGMLType.Q4_K, dims: [256, 2], nbytes: 2 * 144 },
  { name: 'blk.0.iq2', type: GGMLType.IQ2_XXS, dims: [256, 2, 3], nbytes: 6 * 66 },
];

function writeSample(file: string): TensorSpec[] {
  const tensors: TensorSpec[] = TENSORS.map((t, i) => ({ name: t.name, type: t.type, dims: t.dims, data: bytes(t.nbytes, i) }));
  writeGguf(file, { metadata: META, tensors });
  return tensors;
}

async function expectBadInput(file: string, re: RegExp) {
  const err = await openGguf(file).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(Ds4DiffError);
  const e = err as Ds4DiffError;
  expect(e.exitCode).toBe(3);
  expect(e.message).toContain(file);
  expect(e.message).toMatch(re);
  expect(e.message).not.toContain('\n');
}

describe('GGUF round trip', () => {
  it('writes a v3 header by the spec and reads back metadata, tables and bytes', async () => {
    const file = path.join(dir, 'rt.gguf');
    const tensors = writeSample(file);
    const raw = fs.readFileSync(file);
    expect(raw.subarray(0, 4).toString('latin1')).toBe('GGUF');
    expect(raw.readUInt32LE(4)).toBe(3);
    expect(raw.readBigUInt64LE(8)).toBe(BigInt(TENSORS.length));
    expect(raw.readBigUInt64LE(16)).toBe(BigInt(META.length));
    // first key: u64 length 20, "general.architecture", type 8 (string)
    expect(raw.readBigUInt64LE(24)).toBe(20n);
    expect(raw.subarray(32, 52).toString()).toBe('general.architecture');
    expect(raw.readUInt32LE(52)).toBe(8);

    const m = await openGguf(file);
    try {
      expect(m.metadata['t.u32']).toBe(4000000000);
      expect(m.metadata['t.i32']).toBe(-7);
      expect(m.metadata['t.f32']).toBe(1.5);
      expect(m.metadata['t.f64']).toBe(1e-6);
      expect(m.metadata['t.u64']).toBe(2n ** 40n);
      expect(m.metadata['t.bool']).toBe(true);
      expect(m.metadata['t.arr_u32']).toEqual([0, 0, 4, 128]);
      expect(m.metadata['t.arr_i32']).toEqual([-1, 2]);
      expect(m.metadata['t.arr_f32']).toEqual([10, 0.25]);
      expect(m.metadata['t.arr_string']).toEqual(['<｜User｜>', 'Ġa', '']);
      expect(m.metadataTypes['t.f32']).toEqual({ type: 6 });
      expect(m.metadataTypes['t.arr_u32']).toEqual({ type: 9, subType: 4 });
      expect(m.tensors.size).toBe(TENSORS.length);
      for (const [i, t] of TENSORS.entries()) {
        const info = tensorInfo(m, t.name);
        expect(info.type).toBe(t.type);
        expect(info.dims).toEqual(t.dims);
        expect(info.nbytes).toBe(t.nbytes);
        expect((info.offset - m.dataOffset) % 32).toBe(0);
        expect(m.dataOffset % 32).toBe(0);
        expect(Buffer.from(readTensor(m, t.name)).equals(Buffer.from(tensors[i].data as Uint8Array))).toBe(true);
      }
      // rows of the IQ2_XXS tensor run over dims[1] then dims[2]: row 4 is expert 2, row 0
      const iq2 = tensors[TENSORS.length - 1].data as Uint8Array;
      expect(Buffer.from(readRows(m, 'blk.0.iq2', 4, 6)).equals(Buffer.from(iq2.subarray(4 * 66, 6 * 66)))).toBe(true);
      expect(() => readRows(m, 'blk.0.iq2', 5, 7)).toThrow(/rows 5:7 are outside tensor blk.0.iq2 \(6 rows\)/);
      expect(() => tensorInfo(m, 'nope.weight')).toThrow(/tensor nope.weight not found/);
      expect(m.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    } finally {
      m.close();
    }
  });

  it('fingerprint identifies the header: same file same hash, one metadata value changed different hash', async () => {
    const a = path.join(dir, 'fa.gguf');
    const b = path.join(dir, 'fb.gguf');
    writeSample(a);
    writeGguf(b, { metadata: META.map((e) => (e.key === 't.i32' ? { ...e, value: -8 } : e)), tensors: TENSORS.map((t) => ({ ...t, data: null })) });
    const [m1, m2, m3] = [await openGguf(a), await openGguf(a), await openGguf(b)];
    expect(m1.fingerprint).toBe(m2.fingerprint);
    expect(m3.fingerprint).not.toBe(m1.fingerprint);
    [m1, m2, m3].forEach((m) => m.close());
  });

  it('streams chunked sources and reads tensors placed beyond 4 GB in a sparse file', async () => {
    const file = path.join(dir, 'big.gguf');
    const tail = bytes(4 * 1000, 7);
    writeGguf(file, {
      metadata: [],
      tensors: [
        // 5 GiB hole (an F32 tensor of 5·2^28 elements) so the next tensor starts past 4 GB
        { name: 'hole', type: GGMLType.F32, dims: [1024, 5 * 2 ** 18], data: null },
        { name: 'tail', type: GGMLType.F32, dims: [1000, 1], data: (emit) => { emit(tail.subarray(0, 1234)); emit(tail.subarray(1234)); } },
      ],
    });
    const st = fs.statSync(file);
    expect(st.size).toBeGreaterThan(5 * 2 ** 30);
    expect(st.blocks * 512).toBeLessThan(64 * 2 ** 20); // sparse: the hole costs no disk
    const m = await openGguf(file);
    const t = tensorInfo(m, 'tail');
    expect(t.offset).toBe(m.dataOffset + 5 * 2 ** 30);
    expect(Buffer.from(readTensor(m, 'tail')).equals(Buffer.from(tail))).toBe(true);
    expect(Buffer.from(readRows(m, 'hole', 5 * 2 ** 18 - 1, 5 * 2 ** 18)).every((x) => x === 0)).toBe(true);
    m.close();
  });

  it('rejects a source that produces the wrong number of bytes and leaves no file behind', () => {
    const file = path.join(dir, 'short.gguf');
    expect(() => writeGguf(file, { metadata: [], tensors: [{ name: 'x', type: GGMLType.F32, dims: [4], data: (emit) => emit(new Uint8Array(8)) }] })).toThrow(/8 of 16 bytes/);
    expect(fs.existsSync(file)).toBe(false);
    expect(fs.readdirSync(dir).some((f) => f.startsWith('short.gguf.tmp'))).toBe(false);
  });
});

describe('GGUF bad input', () => {
  /** Position of a tensor's table entry fields, found from its name in the header. */
  function tableEntry(raw: Buffer, name: string, ndims: number) {
    const at = raw.indexOf(Buffer.from(name)) + name.length;
    return { ndimsAt: at, dimsAt: at + 4, typeAt: at + 4 + 8 * ndims, offsetAt: at + 8 + 8 * ndims };
  }

  it('truncated header', async () => {
    const file = path.join(dir, 'trunc-h.gguf');
    writeSample(file);
    fs.truncateSync(file, 100);
    await expectBadInput(file, /truncated/);
    fs.truncateSync(file, 10);
    await expectBadInput(file, /truncated/);
  });

  it('tensor past the end of the file (truncated data)', async () => {
    const file = path.join(dir, 'trunc-d.gguf');
    writeSample(file);
    fs.truncateSync(file, fs.statSync(file).size - 100); // beyond the end padding, into the last tensor
    await expectBadInput(file, /tensor blk\.0\.iq2 .*past the end of the file/);
  });

  it('wrong magic', async () => {
    const file = path.join(dir, 'magic.gguf');
    writeSample(file);
    const raw = fs.readFileSync(file);
    raw.write('GGML', 0, 'latin1');
    fs.writeFileSync(file, raw);
    await expectBadInput(file, /not a GGUF file/);
  });

  it('wrong version', async () => {
    const file = path.join(dir, 'version.gguf');
    writeSample(file);
    const raw = fs.readFileSync(file);
    raw.writeUInt32LE(2, 4);
    fs.writeFileSync(file, raw);
    await expectBadInput(file, /unsupported GGUF version 2/);
  });

  it('unknown tensor type', async () => {
    const file = path.join(dir, 'type.gguf');
    writeSample(file);
    const raw = fs.readFileSync(file);
    raw.writeUInt32LE(13, tableEntry(raw, 'q8_0', 2).typeAt); // 13 = Q5_K: a real ggml type, not one DS4 uses
    fs.writeFileSync(file, raw);
    await expectBadInput(file, /tensor q8_0 has unknown ggml type 13/);
  });

  it('dims whose product overflows', async () => {
    const file = path.join(dir, 'dims.gguf');
    writeSample(file);
    const raw = fs.readFileSync(file);
    const e = tableEntry(raw, 'blk.0.iq2', 3);
    for (let d = 0; d < 3; d++) raw.writeBigUInt64LE(2n ** 32n - 256n, e.dimsAt + 8 * d);
    fs.writeFileSync(file, raw);
    await expectBadInput(file, /tensor blk\.0\.iq2 dims .* overflow/);
  });

  it('garbage metadata count is reported, not allocated', async () => {
    const file = path.join(dir, 'kv.gguf');
    writeSample(file);
    const raw = fs.readFileSync(file);
    raw.writeBigUInt64LE(2n ** 62n, 16);
    fs.writeFileSync(file, raw);
    await expectBadInput(file, /malformed GGUF header/);
  });

  it('missing file', async () => {
    await expectBadInput(path.join(dir, 'absent.gguf'), /no such file/);
  });

  it('a tensor off the data alignment, or two tensors sharing bytes, is refused naming them', async () => {
    const file = path.join(dir, 'align.gguf');
    writeSample(file);
    const raw = fs.readFileSync(file);
    const f16 = tableEntry(raw, 'f16', 1).offsetAt;
    const was = raw.readBigUInt64LE(f16);
    raw.writeBigUInt64LE(was + 2n, f16);
    fs.writeFileSync(file, raw);
    await expectBadInput(file, new RegExp(`tensor f16 data offset ${was + 2n} is not a multiple of the alignment 32`));
    // the f16 tensor pointed at the f32 tensor's bytes (offset 0: overlapping), the table otherwise intact
    raw.writeBigUInt64LE(0n, f16);
    fs.writeFileSync(file, raw);
    await expectBadInput(file, /tensors f32 \(24 bytes at \d+\) and f16 \(at \d+\) overlap/);
    // a type changed from F16 to F32 doubles the bytes the entry claims: it runs into the next tensor
    raw.writeBigUInt64LE(was, f16);
    raw.writeUInt32LE(GGMLType.F32, tableEntry(raw, 'f16', 1).typeAt);
    raw.writeBigUInt64LE(64n, tableEntry(raw, 'f16', 1).dimsAt);
    fs.writeFileSync(file, raw);
    await expectBadInput(file, /tensors f16 \(256 bytes at \d+\) and bf16 \(at \d+\) overlap/);
  });

  it('general.alignment must be a u32 power of two (ds4 reads nothing else)', async () => {
    const file = path.join(dir, 'align-key.gguf');
    writeGguf(file, { metadata: [...META, { key: 'general.alignment', type: 'u64', value: 64 }], tensors: TENSORS.map((t, i) => ({ name: t.name, type: t.type, dims: t.dims, data: bytes(t.nbytes, i) })) });
    await expectBadInput(file, /general\.alignment must be a u32 power of two, found 64 \(GGUF type 10\)/);
  });

  it('a FIFO or a directory is refused without blocking', async () => {
    const fifo = path.join(dir, 'fifo.gguf');
    execFileSync('mkfifo', [fifo]);
    await expectBadInput(fifo, /not a regular file \(a FIFO\)/);
    await expectBadInput(dir, /is a directory|not a regular file \(a directory\)/);
  });
});
