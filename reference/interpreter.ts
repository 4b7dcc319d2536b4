// The reference as one interpreter over the stage registry: a stage at (layer, pos) is its step
// (reference/steps.ts) applied to its declared inputs (model/stages.ts), read through a `Read` that the
// caller chooses — the interpreter's own earlier results (runReference, below), a dump (diff/replay.ts),
// or the reference's captured values (the judge's rounding-noise twin). The graph is written once.
import type { Ds4Config } from '../model/config.ts';
import { emittedPositions, stage as stageDef, stageAt, windowPositions, type StageId } from '../model/stages.ts';
import { STEPS, type Decisions, type StepInputs } from './steps.ts';
import type { LayerWeights, Precision, Vec, Weight } from './types.ts';
import type { Weights } from './weights.ts';

export type Values = Vec | Int32Array;

/** The value of an input stage at (layer, pos); throws when it cannot be had (the caller's error says why). */
export type Read = (stage: StageId, layer: number, pos: number) => Values;

/** What the graph around one evaluation is: the model, the token at each position, the layer the head follows. */
export interface Graph {
  cfg: Ds4Config;
  weights: Weights;
  /** the token id at `pos`; throws if unknown */
  token(pos: number): number;
  /** the last evaluated layer: the head reads its after_ffn_hc */
  lastLayer: number;
}

const f32Input = (v: Values, stage: string, layer: number, pos: number): Vec => {
  if (v instanceof Int32Array) throw new TypeError(`input ${stage} layer ${layer} pos ${pos} is i32, the step needs f32`);
  return v;
};

const i32Input = (v: Values, stage: string, layer: number, pos: number): Int32Array => {
  if (!(v instanceof Int32Array)) throw new TypeError(`input ${stage} layer ${layer} pos ${pos} is f32, the step needs i32`);
  return v;
};

/** The inputs of `stage` at (layer, pos) as its step sees them: everything goes through `read`. */
export function stepInputs(g: Graph, stage: StageId, layer: number, pos: number, p: Precision, read: Read, decisions?: Decisions): StepInputs {
  const { cfg } = g;
  const head = stageDef(stage).scope === 'head';
  let w: LayerWeights | undefined;
  return {
    cfg, layer, pos, p,
    weights: g.weights,
    get w() {
      return (w ??= g.weights.layer(layer));
    },
    input: (s) => f32Input(read(s, layer, pos), s, layer, pos),
    inputI32: (s) => i32Input(read(s, layer, pos), s, layer, pos),
    optionalI32: (s) => (stageAt(cfg, stageDef(s), layer, pos) ? i32Input(read(s, layer, pos), s, layer, pos) : undefined),
    hcIn: () => {
      const [s, l]: [StageId, number] = head ? ['after_ffn_hc', g.lastLayer] : layer === 0 ? ['embed_hc', 0] : ['after_ffn_hc', layer - 1];
      return f32Input(read(s, l, pos), s, l, pos);
    },
    window: (s) => windowPositions(cfg, s, layer, pos).map((q) => f32Input(read(s, layer, q), s, layer, q)),
    emitted: (s) => emittedPositions(cfg, layer, pos).map((q) => f32Input(read(s, layer, q), s, layer, q)),
    token: () => g.token(pos),
    decisions,
  };
}

/** One stage at (layer, pos), precision p, its inputs through `read`; `decisions` collects where it rounded or chose. */
export function evaluate(g: Graph, stage: StageId, layer: number, pos: number, p: Precision, read: Read, decisions?: Decisions): Values {
  return STEPS[stage](stepInputs(g, stage, layer, pos, p, read, decisions));
}

/** The products the stage's step declares at (layer, pos) (reference/steps.ts Products), or none. */
export function stepProducts(g: Graph, stage: StageId, layer: number, pos: number, p: Precision, read: Read): Array<[Weight, Vec]> {
  return STEPS[stage].products?.(stepInputs(g, stage, layer, pos, p, read)) ?? [];
}
