// Import of ds4 engine graph dumps into our Arrow format. With DS4_METAL_GRAPH_DUMP_PREFIX=P, ds4.c's
// metal_graph_debug_dump_tensor / _i32_tensor write `P_<name>-<layer>_pos<pos>.bin` (raw f32) and
// `.i32` (raw int32), host byte order (little-endian on every ds4 target). Facts of that dump (catalog §8):
//   * `<name>` is the graph name (hc_attn_pre, Qcur, ffn_moe_topk, result_output, ...), mapped here to
//     the canonical stage through the registry's aliases; unknown names are kept under their own name.
//   * the output head (result_*) is dumped with layer = n_layer and pos = 0, and rewritten at every head
//     ds4 evaluates (`-n N`: the prompt's last position, then each decode step): with the evaluated tokens
//     known it is placed at the last one, where the file's head was computed (evaluatedTokens recovers the
//     tokens ds4 fed back itself from its own layer-0 dumps).
//   * prefill dumps hold all n_tokens rows of the batch starting at <pos>; they are split into one
//     record per position when the file is a whole multiple of the stage's per-position size.
//   * stages whose size depends on a count (raw_cache rows, indexer candidates) become one record.
// Only files found by listing the prefix's directory are read; a dump name is never used as a path.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Ds4DiffError, EXIT, badInput } from '../model/errors.ts';
import type { Ds4Config } from '../model/config.ts';
import { resolveStage, type StageDef } from '../model/stages.ts';
import { DUMP_FORMAT_VERSION, DumpWriter } from './dump.ts';

export interface ImportOptions {
  cfg?: Ds4Config;
  out: string;
  promptTokens?: number[];
  modelFingerprint?: string;
  /** project version for the producer field */
  version?: string;
  /** warnings go here (default: stderr) */
  warn?: (msg: string) => void;
  /**
   * A file that cannot be imported (its name, its kind, its size or dtype does not fit its stage) is
   * reported here and left out (the rest is imported) instead of failing the import; with every file
   * rejected nothing is written.
   */
  onReject?: (f: DumpFile, reason: string) => void;
}

/** A dump file that does not fit its stage (size, dtype): one line naming the file. */
class DumpRejected extends Ds4DiffError {
  constructor(readonly file: string, readonly reason: string) {
    super(`${file}: ${reason}`, EXIT.badInput);
  }
}

export interface ImportSummary {
  /** files imported (rejected ones not counted) */
  files: number;
  records: number;
  unknown: string[];
}

export interface DumpFile {
  /** the path, for messages (a file name that is not UTF-8 shows U+FFFD where its bytes were) */
  file: string;
  /** the path as bytes, for the file system (exact, whatever the name's encoding) */
  path: Buffer;
  /** the file name's bytes */
  base: Buffer;
  name: string;
  layer: number;
  pos: number;
  dtype: 'f32' | 'i32';
  /** set when the name itself cannot be imported (not UTF-8, a layer or position out of range) */
  problem?: string;
}

const DUMP_NAME = /^(.+)-(\d+)_pos(\d+)\.(bin|i32)$/;
// without prompt tokens or a model's context_length, positions are limited to DS4 Flash's context
export const MAX_POSITIONS = 1 << 20;
// one dump file is read whole: more than this cannot be one stage of one batch, whatever the model
const MAX_FILE_BYTES = 2 ** 32 - 1;
// without a model nothing bounds a file by its stage's shape: keep flat imports small
const MAX_FLAT_BYTES = 1 << 28;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The ds4 dump files of a prefix, sorted by layer, position and name. Names that look like dumps but
 * cannot be imported (not UTF-8, numbers beyond int32) are listed with a `problem`, never dropped.
 */
export function listDs4Dumps(prefix: string): DumpFile[] {
  const dir = path.dirname(prefix);
  const base = Buffer.from(path.basename(prefix) + '_');
  let names: Buffer[];
  try {
    names = fs.readdirSync(dir, { encoding: 'buffer' });
  } catch (e) {
    throw badInput(`${dir}: cannot list ds4 dump directory (${(e as NodeJS.ErrnoException).code})`);
  }
  const dirBytes = Buffer.from(dir + path.sep);
  const out: DumpFile[] = [];
  for (const n of names) {
    if (!n.subarray(0, base.length).equals(base)) continue;
    const where = { path: Buffer.concat([dirBytes, n]), base: n };
    let text: string;
    try {
      text = utf8.decode(n);
    } catch {
      const shown = path.join(dir, n.toString('utf8'));
      out.push({ ...where, file: shown, name: '', layer: -1, pos: -1, dtype: 'f32', problem: 'the file name is not valid UTF-8' });
      continue;
    }
    const m = DUMP_NAME.exec(text.slice(base.length));
    if (!m) continue;
    const f: DumpFile = { ...where, file: path.join(dir, text), name: m[1], layer: Number(m[2]), pos: Number(m[3]), dtype: m[4] === 'bin' ? 'f32' : 'i32' };
    // ds4 prints layer and pos as C ints: anything beyond int32 is not a ds4 dump (it would wrap)
    if (m[2].length > 10 || f.layer > 2 ** 31 - 1) f.problem = `layer ${m[2]} in the file name is beyond any layer`;
    else if (m[3].length > 10 || f.pos > 2 ** 31 - 1) f.problem = `pos ${m[3]} in the file name is beyond any position`;
    out.push(f);
  }
  out.sort((a, b) => a.layer - b.layer || a.pos - b.pos || Buffer.compare(a.base, b.base));
  return out;
}

const product = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** How far positions may go: the prompt (when known) bounds a prefill batch; the model's context (or DS4 Flash's) any position. */
interface Limits {
  positions: number;
  positionsWhy: string;
  prompt?: number;
}

function limitsOf(o: ImportOptions): Limits {
  const ctx = o.cfg?.contextLength;
  const l: Limits = ctx ? { positions: ctx, positionsWhy: `the model's context_length ${ctx}` } : { positions: MAX_POSITIONS, positionsWhy: `the position limit ${MAX_POSITIONS}` };
  if (o.promptTokens?.length) l.prompt = o.promptTokens.length;
  return l;
}

/** Per-position shape, or how a count-dependent stage's shape is formed from an element count. */
function shapeOf(def: StageDef, cfg: Ds4Config, layer: number, elements: number, file: string, lim: Limits): { shape: number[]; rows: number } {
  const one = def.shape(cfg, { layer, n: 1 });
  const two = def.shape(cfg, { layer, n: 2 });
  if (product(one) !== product(two)) {
    // count-dependent: the count `n` is whatever makes the element count fit
    const per = product(two) - product(one);
    if (per === 0 || elements % per !== 0) throw new DumpRejected(file, `${elements} values do not fit stage ${def.name} (a multiple of ${per} expected)`);
    const n = elements / per;
    if (n > lim.positions) throw new DumpRejected(file, `${n} rows of stage ${def.name} are more than ${lim.positionsWhy} allows`);
    return { shape: def.shape(cfg, { layer, n }), rows: 1 };
  }
  const per = product(one);
  if (per === 0 || elements % per !== 0 || elements === 0) {
    throw new DumpRejected(file, `${elements} values do not fit stage ${def.name} of shape [${one}] (${per} values per position)`);
  }
  return { shape: one, rows: elements / per };
}

/** Values of one position (or one row of a count-dependent stage): bounds a file before it is read. */
function valuesPerRow(def: StageDef, cfg: Ds4Config, layer: number): { per: number; counted: boolean } {
  const one = product(def.shape(cfg, { layer, n: 1 })), two = product(def.shape(cfg, { layer, n: 2 }));
  return one !== two ? { per: two - one, counted: true } : { per: one, counted: false };
}

/** The largest file `f` can be: its stage's rows up to the prompt's end or the position limit. */
function maxBytes(def: StageDef | undefined, cfg: Ds4Config | undefined, f: DumpFile, lim: Limits): { bytes: number; why: string } {
  if (!def || !cfg) return { bytes: MAX_FLAT_BYTES, why: `${MAX_FLAT_BYTES} bytes, the most imported without a model (-m) to check it against` };
  const { per, counted } = valuesPerRow(def, cfg, f.layer);
  // the head is one row; a prefill batch holds at most the prompt's positions from its first one
  const toPromptEnd = !counted && def.scope !== 'head' && lim.prompt !== undefined;
  const rows = counted ? lim.positions : def.scope === 'head' ? 1 : toPromptEnd ? Math.max(1, lim.prompt! - f.pos) : Math.max(1, lim.positions - f.pos);
  const bytes = Math.min(MAX_FILE_BYTES, 4 * per * rows);
  return { bytes, why: `${bytes} bytes: ${rows} ${counted ? 'rows' : def.scope === 'head' ? 'row (the output head)' : 'positions'} of stage ${def.name} (${per} values each)${toPromptEnd ? ` from pos ${f.pos} to the end of the ${lim.prompt}-token prompt` : ''}` };
}

/** Layer and position of a file name against the model and the limits (before anything is read). */
function checkPlace(def: StageDef | undefined, cfg: Ds4Config | undefined, f: DumpFile, lim: Limits): void {
  if (cfg) {
    if (def?.scope === 'layer' && f.layer >= cfg.nLayer) throw new DumpRejected(f.file, `layer ${f.layer}: the model has layers 0..${cfg.nLayer - 1}`);
    if (def?.scope === 'head' && f.layer !== cfg.nLayer) throw new DumpRejected(f.file, `layer ${f.layer}: ds4 dumps the output head as layer n_layer (${cfg.nLayer})`);
    if (!def && f.layer > cfg.nLayer) throw new DumpRejected(f.file, `layer ${f.layer}: the model has layers 0..${cfg.nLayer - 1} and the head at ${cfg.nLayer}`);
  }
  if (f.pos >= lim.positions) throw new DumpRejected(f.file, `pos ${f.pos} is beyond ${lim.positionsWhy}`);
}

/**
 * Where a dump file's values belong: (pos, shape, values) records. ds4 dumps one batch per file, so:
 *   * the head (computed for the last prompt token) is dumped at pos 0: placed at the last prompt position;
 *   * per-position stages of a prefill batch hold n_tokens rows from <pos>: one record per position;
 *   * raw_cache of a prefill batch from pos 0 holds the ring's first n_raw rows = positions 0..n_raw-1
 *     (ds4.c metal_graph_raw_span_for_batch: no wrap before raw_cap): the window as of the batch's last
 *     position, which is where the reference captures it — placed there, its last sliding-window rows;
 *   * compressed rows (KVcompress, indexer_KVcompress) of a prefill batch starting at a window boundary
 *     hold that batch's closed windows, window pos/ratio first (zero_prefix and aligned_chunk paths):
 *     window w is emitted at pos (w+1)·ratio − 1; a single row dumped at a window's last position (the
 *     decode path) stays there.
 */
function placeRows(def: StageDef | undefined, cfg: Ds4Config | undefined, f: DumpFile, values: Float32Array | Int32Array, tokens: number[] | undefined, lim: Limits): Array<{ pos: number; shape: number[]; values: Float32Array | Int32Array }> {
  if (!def || !cfg) return [{ pos: f.pos, shape: [values.length], values }];
  const { shape, rows } = shapeOf(def, cfg, f.layer, values.length, f.file, lim);
  // ds4 dumps the head once, for the last token: one row
  if (def.scope === 'head' && rows !== 1) throw new DumpRejected(f.file, `${values.length} values are ${rows} rows of stage ${def.name}; ds4 dumps the output head as one row`);
  if (def.scope === 'head' && tokens?.length) return [{ pos: tokens.length - 1, shape, values }];
  if (def.name === 'raw_cache' && f.pos === 0) {
    const n = shape[0], keep = Math.min(n, cfg.slidingWindow), D = shape[1];
    return [{ pos: n - 1, shape: [keep, D], values: values.slice((n - keep) * D) }];
  }
  // a layer's row at a position past the evaluated tokens belongs to no token the reference can run
  if (lim.prompt !== undefined && f.pos >= lim.prompt) {
    throw new DumpRejected(f.file, `pos ${f.pos}: the run evaluated positions 0..${lim.prompt - 1} (the tokens known and recovered from the layer-0 dumps); this position has no token`);
  }
  // a prefill batch holds the batch's rows: never more than the prompt has from its first position
  if (rows > 1 && lim.prompt !== undefined && f.pos + rows > lim.prompt) {
    throw new DumpRejected(f.file, `${values.length} values are ${rows} positions of stage ${def.name} from pos ${f.pos}, past the end of the ${lim.prompt}-token prompt`);
  }
  const per = values.length / rows;
  const ratio = cfg.compressRatios[f.layer];
  const windowed = (def.name === 'attn_comp_row' || def.name === 'index_comp_row') && ratio > 0;
  const posOf = (r: number) => (windowed && f.pos % ratio === 0 ? (f.pos / ratio + r + 1) * ratio - 1 : f.pos + r);
  const last = posOf(rows - 1);
  if (last >= lim.positions) throw new DumpRejected(f.file, `${rows} rows of stage ${def.name} from pos ${f.pos} reach pos ${last}, beyond ${lim.positionsWhy}`);
  return Array.from({ length: rows }, (_, r) => ({ pos: posOf(r), shape, values: values.slice(r * per, (r + 1) * per) }));
}

/**
 * A dump file's values, read only from a regular file (never through a symbolic link, never a FIFO
 * that would block, a device or a directory) whose size fits its stage before a byte is read.
 */
function readValues(f: DumpFile, limit: { bytes: number; why: string }): Float32Array | Int32Array {
  let fd: number;
  try {
    fd = fs.openSync(f.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new DumpRejected(f.file, 'is a symbolic link; not read');
    throw new DumpRejected(f.file, `cannot be opened (${code})`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new DumpRejected(f.file, `is ${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : 'not a regular file'}; not read`);
    if (st.size === 0) throw new DumpRejected(f.file, 'is empty (0 bytes)');
    if (st.size % 4 !== 0) throw new DumpRejected(f.file, `${st.size} bytes is not a whole number of 4-byte ${f.dtype} values`);
    if (st.size > limit.bytes) throw new DumpRejected(f.file, `${st.size} bytes is more than it can hold (at most ${limit.why}); not read`);
    const copy = new ArrayBuffer(st.size);
    const bytes = new Uint8Array(copy);
    let done = 0;
    while (done < st.size) {
      const n = fs.readSync(fd, bytes, done, st.size - done, done);
      if (n === 0) throw new DumpRejected(f.file, `shrank while being read (${done} of ${st.size} bytes)`);
      done += n;
    }
    return f.dtype === 'f32' ? new Float32Array(copy) : new Int32Array(copy);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Converts a prefix's ds4 dumps to one Arrow dump (side 'ds4-import'). Each file is checked before it
 * is trusted — its name (UTF-8, layer and position within the model and the limits), its kind (a
 * regular file), its size and dtype (its stage's shape), its rows (not already imported from another
 * file) — and one that fails is rejected by name (`onReject`) while the rest imports.
 */
export async function importDs4Dumps(prefix: string, opts: ImportOptions): Promise<ImportSummary> {
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`ds4-diff: warning: ${m}\n`));
  const files = listDs4Dumps(prefix);
  if (!files.length) throw badInput(`${prefix}: no ds4 dump files (${path.basename(prefix)}_<name>-<layer>_pos<pos>.bin or .i32) found`);
  if (!opts.cfg) warn('no model given (-m): stage shapes are not checked and values are stored flat');
  const lim = limitsOf(opts);
  const writer = await DumpWriter.open(opts.out, {
    formatVersion: DUMP_FORMAT_VERSION,
    modelFingerprint: opts.modelFingerprint ?? 'unknown',
    promptTokens: opts.promptTokens ?? [],
    producer: { backend: 'ds4', options: { prefix: path.basename(prefix) }, version: opts.version ?? 'unknown' },
    side: 'ds4-import',
  });
  const unknown = new Set<string>();
  // (stage, layer, pos) -> the file that gave it: two files must not claim one row
  const seen = new Map<string, string>();
  let records = 0, accepted = 0;
  try {
    let lastLayer = -1;
    for (const f of files) {
      const def = f.problem ? undefined : resolveStage(f.name);
      const stage = def?.name ?? f.name;
      let parts: ReturnType<typeof placeRows>;
      try {
        if (f.problem) throw new DumpRejected(f.file, f.problem);
        if (def && def.dtype !== f.dtype) throw new DumpRejected(f.file, `stage ${def.name} is ${def.dtype} but the file is ${f.dtype}`);
        checkPlace(def, opts.cfg, f, lim);
        parts = placeRows(def, opts.cfg, f, readValues(f, maxBytes(def, opts.cfg, f, lim)), opts.promptTokens, lim);
        const dup = parts.find((p) => seen.has(`${stage}/${f.layer}/${p.pos}`));
        if (dup) throw new DumpRejected(f.file, `holds ${stage} layer ${f.layer} pos ${dup.pos}, which ${path.basename(seen.get(`${stage}/${f.layer}/${dup.pos}`)!)} already gave`);
      } catch (e) {
        if (!(e instanceof DumpRejected && opts.onReject)) throw e;
        opts.onReject(f, e.reason);
        continue;
      }
      if (!def && !unknown.has(f.name)) {
        unknown.add(f.name);
        warn(`ds4 dump name '${f.name}' is not a known stage; kept under its own name`);
      }
      if (f.layer !== lastLayer) await writer.flush();
      lastLayer = f.layer;
      for (const part of parts) {
        seen.set(`${stage}/${f.layer}/${part.pos}`, f.file);
        writer.write({ stage, layer: f.layer, pos: part.pos, token: opts.promptTokens?.[part.pos] ?? -1, dtype: f.dtype, shape: part.shape, values: part.values });
        records++;
      }
      accepted++;
    }
    if (accepted === 0) await writer.abort();
    else await writer.close();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  return { files: accepted, records, unknown: [...unknown] };
}

/** A token recovered from a layer-0 dump, and how sure: the cosine of its embedding row with the dumped row, and the runner-up's. */
export interface RecoveredToken {
  pos: number;
  id: number;
  cosine: number;
  runnerUp: number;
}

/** A recovered token's embedding row must be parallel to the dumped row to f32 precision, and no other row close. */
const RECOVERY_COSINE = 1 - 1e-6;

/**
 * Every token a ds4 run evaluated, 0..lastPos (or to the last position its layer-0 dumps hold, when some
 * past `given` were recovered and a later one is missing): the `given` ones, then the ones it fed back itself (ds4
 * `-n N` prints the generated text, not its ids, and overwrites the head's dump at every step). Each is
 * recovered from the run's own layer-0 dump of attn_cur (ds4 `hc_attn_pre`) at its position: at layer 0
 * the four HC streams all hold the token's embedding row, so attn_cur is that row times the sum of the
 * HC pre weights — parallel to exactly one row of token_embd, found by scanning the vocabulary.
 */
export function evaluatedTokens(prefix: string, embeddingRow: (id: number) => Float32Array, cfg: Ds4Config, given: number[], lastPos: number): { tokens: number[]; recovered: RecoveredToken[] } {
  const tokens = [...given];
  const recovered: RecoveredToken[] = [];
  const name = resolveStage('attn_cur')!.aliases.graph![0];
  const files = new Map(listDs4Dumps(prefix).filter((f) => f.name === name && f.layer === 0 && !f.problem).map((f) => [f.pos, f]));
  const norms = new Float64Array(cfg.nVocab);
  for (let pos = tokens.length; pos <= lastPos; pos++) {
    const f = files.get(pos);
    // the tokens end where the layer-0 dumps do: a dump past them (a stray file, a head dumped once too
    // often) is at a position the run did not evaluate, and the import rejects it by name
    if (!f && recovered.length) break;
    if (!f) throw badInput(`${prefix}: the run evaluated position ${pos}, past the ${tokens.length} tokens known, and its token can only be recovered from the layer-0 ${name} dump at that position, which is not there; give every evaluated token with --tokens`);
    const row = readValues(f, { bytes: 4 * cfg.nEmbd, why: `one row of ${cfg.nEmbd} values` });
    if (row.length !== cfg.nEmbd || row instanceof Int32Array) throw badInput(`${f.file}: ${row.length} values, not one row of ${cfg.nEmbd}`);
    let rn = 0;
    for (const v of row) rn += v * v;
    let best = { id: -1, cosine: -Infinity }, runnerUp = -Infinity;
    for (let id = 0; id < cfg.nVocab; id++) {
      const e = embeddingRow(id);
      let d = 0, en = norms[id];
      if (!en) {
        for (const v of e) en += v * v;
        norms[id] = en;
      }
      for (let i = 0; i < e.length; i++) d += e[i] * row[i];
      const c = en && rn ? d / Math.sqrt(en * rn) : 0;
      if (c > best.cosine) [runnerUp, best] = [best.cosine, { id, cosine: c }];
      else if (c > runnerUp) runnerUp = c;
    }
    if (!(best.cosine >= RECOVERY_COSINE) || runnerUp >= RECOVERY_COSINE) {
      throw badInput(`${f.file}: is not one token's embedding times a weight (best token ${best.id} at cosine ${best.cosine.toFixed(9)}, next ${runnerUp.toFixed(9)}); cannot recover the token fed at position ${pos}: give every evaluated token with --tokens`);
    }
    tokens.push(best.id);
    recovered.push({ pos, id: best.id, cosine: best.cosine, runnerUp });
  }
  return { tokens, recovered };
}

/**
 * Refuses tokens that are not the ones a ds4 run evaluated, where its layer-0 dumps of attn_cur (ds4
 * `hc_attn_pre`) show them: at layer 0 that row is the token's embedding row times a weight (see
 * evaluatedTokens), for each position a decode file holds, or a prefill batch file from its first position.
 * A reference run on other tokens would blame the device's first layer for the difference.
 */
export function checkEvaluatedTokens(prefix: string, embeddingRow: (id: number) => Float32Array, cfg: Ds4Config, tokens: number[]): void {
  const name = resolveStage('attn_cur')!.aliases.graph![0];
  const n = cfg.nEmbd;
  for (const f of listDs4Dumps(prefix)) {
    if (f.name !== name || f.layer !== 0 || f.problem || f.pos >= tokens.length) continue;
    let rows: Float32Array | Int32Array;
    try {
      rows = readValues(f, { bytes: 4 * n * (tokens.length - f.pos), why: `${tokens.length - f.pos} rows of ${n} values` });
    } catch (e) {
      // a file that is not rows of this model is the import's to reject, by name
      if (e instanceof DumpRejected) continue;
      throw e;
    }
    if (rows instanceof Int32Array || rows.length % n !== 0) continue;
    for (let k = 0; k < rows.length / n; k++) {
      const pos = f.pos + k, id = tokens[pos];
      const c = cosine(embeddingRow(id), rows.subarray(k * n, (k + 1) * n));
      if (!(c >= RECOVERY_COSINE)) throw badInput(`${f.file}: position ${pos} is not token ${id}'s embedding times a weight (cosine ${c.toFixed(9)}): the run evaluated other tokens than [${tokens.join(',')}]`);
    }
  }
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    d += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? d / Math.sqrt(na * nb) : 0;
}

/** The last position a ds4 dump directory holds for a layer stage (a prefill batch file counts from its first position), or -1. */
export function lastDumpedPos(prefix: string): number {
  let last = -1;
  for (const f of listDs4Dumps(prefix)) if (!f.problem && resolveStage(f.name)?.scope === 'layer') last = Math.max(last, f.pos);
  return last;
}
