// Import of ds4-named raw graph dumps (ds4.c metal_graph_debug_dump_tensor naming) written by the test.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compareFiles } from '../diff/compare.ts';
import { DumpWriter, readDump } from '../diff/dump.ts';
import { importDs4Dumps, listDs4Dumps } from '../diff/import.ts';
import { makeJudge } from '../diff/gate.ts';
import type { Policy } from '../diff/policy.ts';
import type { StageRecord } from '../model/stages.ts';
import type { Ds4Config } from '../model/config.ts';
import { Ds4DiffError } from '../model/errors.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-import-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

// a tiny DS4-shaped config (local test double): n_head 4 x head_dim 128 (q_rope 512 values), n_embd 256,
// n_expert_used 2, n_layer 6 (the head's dump layer), vocab 64
const cfg: Ds4Config = {
  nLayer: 6, nEmbd: 256, nVocab: 64, nHead: 4, nHeadKv: 1, headDim: 128, nRot: 64, qLoraRank: 64, oLoraRank: 64, oGroups: 2,
  nExpert: 8, nExpertUsed: 2, nFfExp: 256, nExpertShared: 1, nHashLayers: 3, slidingWindow: 8, indexerHeads: 4, indexerHeadDim: 128,
  indexerTopK: 2, nHc: 4, sinkhornIters: 20, hcEps: 1e-6, rmsEps: 1e-6, compressRatios: [0, 4, 128, 4, 128, 0], swigluClamp: [10, 10, 10, 10, 10, 10],
  ropeFreqBase: 10000, ropeScalingFactor: 16, ropeOrigCtx: 65536, yarnBetaFast: 32, yarnBetaSlow: 1, compressRopeFreqBase: 160000,
  expertWeightsScale: 1.5, expertWeightsNorm: true, contextLength: 4096,
};
const TOKENS = [0, 11, 12];

const ramp = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => k + i / 1024);

function dumpDir(name: string, files: Record<string, Float32Array | Int32Array | Buffer>): string {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  for (const [f, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), v instanceof Buffer ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength));
  return path.join(dir, 'run');
}

const GOOD = {
  // decode-style dumps, one position each
  'run_Qcur-0_pos2.bin': ramp(512, 1),
  'run_hc_attn_pre-0_pos2.bin': ramp(256, 2),
  'run_ffn_moe_topk-1_pos2.i32': Int32Array.of(3, 6),
  // a prefill dump holds all rows of the batch: attn_norm for positions 0, 1, 2
  'run_attn_norm-0_pos0.bin': ramp(3 * 256, 3),
  // raw_cache has a count-dependent row number: 5 rows of head_dim (a 5-token prefill batch's ring)
  'run_raw_cache-0_pos0.bin': ramp(5 * 128, 4),
  // head: layer n_layer = 6, pos 0 in ds4's dump
  'run_result_output-6_pos0.bin': ramp(64, 5),
  // fork-only name we do not know
  'run_attn_state_kv-0_pos0.bin': ramp(10, 6),
  // not ours: other prefix, other pattern
  'other_Qcur-0_pos2.bin': ramp(512, 7),
  'run_notes.txt': Buffer.from('hello'),
};

describe('ds4 dump import', () => {
  it('lists only files of the prefix with the ds4 naming', () => {
    const prefix = dumpDir('list', GOOD);
    expect(listDs4Dumps(prefix).map((f) => `${f.name}/${f.layer}/${f.pos}/${f.dtype}`)).toEqual([
      'attn_norm/0/0/f32', 'attn_state_kv/0/0/f32', 'raw_cache/0/0/f32', 'Qcur/0/2/f32', 'hc_attn_pre/0/2/f32', 'ffn_moe_topk/1/2/i32', 'result_output/6/0/f32',
    ]);
  });

  it('maps ds4 names to canonical stages with shapes from the config, splitting prefill batches', async () => {
    const prefix = dumpDir('good', GOOD);
    const out = path.join(root, 'good.arrow');
    const warnings: string[] = [];
    const s = await importDs4Dumps(prefix, { cfg, out, promptTokens: TOKENS, modelFingerprint: 'fp', version: 'test', warn: (m) => warnings.push(m) });
    expect(s).toEqual({ files: 7, records: 9, unknown: ['attn_state_kv'] });
    expect(warnings).toEqual(["ds4 dump name 'attn_state_kv' is not a known stage; kept under its own name"]);
    const { meta, records } = await readDump(out);
    expect(meta).toMatchObject({ side: 'ds4-import', modelFingerprint: 'fp', promptTokens: TOKENS, producer: { backend: 'ds4', version: 'test' } });
    const by = (stage: string, layer: number, pos: number) => records.find((r) => r.stage === stage && r.layer === layer && r.pos === pos)!;
    expect(by('q_rope', 0, 2)).toMatchObject({ dtype: 'f32', shape: [4, 128], token: 12 });
    expect(by('q_rope', 0, 2).values).toEqual(ramp(512, 1));
    expect(by('attn_cur', 0, 2).shape).toEqual([256]);
    expect(by('router_topk', 1, 2)).toMatchObject({ dtype: 'i32', shape: [2] });
    expect(by('router_topk', 1, 2).values).toEqual(Int32Array.of(3, 6));
    for (const p of [0, 1, 2]) {
      expect(by('attn_norm', 0, p).token).toBe(TOKENS[p]);
      expect(by('attn_norm', 0, p).values).toEqual(ramp(3 * 256, 3).slice(p * 256, (p + 1) * 256));
    }
    // a prefill batch's raw_cache (5 ring rows from pos 0) is the window as of its last position
    expect(by('raw_cache', 0, 4).shape).toEqual([5, 128]);
    // the head lands on the last prompt position, where the reference computes it
    expect(by('logits', 6, 2).shape).toEqual([64]);
    expect(by('attn_state_kv', 0, 0).shape).toEqual([10]);
  });

  it('a file whose size does not fit its stage is an error naming it, and nothing is written', async () => {
    const prefix = dumpDir('bad', { 'run_Qcur-0_pos0.bin': ramp(500, 1) });
    const out = path.join(root, 'bad.arrow');
    const e = await importDs4Dumps(prefix, { cfg, out, warn: () => {} }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(Ds4DiffError);
    expect((e as Ds4DiffError).exitCode).toBe(3);
    expect((e as Error).message).toMatch(/run_Qcur-0_pos0\.bin: 500 values do not fit stage q_rope of shape \[4,128\]/);
    expect(fs.readdirSync(root).filter((n) => n.startsWith('bad.arrow'))).toEqual([]);
    const odd = dumpDir('odd', { 'run_Qcur-0_pos0.bin': Buffer.alloc(7) });
    await expect(importDs4Dumps(odd, { cfg, out, warn: () => {} })).rejects.toThrow(/7 bytes is not a whole number/);
    const dtype = dumpDir('dtype', { 'run_Qcur-0_pos0.i32': Int32Array.of(1, 2) });
    await expect(importDs4Dumps(dtype, { cfg, out, warn: () => {} })).rejects.toThrow(/stage q_rope is f32 but the file is i32/);
    await expect(importDs4Dumps(path.join(root, 'empty-prefix', 'x'), { cfg, out })).rejects.toThrow(/cannot list/);
  });

  it('prefill batches of stateful stages land where the reference captures them (ds4.c prefill dump semantics)', async () => {
    const D = cfg.headDim;
    const rows = (n: number, k: number) => Float32Array.from({ length: n * D }, (_, i) => k + Math.floor(i / D));
    const prefix = dumpDir('prefill-state', {
      // raw_cache of a 10-token batch from pos 0: ring rows 0..9 (row i holds value 100+i); the window is 8
      'run_raw_cache-0_pos0.bin': rows(10, 100),
      // layer 1 is ratio 4: a 10-token batch from pos 0 closes windows 0 and 1 (rows 200, 201)
      'run_KVcompress-1_pos0.bin': rows(2, 200),
      // decode path: one row dumped at its window's last position
      'run_KVcompress-3_pos11.bin': rows(1, 300),
      // an aligned chunk from pos 8 closing one window (window 2 → pos 11)
      'run_indexer_KVcompress-1_pos8.bin': rows(1, 400),
    });
    const out = path.join(root, 'prefill-state.arrow');
    await importDs4Dumps(prefix, { cfg, out, promptTokens: Array.from({ length: 12 }, (_, i) => i) });
    const recs = (await readDump(out)).records;
    const at = (stage: string, layer: number) => recs.filter((r) => r.stage === stage && r.layer === layer).map((r) => [r.pos, r.shape.join('x'), r.values[0], r.values[r.values.length - 1]]);
    // the window as of pos 9: its last 8 rows, oldest first (positions 2..9)
    expect(at('raw_cache', 0)).toEqual([[9, `8x${D}`, 102, 109]]);
    expect(at('attn_comp_row', 1)).toEqual([[3, String(D), 200, 200], [7, String(D), 201, 201]]);
    expect(at('attn_comp_row', 3)).toEqual([[11, String(D), 300, 300]]);
    expect(at('index_comp_row', 1)).toEqual([[11, String(D), 400, 400]]);
  });

  it('without a model the values are kept flat, with a warning', async () => {
    const prefix = dumpDir('flat', { 'run_Qcur-0_pos0.bin': ramp(500, 1) });
    const warnings: string[] = [];
    await importDs4Dumps(prefix, { out: path.join(root, 'flat.arrow'), warn: (m) => warnings.push(m) });
    expect(warnings[0]).toMatch(/no model given/);
    expect((await readDump(path.join(root, 'flat.arrow'))).records[0]).toMatchObject({ stage: 'q_rope', shape: [500], token: -1 });
  });

  it('an imported dump directory compares against our reference format', async () => {
    const prefix = dumpDir('cmp', { 'run_Qcur-0_pos0.bin': ramp(512, 1), 'run_ffn_moe_topk-0_pos0.i32': Int32Array.of(1, 4) });
    const imported = path.join(root, 'cmp.arrow');
    await importDs4Dumps(prefix, { cfg, out: imported, promptTokens: [0], warn: () => {} });
    const ref = path.join(root, 'cmp-ref.arrow');
    const w = await DumpWriter.open(ref, { formatVersion: 1, modelFingerprint: 'unknown', promptTokens: [0], producer: { backend: 'reference', version: 'test' }, side: 'reference' });
    const q = ramp(512, 1);
    q[7] += 0.2; // beyond the policy's maxAbs 0.05 below
    const recs: StageRecord[] = [
      { stage: 'q_rope', layer: 0, pos: 0, token: 0, dtype: 'f32', shape: [4, 128], values: q },
      { stage: 'router_topk', layer: 0, pos: 0, token: 0, dtype: 'i32', shape: [2], values: Int32Array.of(1, 4) },
    ];
    recs.forEach((r) => w.write(r));
    await w.close();
    const policy: Policy = { version: 2, rules: [{ stage: 'q_rope', role: 'inherited', maxAbs: 0.05 }] };
    const c = await compareFiles(ref, imported, makeJudge({ deviceBound: () => ({ rel: 0, from: 'none' }), policy }));
    expect(c.counts).toMatchObject({ compared: 2, failed: 1, missing: 0 });
    expect(c.firstFailure).toMatchObject({ stage: 'q_rope', layer: 0, pos: 0 });
    expect(c.firstFailure!.free!.violations.map((v) => v.key)).toEqual(['maxAbs']);
    expect(c.firstFailure!.free!.metrics!.kind === 'f32' && c.firstFailure!.free!.metrics!.maxAbs).toBeCloseTo(0.2, 6);
    expect(c.rows.find((r) => r.stage === 'router_topk')!.status).toBe('pass');
  });
});

describe('ds4 dump import: every file checked before it is trusted', () => {
  const reject = async (files: Record<string, Float32Array | Int32Array | Buffer>, name: string, opts: { tokens?: number[]; setup?: (dir: string) => void } = {}) => {
    const prefix = dumpDir(name, { 'run_Qcur-0_pos0.bin': ramp(512, 1), ...files });
    opts.setup?.(path.dirname(prefix));
    const rejected: Array<[string, string]> = [];
    const out = path.join(root, `${name}.arrow`);
    const s = await importDs4Dumps(prefix, { cfg, out, promptTokens: opts.tokens ?? TOKENS, warn: () => {}, onReject: (f, why) => rejected.push([path.basename(f.file), why]) });
    // the good file beside the bad one is imported either way
    expect(s.files).toBe(1);
    expect((await readDump(out)).records.map((r) => `${r.stage}/${r.layer}/${r.pos}`)).toEqual(['q_rope/0/0']);
    return rejected;
  };

  it('names out of range are rejected by name, never wrapped', async () => {
    expect(await reject({ 'run_Qcur-0_pos4294967296.bin': ramp(512, 1) }, 'wrap')).toEqual([['run_Qcur-0_pos4294967296.bin', 'pos 4294967296 in the file name is beyond any position']]);
    expect(await reject({ 'run_Qcur-0_pos4096.bin': ramp(512, 1) }, 'ctx')).toEqual([['run_Qcur-0_pos4096.bin', "pos 4096 is beyond the model's context_length 4096"]]);
    expect(await reject({ 'run_Qcur-6_pos1.bin': ramp(512, 1) }, 'layer')).toEqual([['run_Qcur-6_pos1.bin', 'layer 6: the model has layers 0..5']]);
    expect(await reject({ 'run_result_output-2_pos0.bin': ramp(64, 1) }, 'head')).toEqual([['run_result_output-2_pos0.bin', 'layer 2: ds4 dumps the output head as layer n_layer (6)']]);
  });

  it('a file larger than its stage can be is refused before it is read; an empty one too', async () => {
    // 1 GiB of Qcur at pos 1 (sparse: nothing is written, nothing may be read)
    const big = await reject({}, 'big', { setup: (d) => fs.closeSync(fs.openSync(path.join(d, 'run_Qcur-0_pos1.bin'), 'w')) ?? fs.truncateSync(path.join(d, 'run_Qcur-0_pos1.bin'), 2 ** 30) });
    expect(big).toEqual([['run_Qcur-0_pos1.bin', `${2 ** 30} bytes is more than it can hold (at most 4096 bytes: 2 positions of stage q_rope (512 values each) from pos 1 to the end of the 3-token prompt); not read`]]);
    expect(await reject({ 'run_raw_cache-0_pos0.bin': Buffer.alloc(0) }, 'empty')).toEqual([['run_raw_cache-0_pos0.bin', 'is empty (0 bytes)']]);
    // a prefill batch of 4 positions from pos 1 of a 3-token prompt
    expect(await reject({ 'run_attn_norm-0_pos1.bin': ramp(4 * 256, 1) }, 'past')).toEqual([['run_attn_norm-0_pos1.bin', expect.stringContaining('bytes is more than it can hold (at most 2048 bytes: 2 positions of stage attn_norm')]]);
    // the head is one row (ds4 dumps it once, for the last token)
    expect(await reject({ 'run_result_output-6_pos0.bin': ramp(128, 1) }, 'head2')).toEqual([['run_result_output-6_pos0.bin', '512 bytes is more than it can hold (at most 256 bytes: 1 row (the output head) of stage logits (64 values each)); not read']]);
    // two files claiming one row: the later one is refused
    expect(await reject({ 'run_Qcur-0_pos00.bin': ramp(512, 2) }, 'dup')).toEqual([['run_Qcur-0_pos00.bin', 'holds q_rope layer 0 pos 0, which run_Qcur-0_pos0.bin already gave']]);
  });

  it('symbolic links, FIFOs and directories are not read (a FIFO would block); a non-UTF-8 name does not stop the rest', async () => {
    const target = path.join(root, 'outside.bin');
    fs.writeFileSync(target, Buffer.from(ramp(512, 9).buffer));
    const kinds = await reject({}, 'kinds', {
      setup: (d) => {
        fs.symlinkSync(target, path.join(d, 'run_Qcur-0_pos1.bin'));
        execFileSync('mkfifo', [path.join(d, 'run_Qcur-0_pos2.bin')]);
        fs.mkdirSync(path.join(d, 'run_attn_norm-0_pos1.bin'));
        fs.writeFileSync(Buffer.concat([Buffer.from(path.join(d, 'run_attn_norm-0_pos')), Buffer.from([0xff, 0xfe]), Buffer.from('.bin')]), Buffer.from(ramp(256, 1).buffer));
      },
    });
    expect(kinds.sort()).toEqual([
      ['run_Qcur-0_pos1.bin', 'is a symbolic link; not read'],
      ['run_Qcur-0_pos2.bin', 'is a FIFO; not read'],
      ['run_attn_norm-0_pos1.bin', 'is a directory; not read'],
      ['run_attn_norm-0_pos\ufffd\ufffd.bin', 'the file name is not valid UTF-8'],
    ].sort());
  });
});
