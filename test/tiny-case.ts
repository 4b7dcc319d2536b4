// The tiny-fixture case the device tests share: the bundled model, the reference's captures of a token
// list through layers 0..lastLayer (+ head), a teacher for runDevice, and the registry-tolerance check
// of a device record against the reference. Imported lazily by tests that skip without the addon.
import type { StageRecord } from '../model/stages.ts';
import { configFromGguf, type Ds4Config } from '../model/config.ts';
import { defaultModelPath } from '../model/default-model.ts';
import { openGguf, type GgufModel } from '../model/gguf.ts';
import { resolveStage } from '../model/stages.ts';
import { runReference } from '../reference/runner.ts';

export interface TinyCase {
  model: GgufModel;
  cfg: Ds4Config;
  tokens: number[];
  lastLayer: number;
  /** the simulator addon override (DS4_SIM_ADDON), passed to every runDevice */
  addonPath?: string;
  /** reference records in capture order, and by key */
  reference: StageRecord[];
  ref: Map<string, StageRecord>;
  teacher: (stage: string, layer: number, pos: number) => Float32Array | Int32Array | undefined;
}

export const key = (r: { stage: string; layer: number; pos: number }) => `${r.stage}/${r.layer}/${r.pos}`;

export async function tinyCase(tokens: number[], lastLayer: number): Promise<TinyCase> {
  const model = await openGguf(await defaultModelPath());
  const cfg = configFromGguf(model);
  const reference: StageRecord[] = [];
  await runReference({ model, cfg, tokens, lastLayer, tap: (r) => reference.push(r) });
  const ref = new Map(reference.map((r) => [key(r), r]));
  return { model, cfg, tokens, lastLayer, addonPath: process.env.DS4_SIM_ADDON, reference, ref, teacher: (s, l, p) => ref.get(`${s}/${l}/${p}`)?.values };
}

/**
 * Why a device record misses its stage's registry tolerance against the reference (maxAbs, cosine,
 * NMSE computed here from their definitions, independently of diff/metrics.ts), or '' when it passes.
 */
export function toleranceViolation(ref: Map<string, StageRecord>, d: StageRecord): string {
  const r = ref.get(key(d));
  if (!r) return `${key(d)}: no reference record`;
  const t = resolveStage(d.stage)?.tolerance ?? {};
  if (d.dtype === 'i32') return d.values.some((v, i) => v !== r.values[i]) ? `${key(d)}: ids differ` : '';
  let md = 0, ab = 0, aa = 0, bb = 0, se = 0;
  for (let i = 0; i < r.values.length; i++) {
    const e = d.values[i] - r.values[i];
    md = Math.max(md, Math.abs(e));
    se += e * e;
    ab += d.values[i] * r.values[i]; aa += d.values[i] ** 2; bb += r.values[i] ** 2;
  }
  const cos = aa * bb === 0 ? (aa === bb ? 1 : 0) : ab / Math.sqrt(aa * bb);
  const nmse = bb === 0 ? (se === 0 ? 0 : Infinity) : se / bb;
  if (t.maxAbs !== undefined && md > t.maxAbs) return `${key(d)}: maxAbs ${md} > ${t.maxAbs}`;
  if (t.minCosine !== undefined && cos < t.minCosine) return `${key(d)}: cosine ${cos} < ${t.minCosine}`;
  if (t.maxNmse !== undefined && nmse > t.maxNmse) return `${key(d)}: nmse ${nmse} > ${t.maxNmse}`;
  return '';
}
