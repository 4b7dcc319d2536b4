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
  // an index loop over locals: a for-of's iterator results were the most garbage of any one place in a
  // one-token run (the head's 129280 logits)
  const vs = rec.values;
  let values = 0, nonFinite = 0, min = s.min, max = s.max, sumSq = s.sumSq;
  for (let i = 0; i < vs.length; i++) {
    const v = vs[i];
    if (!Number.isFinite(v)) {
      nonFinite++;
      continue;
    }
    values++;
    if (v < min) min = v;
    if (v > max) max = v;
    sumSq += v * v;
  }
  s.values += values;
  s.nonFinite += nonFinite;
  s.min = min;
  s.max = max;
  s.sumSq = sumSq;
}
