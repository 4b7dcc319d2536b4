// A capture sink: one side of a run streamed into `<dir>/<side>.arrow`, with a running per-stage
// summary (min/max/rms/NaN) for the terminal. A capture plan (diff/plan.ts) decides which rows are written in
// full and which as statistics only; the summary always sees the full values. Every open sink is aborted on SIGINT/SIGTERM
// (diff/cancel.ts), so an interrupted run leaves no temp file and never a dump that looks complete.
import { cancelledError, onCancel } from './cancel.ts';
import type { StageRecord, Tap } from '../model/stages.ts';
import { DUMP_FORMAT_VERSION, DumpWriter, sideFileName, type DumpMeta } from './dump.ts';
import type { CapturePlan } from './plan.ts';
import { statsCaptureRecord } from './stats.ts';
import { accumulateStats, type StageStats } from './summary.ts';
import { join } from 'node:path';

export interface CaptureSink {
  side: string;
  file: string;
  tap: Tap;
  stats: Map<string, StageStats>;
  close(): Promise<void>;
  abort(): Promise<void>;
}

/** What a capture of `side` under `plan` writes of a row: the row itself, or what a stats capture keeps of it. */
export function capturedRecord(side: string, plan: CapturePlan | undefined, rec: StageRecord): StageRecord {
  return !plan || plan.full(rec.stage, rec.layer, rec.pos) ? rec : statsCaptureRecord(side, rec);
}

export async function openCapture(dir: string, side: string, meta: Omit<DumpMeta, 'side' | 'formatVersion'>, plan?: CapturePlan): Promise<CaptureSink> {
  const fileName = sideFileName(side);
  const w = await DumpWriter.open(join(dir, fileName), { ...meta, formatVersion: DUMP_FORMAT_VERSION, side, createdAt: meta.createdAt ?? new Date().toISOString(), capture: plan?.meta ?? meta.capture });
  const stats = new Map<string, StageStats>();
  const tap: Tap = (rec: StageRecord) => {
    // after a signal aborted the writer, the next capture ends the run (no cancellation point needed)
    const stop = cancelledError();
    if (stop) throw stop;
    accumulateStats(stats, rec);
    w.write(capturedRecord(side, plan, rec));
  };
  // the writer's abort is synchronous: the temp file is gone before the signal handler returns, and a
  // sink still open when the process exits (an error ended the run) leaves no temp file either
  const abortNow = () => void w.abort();
  const unhookCancel = onCancel(abortNow);
  process.on('exit', abortNow);
  const unhook = () => {
    unhookCancel();
    process.off('exit', abortNow);
  };
  const sink: CaptureSink = {
    side,
    file: fileName,
    tap,
    stats,
    async close() {
      unhook();
      await w.close();
    },
    async abort() {
      unhook();
      await w.abort();
    },
  };
  return sink;
}
