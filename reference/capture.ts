// Which captures are kept: stage globs (over canonical names and their ds4 aliases), layers and
// positions — the same three knobs as ds4's DS4_METAL_GRAPH_DUMP_NAME / _LAYER / _POS.
import { badInput } from '../model/errors.ts';
import { resolveStage } from '../model/stages.ts';

export interface CaptureFilter {
  stages?: string[];
  layers?: number[] | 'all';
  pos?: number[] | 'all';
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

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
