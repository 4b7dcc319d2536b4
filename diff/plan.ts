// The capture plan of a run (issue 15: captures that scale): which rows every side keeps in full and which
// only as statistics (diff/stats.ts). One plan for all sides of a run — reference, its facts, the device
// free-running and teacher-forced — so a row is full on every side or on none.
//
//   full    every row in full (what the judge needs to judge every row by its own error)
//   stats   every row as statistics, except
//             - rows the judge always needs whole: the end result (logits, judged by KL / top-1 / Δp), the
//               choices (expert and indexer ids, judged id by id) and the scores they were chosen by (a different
//               choice passes only at a near tie of those scores), and rows no wider than their statistics;
//             - `--full STAGE[@LAYERS]` rows;
//             - the region around the first divergence, re-captured in full by a second pass (ascend/pipeline.ts).
//   auto    `full` unless one side's full dump would exceed AUTO_STATS_BYTES, then `stats`: DS4 Flash holds
//           ~1.3 MB per token per layer and side, so its layer-0 runs of a short prompt stay full (10 tokens:
//           13.5 MB) and a run through all 43 layers is statistics from its first token (54 MB).
import type { Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import { STAGES, compressedRowCount, resolveStage, stageAt, type StageDef } from '../model/stages.ts';
import { compileFilter, parseIntList } from '../reference/capture.ts';
import type { CaptureMeta } from './dump.ts';
import { SELECTION_SCORES } from './judge.ts';

export type CaptureMode = 'full' | 'stats';

/** `auto` picks statistics above this many bytes in one side's full dump: a run writes five sides, so a full
 *  run directory stays under ~160 MB unless asked (`--capture full`). */
export const AUTO_STATS_BYTES = 32 * 2 ** 20;

/** A row of at most this many values is kept whole: its statistics (~80 bytes in the dump) would be no smaller. */
export const STATS_WIDTH = 16;

/** Rows in full: graph positions [pos0, pos1] of layers `layers` (n_layer: the head; the embedding goes with layer 0). */
export interface Region {
  layers: number[];
  pos: [number, number];
}

export interface CapturePlan {
  mode: CaptureMode;
  /** is the row kept in full */
  full(stage: string, layer: number, pos: number): boolean;
  /** the dumps' metadata (diff/dump.ts ds4diff.capture) */
  meta: CaptureMeta;
}

const scoreStages = new Set<string>(Object.values(SELECTION_SCORES));

/** Rows the judge needs whole in any capture (see the file comment). */
export function alwaysFull(def: StageDef, cfg: Ds4Config, layer: number): boolean {
  if (def.name === 'logits' || def.dtype === 'i32' || scoreStages.has(def.name)) return true;
  return def.shape(cfg, { layer, n: 1 }).reduce((a, b) => a * b, 1) <= STATS_WIDTH && def.shape(cfg, { layer, n: 2 }).reduce((a, b) => a * b, 1) <= STATS_WIDTH;
}

const ALWAYS_TEXT = `always: logits, expert and indexer ids and their scores, rows of ≤ ${STATS_WIDTH} values`;

/** `--full STAGE[@LAYERS]`: a stage glob (canonical names and ds4 aliases) at the listed layers (all without @). */
export function parseFullSpecs(specs: string[]): Array<{ text: string; keep: (stage: string, layer: number, pos: number) => boolean }> {
  return specs.map((text) => {
    const m = /^([^@\s]+)(?:@(.+))?$/.exec(text.trim());
    if (!m) throw badInput(`--full '${text}': expected STAGE[@LAYERS], e.g. q_rope@0 or 'attn_*@0:3'`);
    const layers = m[2] === undefined ? undefined : parseIntList(m[2], `--full '${text}'`);
    const inStage = compileFilter({ stages: [m[1]] });
    if (!STAGES.some((s) => inStage(s.name, 0, 0))) throw badInput(`--full '${text}': '${m[1]}' matches no stage (see ds4-diff stages)`);
    const inLayers = layers === undefined || layers === 'all' ? () => true : ((set) => (l: number) => set.has(l))(new Set(layers));
    return { text, keep: (stage: string, layer: number, pos: number) => inStage(stage, layer, pos) && inLayers(layer) };
  });
}

export const regionText = (r: Region): string => `layers ${r.layers.join(',')} at positions ${r.pos[0]}..${r.pos[1]} (around the first divergence)`;

/** Is the row inside the region: a layer stage of one of its layers, the embedding with layer 0, the head with n_layer. */
export function inRegion(r: Region, cfg: Ds4Config, stage: string, layer: number, pos: number): boolean {
  if (pos < r.pos[0] || pos > r.pos[1]) return false;
  const def = resolveStage(stage);
  const l = def?.scope === 'embed' ? 0 : def?.scope === 'head' ? cfg.nLayer : layer;
  return r.layers.includes(l);
}

export function capturePlan(mode: CaptureMode, cfg: Ds4Config, specs: string[] = [], region?: Region): CapturePlan {
  if (mode === 'full') return { mode, full: () => true, meta: { mode: 'full' } };
  const full = parseFullSpecs(specs);
  const memo = new Map<string, boolean>();
  const always = (stage: string, layer: number): boolean => {
    const k = `${stage}/${layer}`;
    let v = memo.get(k);
    if (v === undefined) {
      const def = resolveStage(stage);
      memo.set(k, (v = def !== undefined && alwaysFull(def, cfg, layer)));
    }
    return v;
  };
  return {
    mode,
    full: (stage, layer, pos) => always(stage, layer) || full.some((f) => f.keep(stage, layer, pos)) || (region !== undefined && inRegion(region, cfg, stage, layer, pos)),
    meta: { mode, full: [ALWAYS_TEXT, ...full.map((f) => `--full ${f.text}`), ...(region ? [regionText(region)] : [])] },
  };
}

/**
 * The region a second pass re-captures in full around a row that diverged (the first own failure, else the first
 * failing row, else the first divergence): its layer and the one before it (the head's: the run's last layer), at its position and the one
 * before — the culprit of a divergence is at or before it in graph order, most often in the same layer or the one
 * feeding it, and a kernel reading the previous position (the KV window, a stale buffer) shows one position later.
 */
export function regionAround(row: { stage: string; layer: number; pos: number }, cfg: Ds4Config, lastLayer: number): Region {
  const def = resolveStage(row.stage);
  const layer = def?.scope === 'embed' ? 0 : def?.scope === 'head' ? cfg.nLayer : row.layer;
  const before = layer === cfg.nLayer ? lastLayer : layer - 1;
  return { layers: before >= 0 ? [before, layer] : [layer], pos: [Math.max(0, row.pos - 1), row.pos] };
}

/** Bytes of one side's full dump of a run (values only), from the registry's shapes. */
export function fullSideBytes(cfg: Ds4Config, lastLayer: number, nTokens: number, headPositions: number[]): number {
  let values = 0;
  for (const def of STAGES) {
    const at = (layer: number, pos: number) => {
      if (!stageAt(cfg, def, layer, pos)) return;
      const n = def.name === 'raw_cache' ? Math.min(pos + 1, cfg.slidingWindow) : def.name === 'index_scores' ? compressedRowCount(cfg, layer, pos) : 1;
      values += def.shape(cfg, { layer, n }).reduce((a, b) => a * b, 1);
    };
    if (def.scope === 'head') for (const p of headPositions) at(cfg.nLayer, p);
    else for (let p = 0; p < nTokens; p++) for (let l = 0; l <= (def.scope === 'embed' ? 0 : lastLayer); l++) at(l, p);
  }
  return values * 4;
}

/** `--capture full|stats|auto` for a run: auto is stats when one side's full dump would pass AUTO_STATS_BYTES. */
export function captureMode(opt: string, cfg: Ds4Config, lastLayer: number, nTokens: number, headPositions: number[]): CaptureMode {
  if (opt === 'full' || opt === 'stats') return opt;
  if (opt !== 'auto') throw badInput(`--capture must be full, stats or auto, not '${opt}'`);
  return fullSideBytes(cfg, lastLayer, nTokens, headPositions) > AUTO_STATS_BYTES ? 'stats' : 'full';
}
