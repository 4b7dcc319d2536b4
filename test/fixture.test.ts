// Synthetic fixtures: determinism, structure, type mix, weight scales, the sparse ds4-flash preset (valid
// under --strict-ds4-flash, inspected in a child process under 1 GB RSS), and the fixture/inspect CLI.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { writeFixture } from '../model/fixture.ts';
import { defaultModelPath } from '../model/default-model.ts';
import { openGguf, readRows, readTensor, tensorInfo, type GgufModel } from '../model/gguf.ts';
import { validateModel } from '../model/validate.ts';
import { typeName } from '../model/quant/types.ts';
import { dequantizeRow } from '../model/quant/index.ts';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const CLI = path.join(ROOT, 'cli', 'ds4-diff.js');
let dir: string;
let tiny: string;
let m: GgufModel;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds4-fixture-'));
  tiny = path.join(dir, 'tiny.gguf');
  await writeFixture({ preset: 'tiny', seed: 0, out: tiny });
  m = await openGguf(tiny);
});
afterAll(() => {
  m?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8' });
}

/** IEEE half → number, written from the format definition (1 sign, 5 exponent, 10 mantissa bits). */
function half(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

function rms(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / x.length);
}

describe('tiny fixture', () => {
  it('is byte-identical for the same seed and differs for another seed', async () => {
    const again = path.join(dir, 'again.gguf');
    const other = path.join(dir, 'other.gguf');
    await writeFixture({ preset: 'tiny', seed: 0, out: again });
    await writeFixture({ preset: 'tiny', seed: 1, out: other });
    const a = fs.readFileSync(tiny);
    expect(fs.readFileSync(again).equals(a)).toBe(true);
    expect(fs.readFileSync(other).equals(a)).toBe(false);
    const m1 = await openGguf(other);
    expect(Buffer.from(readTensor(m1, 'blk.0.attn_q_a.weight')).equals(Buffer.from(readTensor(m, 'blk.0.attn_q_a.weight')))).toBe(false);
    m1.close();
  });

  it('is a few MB, valid, and has every DS4 structural feature', () => {
    expect(fs.statSync(tiny).size).toBeLessThan(16 * 2 ** 20);
    const v = validateModel(m);
    expect(v.violations).toEqual([]);
    expect(v.unused).toEqual([]);
    const cfg = v.config!;
    expect(cfg.nLayer).toBeGreaterThanOrEqual(4);
    expect(cfg.compressRatios).toEqual([0, 0, 4, 128, 4, 128]);
    expect(cfg.nHashLayers).toBe(3);
    expect(cfg.indexerHeadDim).toBe(128); // Hadamard-128
    // a ~12-token prompt slides the window and leaves more compressed rows than top-k picks
    expect(cfg.slidingWindow).toBeLessThan(12);
    expect(Math.floor(12 / 4)).toBeGreaterThan(cfg.indexerTopK);
    // optional router bias on some top-k layers only
    expect([3, 4, 5].map((il) => m.tensors.has(`blk.${il}.exp_probs_b.bias`))).toEqual([true, false, true]);
    expect(m.tensors.has('blk.2.exp_probs_b.bias')).toBe(false);
  });

  it('uses the q2 GGUF type mix', () => {
    const t = (n: string) => typeName(tensorInfo(m, n).type);
    expect(t('blk.3.ffn_gate_exps.weight')).toBe('IQ2_XXS');
    expect(t('blk.3.ffn_up_exps.weight')).toBe('IQ2_XXS');
    expect(t('blk.3.ffn_down_exps.weight')).toBe('Q2_K');
    for (const n of ['blk.0.attn_q_a.weight', 'blk.0.attn_output_b.weight', 'blk.0.ffn_up_shexp.weight', 'output.weight']) expect(t(n)).toBe('Q8_0');
    for (const n of ['token_embd.weight', 'blk.0.hc_attn_fn.weight', 'blk.0.ffn_gate_inp.weight', 'blk.2.attn_compressor_kv.weight', 'blk.2.indexer.proj.weight']) expect(t(n)).toBe('F16');
    for (const n of ['blk.0.attn_norm.weight', 'blk.0.attn_sinks.weight', 'blk.3.exp_probs_b.bias', 'output_hc_base.weight']) expect(t(n)).toBe('F32');
    expect(t('blk.0.ffn_gate_tid2eid.weight')).toBe('I32');
  });

  it('has distinct valid expert ids per token in tid2eid', () => {
    const info = tensorInfo(m, 'blk.1.ffn_gate_tid2eid.weight');
    const b = readTensor(m, info.name);
    const ids = new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    const k = info.dims[0];
    for (let tok = 0; tok < info.dims[1]; tok++) {
      const row = ids.subarray(tok * k, tok * k + k);
      expect(new Set(row).size).toBe(k);
      for (const e of row) expect(e >= 0 && e < 8).toBe(true);
    }
  });

  it('embeds the tokenizer with the DS4 special tokens', () => {
    const tokens = m.metadata['tokenizer.ggml.tokens'] as string[];
    expect(m.metadata['tokenizer.ggml.model']).toBe('gpt2');
    expect(m.metadata['tokenizer.ggml.pre']).toBe('joyai-llm');
    expect(tokens.length).toBe(Number(m.metadata['deepseek4.vocab_size']));
    expect(tokens[Number(m.metadata['tokenizer.ggml.bos_token_id'])]).toBe('<｜begin▁of▁sentence｜>');
    expect(tokens[Number(m.metadata['tokenizer.ggml.eos_token_id'])]).toBe('<｜end▁of▁sentence｜>');
    for (const s of ['<｜User｜>', '<｜Assistant｜>', '<think>', '</think>']) expect(tokens).toContain(s);
    expect((m.metadata['tokenizer.ggml.token_type'] as number[]).length).toBe(tokens.length);
  });

  it('scales weights so projections of unit-RMS inputs stay O(1)', () => {
    const rowsRms = (name: string, rows: number) => {
      const t = tensorInfo(m, name);
      const b = readRows(m, name, 0, rows);
      const rb = b.length / rows;
      const all = new Float32Array(rows * t.dims[0]);
      for (let r = 0; r < rows; r++) all.set(dequantizeRow(t.type, b.subarray(r * rb, (r + 1) * rb), t.dims[0]), r * t.dims[0]);
      return { rms: rms(all), fanIn: t.dims[0], all };
    };
    for (const n of ['blk.0.attn_q_a.weight', 'blk.4.ffn_gate_inp.weight', 'blk.2.indexer.attn_q_b.weight']) {
      const { rms: r, fanIn } = rowsRms(n, 8);
      expect(r * Math.sqrt(fanIn)).toBeGreaterThan(0.8);
      expect(r * Math.sqrt(fanIn)).toBeLessThan(1.25);
    }
    const norm = rowsRms('blk.1.ffn_norm.weight', 1).all;
    expect(Math.min(...norm)).toBeGreaterThan(0.7);
    expect(Math.max(...norm)).toBeLessThan(1.3);
    for (const n of ['blk.3.ffn_gate_exps.weight', 'blk.3.ffn_down_exps.weight']) {
      const { rms: r, fanIn, all } = rowsRms(n, 4);
      expect(all.every(Number.isFinite)).toBe(true);
      expect(r * Math.sqrt(fanIn)).toBeGreaterThan(0.2);
      expect(r * Math.sqrt(fanIn)).toBeLessThan(3);
    }
  });
});

describe('default model', () => {
  it('is the tiny seed-0 fixture, generated once into $DS4_DIFF_CACHE and then reused', async () => {
    const cache = path.join(dir, 'cache');
    const saved = process.env.DS4_DIFF_CACHE;
    process.env.DS4_DIFF_CACHE = cache;
    try {
      const p1 = await defaultModelPath();
      expect(path.dirname(p1)).toBe(cache);
      expect(path.basename(p1)).toMatch(/^tiny-seed0-[0-9a-f]{12}\.gguf$/);
      expect(fs.readFileSync(p1).equals(fs.readFileSync(tiny))).toBe(true);
      const mtime = fs.statSync(p1).mtimeMs;
      expect(await defaultModelPath()).toBe(p1);
      expect(fs.statSync(p1).mtimeMs).toBe(mtime);
      expect(fs.readdirSync(cache)).toEqual([path.basename(p1)]);
      // another version's fixture in a shared cache stays while it may be in use, and goes once a week unused
      fs.rmSync(p1);
      const recent = path.join(cache, 'tiny-seed0-000000000001.gguf'), old = path.join(cache, 'tiny-seed0-000000000002.gguf');
      fs.writeFileSync(recent, 'x');
      fs.writeFileSync(old, 'x');
      const weekAgo = new Date(Date.now() - 8 * 24 * 3600 * 1000);
      fs.utimesSync(old, weekAgo, weekAgo);
      expect(await defaultModelPath()).toBe(p1);
      expect(fs.readdirSync(cache).sort()).toEqual([path.basename(recent), path.basename(p1)].sort());
    } finally {
      if (saved === undefined) delete process.env.DS4_DIFF_CACHE;
      else process.env.DS4_DIFF_CACHE = saved;
    }
  });
});

describe('ds4-flash sparse preset', () => {
  it('--populate none: ~81 GB apparent, little disk, valid under --strict-ds4-flash, inspected under 1 GB RSS', async () => {
    const flash = path.join(dir, 'flash.gguf');
    await writeFixture({ preset: 'ds4-flash', out: flash, populate: 'none' });
    const st = fs.statSync(flash);
    expect(st.size).toBeGreaterThan(80e9);
    expect(st.size).toBeLessThan(90e9);
    expect(st.blocks * 512).toBeLessThan(64 * 2 ** 20);
    const r = spawnSync('/usr/bin/time', ['-v', process.execPath, CLI, 'inspect', flash, '--strict-ds4-flash', '--json'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.valid).toBe(true);
    expect(out.config.nLayer).toBe(43);
    expect(out.config.nVocab).toBe(129280);
    expect(out.layers[2].kind).toBe('ratio 4 + indexer');
    expect(out.layers[3].kind).toBe('ratio 128');
    const maxRssKb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1]);
    expect(maxRssKb).toBeGreaterThan(0);
    expect(maxRssKb).toBeLessThan(1024 * 1024);

    // a run on it multiplies zeros: a planted fault changes no row, so it is no verdict (125), never a pass
    const run = spawnSync(process.execPath, [CLI, 'run', '-m', flash, '--layer', '0', '--tokens', '0,1', '--inject', 'rope_tail:pairs-halves', '--no-baseline', '--out', path.join(dir, 'flash-run')], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    expect(run.status, run.stdout + run.stderr).toBe(125);
    expect(run.stdout).toMatch(/^NO VERDICT: the model holds no weight data in layers 0\.\.0 or the output head/m);
  }, 120_000);
});

describe('CLI', () => {
  it('fixture + inspect: writes the tiny model and reports it valid', () => {
    const out = path.join(dir, 'cli.gguf');
    const w = cli(['fixture', '--preset', 'tiny', '--seed', '0', '--out', out]);
    expect(w.status).toBe(0);
    expect(fs.readFileSync(out).equals(fs.readFileSync(tiny))).toBe(true);
    const r = cli(['inspect', out]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/validation: OK/);
    expect(r.stdout).toMatch(/ratio 4 \+ indexer/);
    expect(r.stdout).toMatch(/hash \(tid2eid\)/);
    // the tiny model is not the real one: strict mode fails with exit 3 and a one-line error
    const s = cli(['inspect', out, '--strict-ds4-flash']);
    expect(s.status).toBe(3);
    expect(s.stdout).toMatch(/block_count: expected 43/);
    expect(s.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('inspect --dequant writes rows as little-endian f32 in ggml row order', () => {
    const f32 = path.join(dir, 'norm.f32');
    expect(cli(['inspect', tiny, '--tensor', 'blk.0.attn_norm.weight', '--dequant', '--out', f32]).status).toBe(0);
    expect(fs.readFileSync(f32).equals(Buffer.from(readTensor(m, 'blk.0.attn_norm.weight')))).toBe(true); // F32: identity
    const f16 = path.join(dir, 'router.f32');
    expect(cli(['inspect', tiny, '--tensor', 'blk.3.ffn_gate_inp.weight', '--rows', '2:4', '--dequant', '--out', f16]).status).toBe(0);
    const got = new Float32Array(new Uint8Array(fs.readFileSync(f16)).buffer);
    const raw = Buffer.from(readRows(m, 'blk.3.ffn_gate_inp.weight', 2, 4));
    expect(got.length).toBe(2 * 256);
    for (let i = 0; i < got.length; i++) expect(got[i]).toBe(half(raw.readUInt16LE(2 * i)));
  });

  it('bad input: one line on stderr, exit 3', () => {
    const bad = path.join(dir, 'bad.gguf');
    fs.writeFileSync(bad, fs.readFileSync(tiny).subarray(0, 1000));
    const r = cli(['inspect', bad]);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/^ds4-diff: .*bad\.gguf: truncated/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(cli(['inspect', tiny, '--tensor', 'blk.99.attn_norm.weight']).stderr).toMatch(/tensor blk\.99\.attn_norm\.weight not found/);
    expect(cli(['fixture', '--preset', 'huge', '--out', bad]).status).toBe(3);
    expect(cli(['fixture', '--preset', 'ds4-flash', '--populate', '0,x', '--out', bad]).status).toBe(3);
  });

  it('rejects a populate layer outside 0..42 before writing anything', async () => {
    const out = path.join(dir, 'nolayer.gguf');
    await expect(writeFixture({ preset: 'ds4-flash', out, populate: [43] })).rejects.toThrow(/--populate 43: expected a layer 0\.\.42/);
    expect(fs.existsSync(out)).toBe(false);
  });
});
