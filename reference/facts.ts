// What the reference knows about a stage besides its value, for the judge (diff/judge.ts): its own rounding
// noise on these inputs — the same step evaluated by the f64 twin (same quantization, no float rounding) —
// and, where the step ends in a decision, how near each rounding or choice came to going the other way.
// Both are records in the dump format, so a run directory carries them next to the reference:
// `<side>-noise` holds |f64 twin − reference| per element, `<side>-ties` the decisions (rounding: the tie
// distance and the code step per element, shape [2, n]; selection: the score gap, shape [1]).
import { stage as stageDef, type StageId, type StageRecord } from '../model/stages.ts';
import { evaluate, type Graph, type Read, type Values } from './interpreter.ts';
import type { Decisions } from './steps.ts';

export interface StageFacts {
  /** the stage at ds4 precision */
  values: Values;
  /** per element |f64 twin − values|; none for i32 stages (a choice has no rounding noise) */
  noise?: Float32Array;
  decisions?: Decisions;
}

/** The stage at (layer, pos) from its inputs through `read`, at ds4 precision and by the f64 twin. */
export function stageFacts(g: Graph, stage: StageId, layer: number, pos: number, read: Read): StageFacts {
  const decisions: Decisions | undefined = stageDef(stage).decision ? {} : undefined;
  const values = evaluate(g, stage, layer, pos, 'ds4', read, decisions);
  if (values instanceof Int32Array) return { values, decisions };
  const twin = evaluate(g, stage, layer, pos, 'f64', read);
  return { values, noise: Float32Array.from(values, (v, i) => Math.abs(twin[i] - v)), decisions };
}

/** The facts as dump records (see the file comment); `base` names the row. */
export function factRecords(f: StageFacts, base: Omit<StageRecord, 'dtype' | 'shape' | 'values'>): { noise?: StageRecord; ties?: StageRecord } {
  const noise = f.noise ? { ...base, dtype: 'f32' as const, shape: [f.noise.length], values: f.noise } : undefined;
  const d = f.decisions;
  let ties: StageRecord | undefined;
  if (d?.margins) {
    const n = d.margins.tie.length;
    const v = new Float32Array(2 * n);
    v.set(d.margins.tie);
    v.set(d.margins.step, n);
    ties = { ...base, dtype: 'f32', shape: [2, n], values: v };
  } else if (d?.gap !== undefined) {
    ties = { ...base, dtype: 'f32', shape: [1], values: Float32Array.of(d.gap) };
  }
  return { noise, ties };
}
