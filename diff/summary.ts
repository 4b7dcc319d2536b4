// The running per-stage summary (min/max/rms/NaN) a capture sink keeps and the reference command prints:
// a module of its own so that summarizing a run does not load the Arrow writer (diff/sink.ts).
import type { StageRecord } from '../model/stages.ts';

export interface StageStats {
  stage: string;
  records: number;
  values: number;
  min: number;
  max: number;
  sumSq: number;
  nonFinite: number;
}

/** Fold one record into per-stage min/max/rms/non-finite counts. */
export function accumulateStats(stats: Map<string, StageStats>, rec: StageRecord): void {
  let s = stats.get(rec.stage);
  if (!s) stats.set(rec.stage, (s = { stage: rec.stage, records: 0, values: 0, min: Infinity, max: -Infinity, sumSq: 0, nonFinite: 0 }));
  s.records++;
  for (const v of rec.values) {
    if (!Number.isFinite(v)) {
      s.nonFinite++;
      continue;
    }
    s.values++;
    if (v < s.min) s.min = v;
    if (v > s.max) s.max = v;
    s.sumSq += v * v;
  }
}
