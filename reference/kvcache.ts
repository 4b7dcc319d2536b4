// ds4.c keeps KV cache rows in f16 (catalog S6/S7/S8, `kv_cache_push_raw`, `kv_cache_push_comp`): a row
// as the attention later reads it is its f16 round trip. A storage format, so a quantization point:
// applied in both precisions.
import { f16Margin, f16Round, noteTie, type RoundingMargins } from '../model/quant/index.ts';
import type { Precision, Vec } from './types.ts';
import { allocVec } from './types.ts';

/**
 * The row as the cache stores it. `margins`: each element's f16 rounding decision is noted — unless the
 * element already went through a coarser decision (an FP8 or FP4 code, exact in f16): a kernel can only
 * move it by moving that code, so that decision is the one that counts.
 */
export function cacheStore(row: Vec, p: Precision, margins?: RoundingMargins): Vec {
  const out = allocVec(p, row.length);
  for (let i = 0; i < row.length; i++) {
    if (margins && margins.tie[i] === Infinity) noteTie(margins, i, ...f16Margin(row[i]));
    out[i] = f16Round(row[i]);
  }
  return out;
}
