// The reference graph runner: the interpreter (reference/interpreter.ts) evaluating every stage of the
// registry from its own earlier results — embedding, layers 0..lastLayer, then the output head at the
// head positions (by default the last token, as ds4 computes logits for the last prompt token).
// `prefill` is layer-major like ds4's prefill_layer_major_cpu (every stage of layer 0 for all tokens,
// then layer 1, ...), each stage's products made for all the tokens in one pass over each weight (the
// weights of a layer are streamed once, not once per token); `decode` feeds the tokens one at a time
// through every layer like ds4's decode loop. Every stage at (layer, pos) is the same function of the
// same inputs in both orders, so the captures are bit-identical.
import type { Ds4Config } from '../model/config.ts';
import type { GgufModel } from '../model/gguf.ts';
import { badInput } from '../model/errors.ts';
import { STAGES, resolveStage, stageAt, stageKey, type StageDef, type StageRecord, type Tap } from '../model/stages.ts';
import { throwIfCancelled } from '../diff/cancel.ts';
import { compileFilter, type CaptureFilter } from './capture.ts';
import { factRecords, fusedTwinRead, stageFacts } from './facts.ts';
import { evaluate, stepProducts, type Graph, type Values } from './interpreter.ts';
import { precompute, sharedProducts } from './matvec.ts';
import type { Precision, Vec } from './types.ts';
import { ModelWeights } from './weights.ts';

export interface ReferenceOptions {
  model: GgufModel;
  cfg: Ds4Config;
  weights?: ModelWeights;
  tokens: number[];
  /** run layers 0..lastLayer, then the head on that state (ds4's layer-0 graph test); default: all */
  lastLayer?: number;
  /** positions the output head is evaluated at (default: the last token) */
  headPositions?: number[];
  precision?: Precision;
  tap?: Tap;
  /** also capture each kept stage's facts for the judge (reference/facts.ts): its rounding noise and decisions
   *  (ds4 precision only), and with `approx` what the Ascend kernels' approximations do to it */
  facts?: { noise: Tap; ties: Tap; approx?: boolean };
  filter?: CaptureFilter;
  mode?: 'prefill' | 'decode';
  onProgress?: (msg: string) => void;
}

export interface ReferenceResult {
  /** logits of the last head position */
  logits: Float32Array;
  top: Array<{ id: number; logit: number }>;
}

export function topLogits(logits: ArrayLike<number>, k: number): Array<{ id: number; logit: number }> {
  const top: Array<{ id: number; logit: number }> = [];
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (top.length < k || v > top[top.length - 1].logit) {
      let j = top.length < k ? top.length : k - 1;
      while (j > 0 && top[j - 1].logit < v) j--;
      top.splice(j, 0, { id: i, logit: v });
      if (top.length > k) top.pop();
    }
  }
  return top;
}

/** Turn a stage's values into a StageRecord: a copy (f32 or i32) with the registry's shape. */
export function makeRecord(cfg: Ds4Config, stage: string, layer: number, pos: number, token: number, values: Vec | Int32Array, shape?: number[]): StageRecord {
  const isI32 = values instanceof Int32Array;
  const vals = isI32 ? Int32Array.from(values) : Float32Array.from(values);
  let sh = shape;
  if (!sh) {
    const def = resolveStage(stage);
    sh = def ? def.shape(cfg, { layer, n: def.name === 'raw_cache' ? values.length / cfg.headDim : values.length }) : [values.length];
    if (sh.reduce((a, b) => a * b, 1) !== values.length) sh = [values.length];
  }
  return { stage, layer, pos, token, dtype: isI32 ? 'i32' : 'f32', shape: sh, values: vals };
}

const byScope = (scope: StageDef['scope']) => STAGES.filter((s) => s.scope === scope);
const EMBED = byScope('embed'), LAYER = byScope('layer'), HEAD = byScope('head');

export async function runReference(opts: ReferenceOptions): Promise<ReferenceResult> {
  const { model, cfg, tokens } = opts;
  if (tokens.length === 0) throw new Error('runReference: no tokens');
  const p = opts.precision ?? 'ds4';
  const last = opts.lastLayer ?? cfg.nLayer - 1;
  if (!(last >= 0 && last < cfg.nLayer)) throw new Error(`runReference: layer ${last} is outside 0..${cfg.nLayer - 1}`);
  const positions = tokens.map((_, i) => i);
  const headPositions = opts.headPositions ?? [tokens.length - 1];
  for (const q of headPositions) if (!(q >= 0 && q < tokens.length)) throw badInput(`head position ${q} is outside the prompt (0..${tokens.length - 1})`);
  const g: Graph = {
    cfg,
    weights: opts.weights ?? new ModelWeights(model, cfg),
    lastLayer: last,
    token: (q) => tokens[q],
  };
  const keep = compileFilter(opts.filter);
  const store = new Map<string, Values>();
  /** the approximation twins of the layer in progress (facts.approx) */
  const twins = new Map<string, Values>();
  const read = (s: string, l: number, q: number): Values => {
    const v = store.get(stageKey(s, l, q));
    if (!v) throw new Error(`reference: ${s} layer ${l} pos ${q} read before it was computed`);
    return v;
  };
  if (opts.facts && p !== 'ds4') throw new Error('runReference: facts are the ds4 reference\'s');
  const run = (s: StageDef, layer: number, q: number): void => {
    if (!stageAt(cfg, s, layer, q)) return;
    const kept = keep(s.name, layer, q);
    const f = opts.facts && kept ? stageFacts(g, s.name, layer, q, read, opts.facts.approx ? fusedTwinRead(s.name, layer, q, read, twins) : undefined) : undefined;
    if (f?.twin) twins.set(stageKey(s.name, layer, q), f.twin);
    const v = f ? f.values : evaluate(g, s.name, layer, q, p, read);
    store.set(stageKey(s.name, layer, q), v);
    if (opts.tap && kept) opts.tap(makeRecord(cfg, s.name, layer, q, tokens[q], v));
    if (f) {
      const r = factRecords(f, { stage: s.name, layer, pos: q, token: tokens[q] });
      if (r.noise) opts.facts!.noise(r.noise);
      if (r.ties) opts.facts!.ties(r.ties);
    }
  };
  /**
   * Stage s at the positions `qs` of `layer`: the products its step declares made for all of them first,
   * then each position evaluated (at ds4 precision and, with facts, by its twins) from those.
   */
  const runStage = (s: StageDef, layer: number, qs: number[]): void => {
    const at = qs.filter((q) => stageAt(cfg, s, layer, q));
    const all = () => {
      if (at.length > 1) precompute(at.flatMap((q) => stepProducts(g, s.name, layer, q, p, read)), p);
      for (const q of at) run(s, layer, q);
    };
    // one position without twins: nothing to share
    if (opts.facts || at.length > 1) sharedProducts(!!opts.facts, all);
    else all();
  };
  /** after layer il, only its after_ffn_hc is read again (by layer il + 1 or the head) */
  const forgetBelow = (il: number): void => {
    twins.clear();
    for (const k of [...store.keys()]) {
      const [s, l] = k.split('/');
      if (Number(l) < il || (Number(l) === il && s !== 'after_ffn_hc') || s === 'embed_hc') store.delete(k);
    }
  };

  if ((opts.mode ?? 'prefill') === 'prefill') {
    for (const s of EMBED) runStage(s, 0, positions);
    for (let il = 0; il <= last; il++) {
      await throwIfCancelled();
      opts.onProgress?.(`layer ${il}/${last}: ${tokens.length} tokens`);
      for (const s of LAYER) runStage(s, il, positions);
      forgetBelow(il);
    }
  } else {
    for (const q of positions) {
      await throwIfCancelled();
      opts.onProgress?.(`token ${q + 1}/${tokens.length}`);
      for (const s of EMBED) runStage(s, 0, [q]);
      for (let il = 0; il <= last; il++) for (const s of LAYER) runStage(s, il, [q]);
    }
  }
  for (const q of headPositions) for (const s of HEAD) runStage(s, cfg.nLayer, [q]);
  const logits = Float32Array.from(read('logits', cfg.nLayer, headPositions[headPositions.length - 1]) as Vec);
  return { logits, top: topLogits(logits, 5) };
}
