// What the reference knows about a stage besides its value, for the judge (diff/judge.ts): its own rounding
// noise on these inputs — the same step evaluated by the f64 twin (same quantization, no float rounding) —
// and, where the step ends in a decision, how near each rounding or choice came to going the other way.
// When the device computes with the Ascend kernels' approximations, also what those do to this row: the
// step evaluated by the approximation twin (precision 'ascend', reference/math.ts) on the same inputs.
// All are records in the dump format, so a run directory carries them next to the reference:
// `<side>-noise` holds |f64 twin − reference| per element (shape [n]), or that and |approximation twin −
// reference| (shape [2, n]); `<side>-ties` the decisions (rounding: the tie distance and the code step per
// element, shape [2, n]; selection: the score gap, shape [1]).
import { stage as stageDef, stageKey, type StageId, type StageRecord } from '../model/stages.ts';
import { evaluate, type Graph, type Read, type Values } from './interpreter.ts';
import { sharedProducts } from './matvec.ts';
import type { Decisions } from './steps.ts';

export interface StageFacts {
  /** the stage at ds4 precision */
  values: Values;
  /** per element |f64 twin − values|; none for i32 stages (a choice has no rounding noise) */
  noise?: Float32Array;
  /** per element |approximation twin − values|, when asked for, and the twin's values */
  approx?: Float32Array;
  twin?: Values;
  decisions?: Decisions;
}

/**
 * The stage at (layer, pos) from its inputs through `read`, at ds4 precision and by the f64 twin; with
 * `approxRead`, also by the approximation twin reading its inputs through it (fusedTwinRead). The three
 * share their products (reference/matvec.ts sharedProducts): one pass over each weight for all of them.
 */
export function stageFacts(g: Graph, stage: StageId, layer: number, pos: number, read: Read, approxRead?: Read): StageFacts {
  return sharedProducts(true, () => facts(g, stage, layer, pos, read, approxRead));
}

function facts(g: Graph, stage: StageId, layer: number, pos: number, read: Read, approxRead?: Read): StageFacts {
  const decisions: Decisions | undefined = stageDef(stage).decision ? {} : undefined;
  const values = evaluate(g, stage, layer, pos, 'ds4', read, decisions);
  if (values instanceof Int32Array) return { values, decisions };
  const distance = (twin: Values) => {
    const d = new Float32Array(values.length);
    for (let i = 0; i < d.length; i++) d[i] = Math.abs(twin[i] - values[i]);
    return d;
  };
  const twin = approxRead ? evaluate(g, stage, layer, pos, 'ascend', approxRead) : undefined;
  return { values, decisions, noise: distance(evaluate(g, stage, layer, pos, 'f64', read)), approx: twin && distance(twin), twin };
}

/**
 * The approximation twin's inputs: an input produced by the same device kernel at the same position is read
 * from its own twin (`twins`, by stageKey) — a fused kernel (router_select: probs → weights) carries its
 * approximations from one output to the next, while a teacher-forced pass feeds only the kernel's inputs.
 * Everything else is the reference's value.
 */
export function fusedTwinRead(stage: StageId, layer: number, pos: number, read: Read, twins: Map<string, Values>): Read {
  const kernel = stageDef(stage).kernel;
  return (s, l, q) => (l === layer && q === pos && stageDef(s).kernel === kernel ? twins.get(stageKey(s, l, q)) : undefined) ?? read(s, l, q);
}

/** The facts as dump records (see the file comment); `base` names the row. */
export function factRecords(f: StageFacts, base: Omit<StageRecord, 'dtype' | 'shape' | 'values'>): { noise?: StageRecord; ties?: StageRecord } {
  let noise: StageRecord | undefined;
  if (f.noise && f.approx) {
    const v = new Float32Array(2 * f.noise.length);
    v.set(f.noise);
    v.set(f.approx, f.noise.length);
    noise = { ...base, dtype: 'f32', shape: [2, f.noise.length], values: v };
  } else if (f.noise) noise = { ...base, dtype: 'f32', shape: [f.noise.length], values: f.noise };
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
