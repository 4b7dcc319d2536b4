// Which captures are kept: stage globs (over canonical names and their ds4 aliases), layers and
// positions — the same three knobs as ds4's DS4_METAL_GRAPH_DUMP_NAME / _LAYER / _POS.
import { layerKind, type Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import { STAGES, resolveStage, stageInLayer, type StageDef } from '../model/stages.ts';

export interface CaptureFilter {
  stages?: string[];
  layers?: number[] | 'all';
  pos?: number[] | 'all';
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

const MAX_INDEX = 2 ** 31 - 1;
const MAX_LIST = 1 << 20;

/** Parse "0,2,5:7" / "all" into a list of integers (ranges inclusive). */
export function parseIntList(text: string | undefined, what: string): number[] | 'all' | undefined {
  if (text === undefined) return undefined;
  if (text === 'all') return 'all';
  const out: number[] = [];
  for (const part of text.split(',')) {
    const m = /^(\d+)(?::(\d+))?$/.exec(part.trim());
    if (!m) throw badInput(`${what}: '${part}' is not a number or A:B range`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw badInput(`${what}: range ${part} is empty`);
    // layers and positions are int32 in a dump; a list is spelled out, so its length is bounded too
    if (b > MAX_INDEX) throw badInput(`${what}: ${b} is beyond any layer or position (at most ${MAX_INDEX})`);
    if (out.length + (b - a + 1) > MAX_LIST) throw badInput(`${what}: '${text}' lists more than ${MAX_LIST} values`);
    for (let i = a; i <= b; i++) out.push(i);
  }
  return out;
}

export function parseFilter(opts: { stages?: string; layers?: string; pos?: string }): CaptureFilter {
  return {
    stages: opts.stages ? opts.stages.split(',').map((s) => s.trim()).filter(Boolean) : undefined,
    layers: parseIntList(opts.layers, '--capture-layers'),
    pos: parseIntList(opts.pos, '--pos'),
  };
}

export function compileFilter(f: CaptureFilter | undefined): (stage: string, layer: number, pos: number) => boolean {
  if (!f) return () => true;
  const res = f.stages?.map(globToRegExp);
  const memo = new Map<string, boolean>();
  const stageOk = (name: string): boolean => {
    if (!res) return true;
    let ok = memo.get(name);
    if (ok === undefined) {
      const s = resolveStage(name);
      const names = [name, ...(s ? [s.name, ...Object.values(s.aliases).flat()] : [])] as string[];
      ok = res.some((re) => names.some((n) => re.test(n)));
      memo.set(name, ok);
    }
    return ok;
  };
  const layers = f.layers === 'all' || f.layers === undefined ? undefined : new Set(f.layers);
  const pos = f.pos === 'all' || f.pos === undefined ? undefined : new Set(f.pos);
  // the layer filter selects transformer layers; the embedding and the head are kept with any of them
  const layered = (stage: string) => resolveStage(stage)?.scope === 'layer';
  return (stage, layer, p) => (!layers || !layered(stage) || layers.has(layer)) && (!pos || pos.has(p)) && stageOk(stage);
}

/**
 * What a capture filter reaches in a run of `nTokens` tokens through layers 0..lastLayer (the head at
 * layer n_layer, last position): each part that selects nothing (a stage glob no stage of the run
 * matches, a layer or a position outside the run), and whether the whole filter captures nothing.
 */
export function filterReach(f: CaptureFilter, cfg: Ds4Config, lastLayer: number, nTokens: number): { unmatched: string[]; nothing: boolean } {
  const unmatched: string[] = [];
  const layersRun = Array.from({ length: lastLayer + 1 }, (_, il) => il);
  const produced = (s: StageDef) => s.scope !== 'layer' || layersRun.some((il) => stageInLayer(s, layerKind(cfg, il)));
  for (const g of f.stages ?? []) {
    const re = globToRegExp(g);
    const hits = STAGES.filter((s) => [s.name, ...Object.values(s.aliases).flat()].some((n) => re.test(n as string)));
    if (!hits.length) unmatched.push(`--stages '${g}' matches no stage (see ds4-diff stages)`);
    else if (!hits.some(produced)) unmatched.push(`--stages '${g}': layers 0..${lastLayer} produce none of ${hits.map((s) => s.name).join(', ')}`);
  }
  if (Array.isArray(f.layers)) {
    const out = f.layers.filter((l) => l > lastLayer);
    if (out.length) unmatched.push(`--capture-layers ${out.join(',')}: the run has layers 0..${lastLayer}${out.length === f.layers.length ? ' (only the embedding and the head are captured)' : ''}`);
  }
  if (Array.isArray(f.pos)) {
    const out = f.pos.filter((p) => p >= nTokens);
    if (out.length) unmatched.push(`--pos ${out.join(',')}: the prompt has ${nTokens} tokens (positions 0..${nTokens - 1})`);
  }
  // does any (stage, layer, pos) the run emits pass the whole filter?
  const keep = compileFilter(f);
  const positions = Array.isArray(f.pos) ? f.pos.filter((p) => p < nTokens) : Array.from({ length: nTokens }, (_, p) => p);
  const emits = (s: StageDef, il: number, p: number) => {
    const ratio = cfg.compressRatios[il];
    return s.when !== 'emit' && s.when !== 'index-emit' ? true : ratio > 0 && (p + 1) % ratio === 0;
  };
  const any = STAGES.some((s) => {
    if (s.scope === 'embed') return positions.some((p) => keep(s.name, 0, p));
    if (s.scope === 'head') return keep(s.name, cfg.nLayer, nTokens - 1);
    return layersRun.some((il) => stageInLayer(s, layerKind(cfg, il)) && positions.some((p) => emits(s, il, p) && keep(s.name, il, p)));
  });
  return { unmatched, nothing: !any };
}

/**
 * A filter over existing records (a dump's) that remembers which of its parts ever matched one: each
 * stage glob, layer and position that matched no record is named by `unmatched()` (a part is judged on
 * its own, not in combination with the others).
 */
export function trackedFilter(f: CaptureFilter, layersOption: string, posOption: string): { keep: (stage: string, layer: number, pos: number) => boolean; unmatched: () => string[] } {
  const keep = compileFilter(f);
  const globs = (f.stages ?? []).map((g) => ({ g, one: compileFilter({ stages: [g] }), hit: false }));
  const layers = Array.isArray(f.layers) ? new Map(f.layers.map((l) => [l, false])) : undefined;
  const positions = Array.isArray(f.pos) ? new Map(f.pos.map((p) => [p, false])) : undefined;
  return {
    keep(stage, layer, pos) {
      for (const x of globs) if (!x.hit && x.one(stage, layer, pos)) x.hit = true;
      if (layers?.has(layer) && resolveStage(stage)?.scope === 'layer') layers.set(layer, true);
      if (positions?.has(pos)) positions.set(pos, true);
      return keep(stage, layer, pos);
    },
    unmatched() {
      const out = globs.filter((x) => !x.hit).map((x) => `--stages '${x.g}' matches no record`);
      const l = [...(layers ?? [])].filter(([, hit]) => !hit).map(([k]) => k);
      if (l.length) out.push(`${layersOption} ${l.join(',')} matches no record`);
      const p = [...(positions ?? [])].filter(([, hit]) => !hit).map(([k]) => k);
      if (p.length) out.push(`${posOption} ${p.join(',')} matches no record`);
      return out;
    },
  };
}
