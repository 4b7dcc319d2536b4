// One fuzz case: a seeded mutant of a GGUF, an Arrow dump, a baseline or a ds4 dump directory, run
// through the real reader and command path in-process, and its outcome classified:
//   ok          accepted, and the command path ran to a verdict that is true of the input
//   refused     a Ds4DiffError: one line naming the file and the problem (exit 3 or 125)
//   internal    anything else thrown (a bug: the CLI would say "internal error"), or a refusal that
//               is not one line naming the file
//   misleading  accepted, but what the command then said is not true of the input (see each oracle)
//   hang        (decided by the pool: the case did not finish within its time limit)
// Runs in a worker thread (test/fuzz-worker.mjs) so that a hang can be stopped.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../cli/common.ts';
import { loadBaseline, type Baseline } from '../diff/baseline.ts';
import { compareRun } from '../diff/compare.ts';
import { iterateDump, readDumpMeta } from '../diff/dump.ts';
import { gateRunDir, makeJudge } from '../diff/gate.ts';
import { importDs4Dumps } from '../diff/import.ts';
import { readManifest } from '../diff/manifest.ts';
import type { Ds4Config } from '../model/config.ts';
import { mulberry32 } from '../model/fixture.ts';
import { Ds4DiffError } from '../model/errors.ts';
import { resolveStage, type StageRecord } from '../model/stages.ts';
import { runDeviceBounds } from '../ascend/budgets.ts';
import { runReference } from '../reference/runner.ts';

export const READERS = ['gguf', 'arrow', 'baseline', 'ds4dump'] as const;
export type Reader = (typeof READERS)[number];
export type Outcome = 'ok' | 'refused' | 'internal' | 'misleading' | 'hang';

/** What the cases mutate, prepared once (test/fuzz.ts prepareFixtures). */
export interface Fixtures {
  /** the tiny DS4 GGUF */
  model: string;
  /** a finished `run` directory of it (reference.arrow, device.arrow, manifest.json) */
  runDir: string;
  /** the baseline recorded from runDir (it passes) */
  baseline: string;
  /** ds4-named dumps of the reference (DS4_METAL_GRAPH_DUMP_PREFIX = dumpPrefix) */
  dumpPrefix: string;
  dumpTokens: number[];
}

export interface CaseResult {
  outcome: Exclude<Outcome, 'hang'>;
  /** the mutation, and for internal/misleading what went wrong */
  detail: string;
}

const caseSeed = (seed: number, reader: Reader, i: number) => (seed * 1_000_003 + READERS.indexOf(reader) * 7_919_993 + i * 2_654_435_761) >>> 0;

interface Rand {
  f: () => number;
  int: (n: number) => number;
  pick: <T>(xs: readonly T[]) => T;
}

// the same case for the same seed and index, on any machine
function rand(seed: number): Rand {
  const f = mulberry32(seed);
  return { f, int: (n) => Math.floor(f() * n), pick: (xs) => xs[Math.floor(f() * xs.length)] };
}

// values that break naive readers: zero, one, the ends of every integer width, non-finite floats
const U32_EXTREMES = [0, 1, 2, 3, 7, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 65537, 4096, 129280];
const F32_EXTREMES = [0, -0, 1, -1, NaN, Infinity, -Infinity, 1e-45, 1e38, 1e-30, 0.5];
const U64_EXTREMES = [0n, 1n, 2n ** 31n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];

/** Classifies a thrown error: a clean refusal is a one-line Ds4DiffError naming `names` (the file). */
function classifyError(e: unknown, names: string[], detail: string): CaseResult {
  if (e instanceof Ds4DiffError) {
    if (e.message.includes('\n')) return { outcome: 'internal', detail: `${detail}: refusal of several lines: ${e.message.slice(0, 200)}` };
    if (!names.some((n) => e.message.includes(n))) return { outcome: 'internal', detail: `${detail}: refusal not naming the file: ${e.message.slice(0, 200)}` };
    return { outcome: 'refused', detail: `${detail}: ${e.message.slice(0, 160)}` };
  }
  const err = e as Error;
  return { outcome: 'internal', detail: `${detail}: ${err?.name ?? 'throw'}: ${String(err?.message ?? e).split('\n')[0].slice(0, 200)} ${(err?.stack ?? '').split('\n').slice(1, 3).join(' ').trim()}` };
}

// ---- GGUF ----

interface GgufLayout {
  bytes: Buffer;
  dataOffset: number;
  /** absolute offset just past a metadata key's name (its u32 type follows) */
  keys: Array<{ key: string; at: number }>;
  /** absolute offset just past a tensor's name (its u32 ndims follows) */
  tensors: Array<{ name: string; at: number }>;
}

let ggufLayout: GgufLayout | undefined;

async function layoutOf(file: string): Promise<GgufLayout> {
  if (ggufLayout) return ggufLayout;
  const bytes = fs.readFileSync(file);
  const { model } = await loadModel(file);
  const header = bytes.subarray(0, model.dataOffset);
  const find = (name: string) => {
    // a key/tensor name is stored as u64 length + bytes: find that exact sequence
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(name)));
    const at = header.indexOf(Buffer.concat([len, Buffer.from(name)]));
    return at < 0 ? -1 : at + 8 + Buffer.byteLength(name);
  };
  const keys = Object.keys(model.metadata).map((key) => ({ key, at: find(key) })).filter((k) => k.at > 0);
  const tensors = [...model.tensors.keys()].map((name) => ({ name, at: find(name) })).filter((t) => t.at > 0);
  ggufLayout = { bytes, dataOffset: model.dataOffset, keys, tensors };
  model.close();
  return ggufLayout;
}

/** Mutates a copy of the GGUF; returns what was done. */
function mutateGguf(r: Rand, L: GgufLayout, b: Buffer): { bytes: Buffer; what: string } {
  const kind = r.f();
  if (kind < 0.25) {
    const n = 1 + r.int(4);
    const at: number[] = [];
    for (let i = 0; i < n; i++) {
      const o = r.int(L.dataOffset);
      b[o] ^= 1 << r.int(8);
      at.push(o);
    }
    return { bytes: b, what: `header bit flips at ${at.join(',')}` };
  }
  if (kind < 0.6) {
    const k = r.pick(L.keys);
    const type = b.readUInt32LE(k.at);
    const v = k.at + 4;
    if (type === 4 || type === 5) {
      const x = r.pick(U32_EXTREMES);
      b.writeUInt32LE(x >>> 0, v);
      return { bytes: b, what: `${k.key} = ${x} (u32)` };
    }
    if (type === 6) {
      const x = r.pick(F32_EXTREMES);
      b.writeFloatLE(x, v);
      return { bytes: b, what: `${k.key} = ${x} (f32)` };
    }
    if (type === 7) {
      b[v] = r.int(256);
      return { bytes: b, what: `${k.key} = byte ${b[v]} (bool)` };
    }
    if (type === 10 || type === 11 || type === 12) {
      const x = r.pick(U64_EXTREMES);
      b.writeBigUInt64LE(x, v);
      return { bytes: b, what: `${k.key} = ${x} (64-bit)` };
    }
    if (type === 8) {
      const x = r.pick(U64_EXTREMES);
      b.writeBigUInt64LE(x, v);
      return { bytes: b, what: `${k.key}: string length ${x}` };
    }
    if (type === 9) {
      // array: u32 element type, u64 count, elements
      if (r.f() < 0.4) {
        const x = r.pick(U64_EXTREMES);
        b.writeBigUInt64LE(x, v + 4);
        return { bytes: b, what: `${k.key}: array count ${x}` };
      }
      const sub = b.readUInt32LE(v);
      const count = Number(b.readBigUInt64LE(v + 4));
      if ((sub === 4 || sub === 5 || sub === 6) && count > 0) {
        const e = v + 12 + 4 * r.int(count);
        if (sub === 6) b.writeFloatLE(r.pick(F32_EXTREMES), e);
        else b.writeUInt32LE(r.pick(U32_EXTREMES) >>> 0, e);
        return { bytes: b, what: `${k.key}: one array element extreme` };
      }
      b.writeUInt32LE(r.int(14), v);
      return { bytes: b, what: `${k.key}: array element type ${b.readUInt32LE(v)}` };
    }
    b.writeUInt32LE(r.int(16), k.at);
    return { bytes: b, what: `${k.key}: value type ${b.readUInt32LE(k.at)}` };
  }
  if (kind < 0.85) {
    const t = r.pick(L.tensors);
    const nd = b.readUInt32LE(t.at);
    const field = r.int(4);
    if (field === 0) {
      b.writeUInt32LE(r.pick([0, 1, 2, 3, 4, 5, 8, 9, 0xffffffff]), t.at);
      return { bytes: b, what: `${t.name}: ndims ${b.readUInt32LE(t.at)}` };
    }
    if (field === 1 && nd > 0 && nd <= 8) {
      const d = r.int(nd);
      b.writeBigUInt64LE(r.pick([...U64_EXTREMES, 3n, 256n, 4096n]), t.at + 4 + 8 * d);
      return { bytes: b, what: `${t.name}: dim ${d} = ${b.readBigUInt64LE(t.at + 4 + 8 * d)}` };
    }
    const typeAt = t.at + 4 + 8 * Math.min(nd, 8);
    if (field === 2 && nd <= 8) {
      b.writeUInt32LE(r.pick([0, 1, 2, 8, 10, 11, 12, 13, 14, 15, 16, 26, 30, 39, 1000]), typeAt);
      return { bytes: b, what: `${t.name}: type ${b.readUInt32LE(typeAt)}` };
    }
    if (nd <= 8) {
      const was = b.readBigUInt64LE(typeAt + 4);
      const x = r.pick([0n, was + 1n, was + 32n, was - 32n < 0n ? 0n : was - 32n, 2n ** 40n, 2n ** 64n - 1n, was + 2n ** 32n]);
      b.writeBigUInt64LE(x, typeAt + 4);
      return { bytes: b, what: `${t.name}: offset ${was} -> ${x}` };
    }
    return { bytes: b, what: 'no-op' };
  }
  if (kind < 0.92) {
    const at = r.int(b.length);
    return { bytes: b.subarray(0, at), what: `truncated at ${at}` };
  }
  if (kind < 0.96) {
    const o = r.pick([8, 16]);
    b.writeBigUInt64LE(r.pick(U64_EXTREMES), o);
    return { bytes: b, what: `${o === 8 ? 'tensor' : 'kv'} count ${b.readBigUInt64LE(o)}` };
  }
  const n = 1 + r.int(16);
  for (let i = 0; i < n; i++) b[L.dataOffset + r.int(b.length - L.dataOffset)] = r.int(256);
  return { bytes: b, what: `${n} data bytes` };
}

/**
 * GGUF: `loadModel` (what inspect and every model-loading command run), then — when the file is
 * accepted — the reference on 3 tokens through every layer. Misleading: the file is called valid but
 * the model-loading command then fails on it (as sinkhorn_iterations 2^31-1 used to hang `reference`).
 * Non-finite logits from damaged weight bytes are what `reference` refuses (exit 3): a refusal.
 */
async function ggufCase(r: Rand, fx: Fixtures, work: string): Promise<CaseResult> {
  const L = await layoutOf(fx.model);
  const { bytes, what } = mutateGguf(r, L, Buffer.from(L.bytes));
  const file = path.join(work, 'model.gguf');
  fs.writeFileSync(file, bytes);
  let loaded;
  try {
    loaded = await loadModel(file);
  } catch (e) {
    return classifyError(e, [file], what);
  }
  try {
    const res = await runReference({ model: loaded.model, cfg: loaded.cfg, tokens: [0, 5, 9].map((t) => t % loaded.cfg.nVocab), lastLayer: loaded.cfg.nLayer - 1 });
    if (!res.logits.every(Number.isFinite)) return { outcome: 'refused', detail: `${what}: non-finite logits (reference refuses)` };
    return { outcome: 'ok', detail: what };
  } catch (e) {
    const c = classifyError(e, [file], what);
    return c.outcome === 'refused' ? { outcome: 'misleading', detail: `${what}: validation passed, then the command failed: ${c.detail}` } : c;
  } finally {
    loaded.model.close();
  }
}

// ---- Arrow ----

let arrowOriginal: { bytes: Buffer; records: Map<string, StageRecord> } | undefined;
const recKey = (x: { stage: string; layer: number; pos: number }) => `${x.stage}/${x.layer}/${x.pos}`;

async function arrowBase(fx: Fixtures) {
  if (arrowOriginal) return arrowOriginal;
  const f = path.join(fx.runDir, 'device.arrow');
  const records = new Map<string, StageRecord>();
  for await (const rec of iterateDump(f)) records.set(recKey(rec), rec);
  arrowOriginal = { bytes: fs.readFileSync(f), records };
  return arrowOriginal;
}

function mutateBytes(r: Rand, b: Buffer, hot: Array<[number, number]>): { bytes: Buffer; what: string } {
  const kind = r.f();
  if (kind < 0.1) {
    const at = r.int(b.length);
    return { bytes: b.subarray(0, at), what: `truncated at ${at}` };
  }
  const [lo, hi] = r.f() < 0.7 ? r.pick(hot) : [0, b.length];
  const n = 1 + r.int(kind < 0.5 ? 3 : 12);
  const at: number[] = [];
  for (let i = 0; i < n; i++) {
    const o = lo + r.int(Math.max(1, Math.min(hi, b.length) - lo));
    if (kind < 0.5) b[o] ^= 1 << r.int(8);
    else b[o] = r.pick([0, 0xff, 0x7f, 0x80, r.int(256)]);
    at.push(o);
  }
  return { bytes: b, what: `${kind < 0.5 ? 'bit flips' : 'bytes set'} at ${at.join(',')}` };
}

/**
 * Arrow: a mutant as the `device.arrow` of a copy of a run directory, through `compareRun` (what gate,
 * bisect and `run` use: sides checked against the manifest, then compared). Misleading: the comparison
 * passes with every row compared although the dump is not the run's (its model or prompt differs from
 * the manifest), or although its rows are not the ones the original dump has (rows appeared or vanished
 * without being counted as missing).
 */
async function arrowCase(r: Rand, fx: Fixtures, work: string): Promise<CaseResult> {
  const base = await arrowBase(fx);
  const size = base.bytes.length;
  // message headers, the first batch's start, the footer and its schema metadata are where damage bites
  const { bytes, what } = mutateBytes(r, Buffer.from(base.bytes), [[0, 4096], [size - 4096, size], [0, size]]);
  const dir = path.join(work, 'run');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir);
  // the run's manifest and its reference sides (the reference and its facts); the device side is the mutant
  for (const f of fs.readdirSync(fx.runDir).filter((x) => x === 'manifest.json' || /^reference.*\.arrow$/.test(x))) fs.copyFileSync(path.join(fx.runDir, f), path.join(dir, f));
  const file = path.join(dir, 'device.arrow');
  fs.writeFileSync(file, bytes);
  let c;
  try {
    c = await compareRun(dir, makeJudge({ deviceBound: runDeviceBounds(readManifest(dir)) }));
  } catch (e) {
    return classifyError(e, [file, dir], what);
  }
  const passes = c.pass && c.counts.missing === 0;
  if (!passes) return { outcome: 'ok', detail: `${what}: compare reports ${c.counts.failed} failed, ${c.counts.missing} missing` };
  const meta = await readDumpMeta(file);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { model: { fingerprint: string }; promptTokens: number[] };
  if (meta.modelFingerprint !== manifest.model.fingerprint || JSON.stringify(meta.promptTokens) !== JSON.stringify(manifest.promptTokens)) {
    return { outcome: 'misleading', detail: `${what}: passes, but the dump names model ${meta.modelFingerprint.slice(0, 16)} / tokens [${meta.promptTokens}], not the run's` };
  }
  const keys = new Set(c.rows.map(recKey));
  const lost = [...base.records.keys()].filter((k) => !keys.has(k));
  if (lost.length || keys.size !== base.records.size) return { outcome: 'misleading', detail: `${what}: passes, but ${lost.length} of the dump's rows were not compared` };
  return { outcome: 'ok', detail: `${what}: passes (damage within tolerance)` };
}

// ---- baseline ----

let baselineOriginal: { text: string; json: Baseline } | undefined;

function mutateJson(r: Rand, root: unknown): { what: string; text: string } {
  // collect every (container, key) in the tree, pick one, and replace, delete or retype it
  const slots: Array<{ parent: Record<string, unknown> | unknown[]; key: string | number; path: string }> = [];
  const walk = (v: unknown, p: string) => {
    if (Array.isArray(v)) v.forEach((x, i) => (slots.push({ parent: v, key: i, path: `${p}[${i}]` }), walk(x, `${p}[${i}]`)));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) (slots.push({ parent: v as Record<string, unknown>, key: k, path: `${p}.${k}` }), walk(x, `${p}.${k}`));
  };
  walk(root, '$');
  const s = r.pick(slots);
  const replacements: unknown[] = [null, 0, -1, 1e308, -1e308, 'NaN', 'Infinity', '', 'x', true, false, [], {}, [null], { a: 1 }, 2 ** 53, 1.5, '2020-01-01', 'sim', 'exact'];
  const op = r.f();
  let what: string;
  if (op < 0.2 && !Array.isArray(s.parent)) {
    delete (s.parent as Record<string, unknown>)[s.key as string];
    what = `delete ${s.path}`;
  } else if (op < 0.3 && Array.isArray(s.parent)) {
    s.parent.splice(s.key as number, 0, r.pick(replacements));
    what = `insert into ${s.path}`;
  } else {
    const v = r.pick(replacements);
    (s.parent as Record<string | number, unknown>)[s.key] = v;
    what = `${s.path} = ${JSON.stringify(v)}`;
  }
  return { what, text: JSON.stringify(root) };
}

/** The case fields of a mutant that are present and differ from the original's: the gate must refuse those. */
function caseChanges(orig: Baseline['case'], m: unknown): string[] {
  const c = (m as { case?: Record<string, unknown> })?.case;
  if (!c || typeof c !== 'object') return [];
  const out: string[] = [];
  for (const k of ['modelFingerprint', 'promptTokens', 'backend', 'kernelMath', 'layers'] as const) {
    if (c[k] !== undefined && JSON.stringify(c[k]) !== JSON.stringify(orig[k])) out.push(k);
  }
  return out;
}

/**
 * Baseline: a mutant through `gate` on the run it was recorded from. Misleading: the gate passes a
 * baseline whose case (model fingerprint, prompt tokens, backend, kernel math, layers) is not the
 * run's — it must be refused as a baseline for another case. (Loosened tolerances passing a faulty
 * run are issue 11's verdict rules, not a reader's.)
 */
async function baselineCase(r: Rand, fx: Fixtures, work: string): Promise<CaseResult> {
  baselineOriginal ??= { text: fs.readFileSync(fx.baseline, 'utf8'), json: loadBaseline(fx.baseline) };
  const orig = baselineOriginal;
  let file = path.join(work, 'baseline.json');
  fs.rmSync(file, { recursive: true, force: true });
  let what: string;
  let parsed: unknown;
  const kind = r.f();
  if (kind < 0.7) {
    const m = mutateJson(r, JSON.parse(orig.text));
    what = m.what;
    const text = m.text;
    fs.writeFileSync(file, text);
    parsed = JSON.parse(text);
  } else if (kind < 0.94) {
    const m = mutateBytes(r, Buffer.from(orig.text), [[0, 600], [0, orig.text.length]]);
    what = m.what;
    fs.writeFileSync(file, m.bytes);
    try {
      parsed = JSON.parse(m.bytes.toString('utf8'));
    } catch {
      parsed = undefined;
    }
  } else {
    const special = r.int(5);
    what = ['/dev/zero', 'a FIFO', 'a directory', 'an empty file', 'a 4 GB sparse file'][special];
    if (special === 0) file = '/dev/zero';
    else if (special === 1) execFileSync('mkfifo', [file]);
    else if (special === 2) fs.mkdirSync(file);
    else if (special === 3) fs.writeFileSync(file, '');
    else {
      fs.writeFileSync(file, '');
      fs.truncateSync(file, 2 ** 32);
    }
  }
  let g;
  try {
    g = (await gateRunDir(fx.runDir, { deviceBound: runDeviceBounds(readManifest(fx.runDir)), baseline: file, shipped: false })).verdict;
  } catch (e) {
    return classifyError(e, [file], what);
  }
  const changed = caseChanges(orig.json.case, parsed);
  if (g.exitCode === 0 && changed.length) return { outcome: 'misleading', detail: `${what}: gate passed a baseline whose ${changed.join(', ')} differ from the run's` };
  return { outcome: 'ok', detail: `${what}: exit ${g.exitCode}` };
}

// ---- ds4 dump directory ----

/**
 * ds4 dumps: a hard-linked copy of a ds4 dump directory with 1-3 files renamed, resized, replaced or
 * duplicated, through `importDs4Dumps` with the model's config and the prompt tokens (as `engine` and
 * `import -m --tokens` run it), then the imported dump read back. Misleading: a record imported from a
 * file that is not a regular file, or at a layer or position outside the model and limits, or with a
 * size that is not its stage's, or a file that cannot be imported not named as rejected. A case with
 * files rejected by name (the rest imported) is a refusal: `import` exits 3 on it.
 */
async function ds4dumpCase(r: Rand, fx: Fixtures, work: string, cfg: Ds4Config): Promise<CaseResult> {
  const src = path.dirname(fx.dumpPrefix);
  const base = path.basename(fx.dumpPrefix);
  const dir = path.join(work, 'dumps');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir);
  const names = fs.readdirSync(src).sort();
  for (const n of names) fs.linkSync(path.join(src, n), path.join(dir, n));
  const T = fx.dumpTokens.length;
  const unreadable = new Set<string>();
  const whats: string[] = [];
  const nm = (layer: number | string, pos: number | string, stage: string, ext: string) => `${base}_${stage}-${layer}_pos${pos}.${ext}`;
  for (let k = 1 + r.int(3); k > 0; k--) {
    const victim = r.pick(names);
    const f = path.join(dir, victim);
    // only regular files are mutated further (reading a FIFO made by an earlier mutation would block)
    if (!fs.lstatSync(f, { throwIfNoEntry: false })?.isFile()) continue;
    const m = /^.*?_(.+)-(\d+)_pos(\d+)\.(bin|i32)$/.exec(victim)!;
    const [stage, layer, pos, ext] = [m[1], Number(m[2]), Number(m[3]), m[4]];
    const kind = r.int(9);
    if (kind === 0) {
      const to = nm(r.pick([layer, cfg.nLayer + 1, 2 ** 31, 4294967296, '99999999999', '0000000000000']), r.pick([pos, T, T + 7, 4095, 4096, 2 ** 31, 4294967296 + pos, '99999999999']), stage, ext);
      if (to === victim) continue;
      fs.rmSync(path.join(dir, to), { force: true, recursive: true });
      unreadable.delete(to);
      fs.renameSync(f, path.join(dir, to));
      whats.push(`rename ${victim} -> ${to}`);
    } else if (kind === 1) {
      const to = Buffer.concat([Buffer.from(path.join(dir, `${base}_${stage}-${layer}_pos`)), Buffer.from([0xff, 0xc0 + r.int(8)]), Buffer.from(`.${ext}`)]);
      fs.renameSync(f, to);
      whats.push(`rename ${victim} to a non-UTF-8 name`);
    } else if (kind === 2) {
      const len = fs.statSync(f).size;
      const to = r.pick([0, 1, 3, 4, len - 4, Math.floor(len / 2), len + 4, 2 * len, 3 * len + 4]);
      const data = Buffer.alloc(Math.max(0, to));
      fs.readFileSync(f).copy(data);
      fs.unlinkSync(f);
      fs.writeFileSync(f, data);
      whats.push(`${victim}: ${len} -> ${to} bytes`);
    } else if (kind === 3) {
      fs.unlinkSync(f);
      const how = r.int(3);
      if (how === 0) fs.symlinkSync(path.join(src, r.pick(names)), f);
      else if (how === 1) execFileSync('mkfifo', [f]);
      else fs.mkdirSync(f);
      unreadable.add(victim);
      whats.push(`${victim} is now a ${['symlink', 'FIFO', 'directory'][how]}`);
    } else if (kind === 4) {
      const to = nm(layer, r.pick([pos + 1, pos === 0 ? 1 : pos - 1, T - 1]), stage, ext);
      if (to === victim) continue;
      fs.rmSync(path.join(dir, to), { force: true, recursive: true });
      fs.copyFileSync(f, path.join(dir, to));
      unreadable.delete(to);
      whats.push(`copy ${victim} -> ${to}`);
    } else if (kind === 5) {
      const to = nm(layer, pos, stage, ext === 'bin' ? 'i32' : 'bin');
      fs.rmSync(path.join(dir, to), { force: true, recursive: true });
      unreadable.delete(to);
      fs.renameSync(f, path.join(dir, to));
      whats.push(`rename ${victim} -> ${to}`);
    } else if (kind === 6) {
      const len = fs.statSync(f).size;
      fs.unlinkSync(f);
      fs.writeFileSync(f, Buffer.from(Array.from({ length: len }, () => r.int(256))));
      whats.push(`${victim}: random bytes`);
    } else if (kind === 7) {
      const to = nm(r.pick([0, 1, 2, cfg.nLayer]), r.pick([0, 1, T - 1]), r.pick(['Qcur', 'result_output', 'raw_cache', 'ffn_moe_topk', 'attn_unknown_x']), ext);
      if (to === victim) continue;
      fs.rmSync(path.join(dir, to), { force: true, recursive: true });
      fs.copyFileSync(f, path.join(dir, to));
      unreadable.delete(to);
      whats.push(`copy ${victim} -> ${to}`);
    } else {
      fs.unlinkSync(f);
      whats.push(`remove ${victim}`);
    }
  }
  const what = whats.join('; ') || 'no change';
  const out = path.join(work, 'import.arrow');
  const rejected: string[] = [];
  let recs: StageRecord[] = [];
  try {
    const s = await importDs4Dumps(path.join(dir, base), {
      cfg, out, promptTokens: fx.dumpTokens, modelFingerprint: 'fuzz', version: 'fuzz', warn: () => {},
      onReject: (f) => rejected.push(path.basename(f.file)),
    });
    if (s.files) for await (const rec of iterateDump(out)) recs.push(rec);
  } catch (e) {
    return classifyError(e, [dir, out], what);
  }
  for (const u of unreadable) if (!rejected.includes(u)) return { outcome: 'misleading', detail: `${what}: ${u} was not rejected` };
  const ctx = cfg.contextLength || 1 << 20;
  for (const rec of recs) {
    const def = resolveStage(rec.stage);
    const where = `${rec.stage} layer ${rec.layer} pos ${rec.pos}`;
    if (rec.layer < 0 || rec.layer > cfg.nLayer || rec.pos < 0 || rec.pos >= ctx) return { outcome: 'misleading', detail: `${what}: imported ${where}, outside the model` };
    if (!def) continue;
    const one = def.shape(cfg, { layer: rec.layer, n: 1 }).reduce((a, b) => a * b, 1);
    const two = def.shape(cfg, { layer: rec.layer, n: 2 }).reduce((a, b) => a * b, 1);
    const fits = one === two ? rec.values.length === one : rec.values.length > 0 && rec.values.length % (two - one) === 0;
    if (!fits) return { outcome: 'misleading', detail: `${what}: imported ${where} with ${rec.values.length} values, not its stage's shape` };
    if (def.dtype !== rec.dtype) return { outcome: 'misleading', detail: `${what}: imported ${where} as ${rec.dtype}` };
  }
  recs = [];
  // files rejected by name while the rest imports: what `import` refuses (exit 3) and `engine` sets aside
  return { outcome: rejected.length ? 'refused' : 'ok', detail: `${what}: ${rejected.length} rejected (${rejected.slice(0, 3).join(', ')})` };
}

let ds4Cfg: Ds4Config | undefined;

/** Runs case `i` of `reader` for `seed` in `work` (a directory of this worker's own). */
export async function fuzzCase(reader: Reader, fx: Fixtures, seed: number, i: number, work: string): Promise<CaseResult> {
  const r = rand(caseSeed(seed, reader, i));
  fs.mkdirSync(work, { recursive: true });
  try {
    switch (reader) {
      case 'gguf':
        return await ggufCase(r, fx, work);
      case 'arrow':
        return await arrowCase(r, fx, work);
      case 'baseline':
        return await baselineCase(r, fx, work);
      case 'ds4dump': {
        if (!ds4Cfg) {
          const { model, cfg } = await loadModel(fx.model);
          model.close();
          ds4Cfg = cfg;
        }
        return await ds4dumpCase(r, fx, work, ds4Cfg);
      }
    }
  } catch (e) {
    // the mutation itself failed, or a path escaped its own classification
    return { outcome: 'internal', detail: `harness: ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' ') ?? String(e)}` };
  }
}
