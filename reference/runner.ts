// The reference graph runner: embedding -> layers 0..lastLayer (attention sublayer, FFN sublayer)
// -> output head, with every stage passing through the capture tap.
// `prefill` is layer-major like ds4's prefill_layer_major_cpu (all tokens through layer 0, then
// layer 1, ...); `decode` feeds the tokens one at a time through every layer like ds4's decode loop.
// The two produce bit-identical captures (the attention sublayer's per-token loop is the same code).
import type { Ds4Config } from '../model/config.ts';
import type { GgufModel } from '../model/gguf.ts';
import type { StageRecord, Tap } from '../diff/record.ts';
import { throwIfCancelled } from '../diff/cancel.ts';
import { attentionSublayer, newAttnLayerState, type AttnLayerState } from './attention.ts';
import { compileFilter, type CaptureFilter } from './capture.ts';
import { ffnSublayer } from './ffn.ts';
import { embedHc } from './hc.ts';
import { outputHead } from './head.ts';
import { resolveStage } from './registry.ts';
import type { LayerContext, Precision, Vec } from './types.ts';
import { ModelWeights } from './weights.ts';

export interface ReferenceOptions {
  model: GgufModel;
  cfg: Ds4Config;
  weights?: ModelWeights;
  tokens: number[];
  /** run layers 0..lastLayer, then the head on that state (ds4's layer-0 graph test); default: all */
  lastLayer?: number;
  precision?: Precision;
  tap?: Tap;
  filter?: CaptureFilter;
  mode?: 'prefill' | 'decode';
  onProgress?: (msg: string) => void;
}

export interface ReferenceResult {
  /** logits of the last token */
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

/** Turn an emitted vector into a StageRecord: copy (stages may be mutated after emission), f32/i32, registry shape. */
export function makeRecord(cfg: Ds4Config, stage: string, layer: number, pos: number, token: number, values: Vec | Int32Array, shape?: number[]): StageRecord {
  const isI32 = values instanceof Int32Array;
  const vals = isI32 ? Int32Array.from(values) : Float32Array.from(values);
  let sh = shape;
  if (!sh) {
    const def = resolveStage(stage);
    sh = def ? def.shape(cfg, { layer, n: values.length }) : [values.length];
    if (sh.reduce((a, b) => a * b, 1) !== values.length) sh = [values.length];
  }
  return { stage, layer, pos, token, dtype: isI32 ? 'i32' : 'f32', shape: sh, values: vals };
}

export async function runReference(opts: ReferenceOptions): Promise<ReferenceResult> {
  const { model, cfg, tokens } = opts;
  if (tokens.length === 0) throw new Error('runReference: no tokens');
  const p = opts.precision ?? 'ds4';
  const last = opts.lastLayer ?? cfg.nLayer - 1;
  if (!(last >= 0 && last < cfg.nLayer)) throw new Error(`runReference: layer ${last} is outside 0..${cfg.nLayer - 1}`);
  const weights = opts.weights ?? new ModelWeights(model, cfg);
  const keep = compileFilter(opts.filter);
  const tap = opts.tap;
  const emitAt = (layer: number) => (stage: string, pos: number, values: Vec | Int32Array, shape?: number[]) => {
    if (tap && keep(stage, layer, pos)) tap(makeRecord(cfg, stage, layer, pos, tokens[pos], values, shape));
  };
  const ctxLen = tokens.length;
  const states: AttnLayerState[] = [];
  const contexts: LayerContext[] = [];
  for (let il = 0; il <= last; il++) {
    states.push(newAttnLayerState(cfg, il, ctxLen, p));
    contexts.push({ cfg, il, p, w: weights.layer(il), emit: emitAt(il) });
  }
  const embed = (t: number): Vec => {
    const hc = embedHc(cfg, p, weights.embeddingRow(tokens[t]));
    emitAt(0)('embed_hc', t, hc, [cfg.nHc, cfg.nEmbd]);
    return hc;
  };
  const positions = tokens.map((_, i) => i);
  let hc: Vec[];
  if ((opts.mode ?? 'prefill') === 'prefill') {
    hc = positions.map(embed);
    for (let il = 0; il <= last; il++) {
      await throwIfCancelled();
      opts.onProgress?.(`layer ${il}/${last}: ${tokens.length} tokens`);
      hc = attentionSublayer(contexts[il], hc, positions, states[il]);
      hc = ffnSublayer(contexts[il], hc, positions, tokens);
    }
  } else {
    hc = [];
    for (const t of positions) {
      await throwIfCancelled();
      opts.onProgress?.(`token ${t + 1}/${tokens.length}`);
      let x = embed(t);
      for (let il = 0; il <= last; il++) {
        [x] = attentionSublayer(contexts[il], [x], [t], states[il]);
        [x] = ffnSublayer(contexts[il], [x], [t], [tokens[t]]);
      }
      hc.push(x);
    }
  }
  // ds4 computes logits for the last prompt token only; head stages carry layer = n_layer
  const lastPos = tokens.length - 1;
  const emitHead = emitAt(cfg.nLayer);
  const logits = outputHead(cfg, weights, hc[lastPos], p, (stage, values, shape) => emitHead(stage, lastPos, values, shape));
  const lf = Float32Array.from(logits);
  return { logits: lf, top: topLogits(lf, 5) };
}
