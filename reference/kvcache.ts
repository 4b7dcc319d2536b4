// Per-layer KV caches of ds4.c's CPU path (catalog S6/S7/S8, `kv_cache_init`, `kv_cache_push_raw`,
// `kv_cache_push_comp`): rows are stored f16-rounded (ds4 precision), the raw cache is a sliding
// window kept in chronological order, compressed caches only append.
import { badInput } from '../model/errors.ts';
import { f16Round } from '../model/quant/index.ts';
import type { Precision, Vec } from './types.ts';
import { allocVec } from './types.ts';

export interface RowCache {
  /** capacity in rows */
  cap: number;
  /** row width */
  dim: number;
  /** rows in use */
  n: number;
  /** cap * dim values, rows 0..n-1 valid, oldest first */
  rows: Vec;
  /** what the cache is, for error messages */
  label: string;
}

export function newRowCache(p: Precision, cap: number, dim: number, label: string): RowCache {
  return { cap, dim, n: 0, rows: allocVec(p, cap * dim), label };
}

/** The row as stored: every value rounded through f16 in ds4 precision, unchanged in f64. */
function storeRow(dst: Vec, off: number, row: Vec, dim: number, p: Precision): void {
  if (p === 'ds4') for (let i = 0; i < dim; i++) dst[off + i] = f16Round(row[i]);
  else for (let i = 0; i < dim; i++) dst[off + i] = row[i];
}

/** ds4.c `kv_cache_push_raw`: append; once full, drop the oldest row (slide by one). */
export function pushRaw(c: RowCache, row: Vec, p: Precision): void {
  if (c.n === c.cap) {
    c.rows.copyWithin(0, c.dim, c.cap * c.dim);
    c.n--;
  }
  storeRow(c.rows, c.n * c.dim, row, c.dim, p);
  c.n++;
}

/** ds4.c `kv_cache_push_comp`: append; running past the capacity is an error (ctx/ratio + 2 rows). */
export function pushComp(c: RowCache, row: Vec, p: Precision): void {
  if (c.n >= c.cap) throw badInput(`${c.label}: compressed KV cache capacity (${c.cap} rows) exceeded; raise the context length`);
  storeRow(c.rows, c.n * c.dim, row, c.dim, p);
  c.n++;
}

/** The valid rows [n, dim], oldest first (a view). */
export function cacheRows(c: RowCache): Vec {
  return c.rows.subarray(0, c.n * c.dim);
}

/** Row `i` as stored (a view). */
export function cacheRow(c: RowCache, i: number): Vec {
  return c.rows.subarray(i * c.dim, (i + 1) * c.dim);
}
