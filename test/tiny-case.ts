// The tiny-fixture case the device tests share: the bundled model, the reference's captures of a token
// list through layers 0..lastLayer (+ head) with their facts, a teacher for runDevice, and the judge's
// own-error verdict on teacher-forced device records. Imported lazily by tests that skip without the addon.
import { deviceBounds } from '../ascend/budgets.ts';
import { compare, factsOf, type FactsMap } from '../diff/compare.ts';
import { judgedText, makeJudge } from '../diff/gate.ts';
import { configFromGguf, type Ds4Config } from '../model/config.ts';
import { defaultModelPath } from '../model/default-model.ts';
import { openGguf, type GgufModel } from '../model/gguf.ts';
import { recordKey, type StageRecord } from '../model/stages.ts';
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
  /** the reference's facts (its rounding noise, its approximation twin, its decisions), for the judge */
  facts: FactsMap;
  teacher: (stage: string, layer: number, pos: number) => Float32Array | Int32Array | undefined;
}

export const key = recordKey;

export async function tinyCase(tokens: number[], lastLayer: number): Promise<TinyCase> {
  const model = await openGguf(await defaultModelPath());
  const cfg = configFromGguf(model);
  const reference: StageRecord[] = [], noise: StageRecord[] = [], ties: StageRecord[] = [];
  await runReference({ model, cfg, tokens, lastLayer, tap: (r) => reference.push(r), facts: { noise: (r) => noise.push(r), ties: (r) => ties.push(r), approx: true } });
  const ref = new Map(reference.map((r) => [key(r), r]));
  return { model, cfg, tokens, lastLayer, addonPath: process.env.DS4_SIM_ADDON, reference, ref, facts: await factsOf(noise, ties), teacher: (s, l, p) => ref.get(`${s}/${l}/${p}`)?.values };
}

/**
 * The own-error failures of teacher-forced device records under the judge (diff/judge.ts: each stage against
 * its arithmetic budget, codes and choices at near ties), as `key: reason` lines; [] when every row passes.
 */
export async function ownFailures(c: TinyCase, records: StageRecord[], math: 'ascend' | 'exact' = 'ascend'): Promise<string[]> {
  const cmp = await compare({ reference: c.reference, own: records, facts: c.facts }, makeJudge({ deviceBound: deviceBounds(math) }));
  return cmp.rows.filter((r) => r.status !== 'pass').map((r) => `${key(r)}: ${r.missing ? `no ${r.missing} row` : judgedText(r.own)}`);
}
