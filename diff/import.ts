// Import of ds4 engine graph dumps into our Arrow format. With DS4_METAL_GRAPH_DUMP_PREFIX=P, ds4.c's
// metal_graph_debug_dump_tensor / _i32_tensor write `P_<name>-<layer>_pos<pos>.bin` (raw f32) and
// `.i32` (raw int32), host byte order (little-endian on every ds4 target). Facts of that dump (catalog §8):
//   * `<name>` is the graph name (hc_attn_pre, Qcur, ffn_moe_topk, result_output, ...), mapped here to
//     the canonical stage through the registry's aliases; unknown names are kept under their own name.
//   * the output head (result_*) is dumped with layer = n_layer and pos = 0; with the prompt tokens known
//     it is placed at the last prompt position, where the reference computes it.
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
   * A file whose size or dtype does not fit its stage is reported here and left out (the rest is
   * imported) instead of failing the import; with every file rejected nothing is written.
   */
  onReject?: (file: string, reason: string) => void;
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

interface DumpFile {
  file: string;
  name: string;
  layer: number;
  pos: number;
  dtype: 'f32' | 'i32';
}

const DUMP_NAME = /^(.+)-(\d+)_pos(\d+)\.(bin|i32)$/;

/** The ds4 dump files of a prefix, sorted by layer, position and name. */
export function listDs4Dumps(prefix: string): DumpFile[] {
  const dir = path.dirname(prefix);
  const base = path.basename(prefix) + '_';
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    throw badInput(`${dir}: cannot list ds4 dump directory (${(e as NodeJS.ErrnoException).code})`);
  }
  const out: DumpFile[] = [];
  for (const n of names) {
    if (!n.startsWith(base)) continue;
    const m = DUMP_NAME.exec(n.slice(base.length));
    if (!m) continue;
    out.push({ file: path.join(dir, n), name: m[1], layer: Number(m[2]), pos: Number(m[3]), dtype: m[4] === 'bin' ? 'f32' : 'i32' });
  }
  out.sort((a, b) => a.layer - b.layer || a.pos - b.pos || (a.name < b.name ? -1 : 1));
  return out;
}

const product = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** Per-position shape, or how a count-dependent stage's shape is formed from an element count. */
function shapeOf(def: StageDef, cfg: Ds4Config, layer: number, elements: number, file: string): { shape: number[]; rows: number } {
  const one = def.shape(cfg, { layer, n: 1 });
  const two = def.shape(cfg, { layer, n: 2 });
  if (product(one) !== product(two)) {
    // count-dependent: the count `n` is whatever makes the element count fit
    const per = product(two) - product(one);
    if (per === 0 || elements % per !== 0) throw new DumpRejected(file, `${elements} values do not fit stage ${def.name} (a multiple of ${per} expected)`);
    return { shape: def.shape(cfg, { layer, n: elements / per }), rows: 1 };
  }
  const per = product(one);
  if (per === 0 || elements % per !== 0 || elements === 0) {
    throw new DumpRejected(file, `${elements} values do not fit stage ${def.name} of shape [${one}] (${per} values per position)`);
  }
  return { shape: one, rows: elements / per };
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
function placeRows(def: StageDef | undefined, cfg: Ds4Config | undefined, f: DumpFile, values: Float32Array | Int32Array, tokens: number[] | undefined): Array<{ pos: number; shape: number[]; values: Float32Array | Int32Array }> {
  if (!def || !cfg) return [{ pos: f.pos, shape: [values.length], values }];
  const { shape, rows } = shapeOf(def, cfg, f.layer, values.length, f.file);
  if (def.scope === 'head' && tokens?.length) return [{ pos: tokens.length - 1, shape, values }];
  if (def.name === 'raw_cache' && f.pos === 0) {
    const n = shape[0], keep = Math.min(n, cfg.slidingWindow), D = shape[1];
    return [{ pos: n - 1, shape: [keep, D], values: values.slice((n - keep) * D) }];
  }
  const per = values.length / rows;
  const ratio = cfg.compressRatios[f.layer];
  const windowed = (def.name === 'attn_comp_row' || def.name === 'index_comp_row') && ratio > 0;
  const posOf = (r: number) => (windowed && f.pos % ratio === 0 ? (f.pos / ratio + r + 1) * ratio - 1 : f.pos + r);
  return Array.from({ length: rows }, (_, r) => ({ pos: posOf(r), shape, values: values.slice(r * per, (r + 1) * per) }));
}

function readValues(file: string, dtype: 'f32' | 'i32'): Float32Array | Int32Array {
  const buf = fs.readFileSync(file);
  if (buf.byteLength % 4 !== 0) throw new DumpRejected(file, `${buf.byteLength} bytes is not a whole number of 4-byte ${dtype} values`);
  const copy = new ArrayBuffer(buf.byteLength);
  new Uint8Array(copy).set(buf);
  return dtype === 'f32' ? new Float32Array(copy) : new Int32Array(copy);
}

/** Converts a prefix's ds4 dumps to one Arrow dump (side 'ds4-import'). */
export async function importDs4Dumps(prefix: string, opts: ImportOptions): Promise<ImportSummary> {
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`ds4-diff: warning: ${m}\n`));
  const files = listDs4Dumps(prefix);
  if (!files.length) throw badInput(`${prefix}: no ds4 dump files (${path.basename(prefix)}_<name>-<layer>_pos<pos>.bin or .i32) found`);
  if (!opts.cfg) warn('no model given (-m): stage shapes are not checked and values are stored flat');
  const writer = await DumpWriter.open(opts.out, {
    formatVersion: DUMP_FORMAT_VERSION,
    modelFingerprint: opts.modelFingerprint ?? 'unknown',
    promptTokens: opts.promptTokens ?? [],
    producer: { backend: 'ds4', options: { prefix: path.basename(prefix) }, version: opts.version ?? 'unknown' },
    side: 'ds4-import',
  });
  const unknown = new Set<string>();
  let records = 0, accepted = 0;
  try {
    let lastLayer = -1;
    for (const f of files) {
      if (f.layer !== lastLayer) await writer.flush();
      lastLayer = f.layer;
      const def = resolveStage(f.name);
      if (!def && !unknown.has(f.name)) {
        unknown.add(f.name);
        warn(`ds4 dump name '${f.name}' is not a known stage; kept under its own name`);
      }
      let parts: ReturnType<typeof placeRows>;
      try {
        if (def && def.dtype !== f.dtype) throw new DumpRejected(f.file, `stage ${def.name} is ${def.dtype} but the file is ${f.dtype}`);
        parts = placeRows(def, opts.cfg, f, readValues(f.file, f.dtype), opts.promptTokens);
      } catch (e) {
        if (!(e instanceof DumpRejected && opts.onReject)) throw e;
        opts.onReject(e.file, e.reason);
        continue;
      }
      const stage = def?.name ?? f.name;
      for (const part of parts) {
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
