// A capture sink: one side of a run streamed into `<dir>/<side>.arrow`, with a running per-stage
// summary (min/max/rms/NaN) for the terminal. Every open sink is aborted on Ctrl-C, so an
// interrupted run leaves only temp files, never a dump that looks complete.
import type { StageRecord, Tap } from '../model/stages.ts';
import { DUMP_FORMAT_VERSION, DumpWriter, sideFileName, type DumpMeta } from './dump.ts';
import { join } from 'node:path';

export interface StageStats {
  stage: string;
  records: number;
  values: number;
  min: number;
  max: number;
  sumSq: number;
  nonFinite: number;
}

export interface CaptureSink {
  side: string;
  file: string;
  tap: Tap;
  stats: Map<string, StageStats>;
  close(): Promise<void>;
  abort(): Promise<void>;
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

const open = new Set<CaptureSink>();
let hooked = false;

function hookInterrupt(): void {
  if (hooked) return;
  hooked = true;
  process.once('SIGINT', () => {
    const pending = [...open].map((s) => s.abort());
    void Promise.allSettled(pending).then(() => {
      process.stderr.write('\nds4-diff: interrupted; partial dumps removed, the run manifest stays incomplete\n');
      process.exit(130);
    });
  });
}

export async function openCapture(dir: string, side: string, meta: Omit<DumpMeta, 'side' | 'formatVersion'>): Promise<CaptureSink> {
  const fileName = sideFileName(side);
  const w = await DumpWriter.open(join(dir, fileName), { ...meta, formatVersion: DUMP_FORMAT_VERSION, side, createdAt: meta.createdAt ?? new Date().toISOString() });
  const stats = new Map<string, StageStats>();
  const tap: Tap = (rec: StageRecord) => {
    accumulateStats(stats, rec);
    w.write(rec);
  };
  const sink: CaptureSink = {
    side,
    file: fileName,
    tap,
    stats,
    async close() {
      open.delete(sink);
      await w.close();
    },
    async abort() {
      open.delete(sink);
      await w.abort();
    },
  };
  open.add(sink);
  hookInterrupt();
  return sink;
}
