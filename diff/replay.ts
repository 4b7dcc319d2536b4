// Replay (issue 7, 13): recompute every stage of a dump from that dump's OWN inputs with the reference's
// interpreter (reference/interpreter.ts), and report each stage's own error. Free-running dumps (a device
// run, an imported ds4 dump, a colleague's file) carry errors that accumulate downstream; feeding each stage
// the values the producer actually consumed isolates the kernel that is wrong by itself — the question the
// teacher-forced device pass answers, but for any dump, with no access to the producer.
//
// Each stage is its registry step (model/stages.ts inputs, reference/steps.ts) evaluated with every input
// read from the dump. An input the producer never dumps at all — ds4 has no tensor for the raw window in
// decode, the compressor's raw projections, the indexer query and weights, the embedding, the clamped
// expert gate/up, the expert down rows or the shared expert's mid — is DERIVED: computed by the reference
// from that input's own inputs, which must be in the dump (one level, never a whole re-run). A row that
// read a derived input says so (its own error then covers the derivation too). An input whose stage the
// dump holds elsewhere but not here (a filtered capture, an engine that died) is missing: the row is
// skipped, naming it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { layerKind, type Ds4Config } from '../model/config.ts';
import { badInput } from '../model/errors.ts';
import type { GgufModel } from '../model/gguf.ts';
import { compressedRowCount, graphOrderKey, resolveStage, stage as stageDef, stageAt, stageInLayer, stageKey, type StageDef, type StageId, type StageRecord } from '../model/stages.ts';
import { factRecords, stageFacts, type StageFacts } from '../reference/facts.ts';
import { evaluate, type Graph, type Read, type Values } from '../reference/interpreter.ts';
import { makeRecord } from '../reference/runner.ts';
import { ModelWeights } from '../reference/weights.ts';
import { throwIfCancelled } from './cancel.ts';
import { compare, factsOf, type CompareRow, type Comparison, type DerivedInputs } from './compare.ts';
import type { Judge } from './judge.ts';
import { iterateDump, readDumpMeta } from './dump.ts';
import { MANIFEST_NAME, readManifest } from './manifest.ts';

export interface ReplayRow {
  stage: string;
  layer: number;
  pos: number;
  status: 'replayed' | 'skipped';
  /** skipped: why (the missing input, by stage, layer and pos) */
  reason?: string;
  /** inputs the dump does not hold that the reference derived, e.g. `raw_cache layer 0 pos 3` */
  derived?: string[];
}

export interface ReplayResult {
  file: string;
  rows: ReplayRow[];
  /** the replayed rows judged as own errors: the dump (candidate) against the reference on its inputs */
  comparison: Comparison;
  /** the reference on the dump's inputs and its facts, as records (an engine run keeps them as the
   *  `replay`, `replay-noise` and `replay-ties` sides) */
  records: { replay: StageRecord[]; noise: StageRecord[]; ties: StageRecord[] };
  counts: { rows: number; replayed: number; passed: number; failed: number; skipped: number; derived: number };
  /** per stage, the input stages derived for it: part of its own error (their device bound is added to its own) */
  derivedInputs: DerivedInputs;
  /** the first own-error failure in graph order: the first stage that is wrong by itself */
  firstOwnFailure?: CompareRow;
}

export interface ReplayOptions {
  model: GgufModel;
  cfg: Ds4Config;
  judge: Judge;
  /** the dump's producer computes with the Ascend kernels' approximations: also evaluate the approximation twin */
  approx?: boolean;
  /** which dumped records to replay (default all) */
  filter?: (stage: string, layer: number, pos: number) => boolean;
  onProgress?: (m: string) => void;
  warn?: (m: string) => void;
}

/** Replay runs the reference's CPU arithmetic (the dumps it checks are f32). */
const P = 'ds4' as const;

/** An input the replay needs is not in the dump (or not usable): the row is skipped with this reason. */
class Unavailable extends Error {}

const product = (s: number[]) => s.reduce((a, b) => a * b, 1);

/**
 * The dump as the interpreter's input source: a record's values, checked against the registry's size; a
 * stage the dump holds nowhere, derived one level (its own inputs must be dumped); anything else missing.
 */
class DumpSource {
  /** stages the dump holds at some (layer, pos): the producer dumps them, so a gap is a gap, not a derivation */
  private readonly dumped = new Set<string>();
  private readonly derivedValues = new Map<string, Values>();
  /** derived inputs read by the evaluation in progress, and their stages */
  readonly derivedRead = new Set<string>();
  readonly derivedStages = new Set<StageId>();

  constructor(
    readonly g: Graph,
    private readonly records: Map<string, StageRecord>,
  ) {
    for (const r of records.values()) this.dumped.add(resolveStage(r.stage)?.name ?? r.stage);
  }

  /** The dump's value of a stage, or a derivation of it; `depth` > 0 inside a derivation. */
  read(stage: StageId, layer: number, pos: number, depth = 0): Values {
    const r = this.records.get(stageKey(stage, layer, pos));
    if (r) return this.checked(r, stage, layer, pos);
    const where = `${stage} layer ${layer} pos ${pos}`;
    if (this.dumped.has(stage) || depth > 0 || !stageAt(this.g.cfg, stageDef(stage), layer, pos)) throw new Unavailable(`missing input ${where}`);
    const k = stageKey(stage, layer, pos);
    let v = this.derivedValues.get(k);
    if (!v) {
      try {
        v = evaluate(this.g, stage, layer, pos, P, (s, l, q) => this.read(s, l, q, depth + 1));
      } catch (e) {
        if (!(e instanceof Unavailable)) throw e;
        throw new Unavailable(`missing input ${where} (not dumped; deriving it needs ${e.message.replace(/^missing input /, '')})`);
      }
      this.derivedValues.set(k, v);
    }
    this.derivedRead.add(where);
    this.derivedStages.add(stage);
    return v;
  }

  private checked(r: StageRecord, stage: StageId, layer: number, pos: number): Values {
    const def = stageDef(stage);
    const where = `input ${stage} layer ${layer} pos ${pos}`;
    if (r.kind === 'stats') throw new Unavailable(`${where} was captured as statistics only`);
    if ((r.values instanceof Int32Array) !== (def.dtype === 'i32')) throw new Unavailable(`${where} is ${r.dtype}, the registry says ${def.dtype}`);
    const one = product(def.shape(this.g.cfg, { layer, n: 1 }));
    // count-dependent stages (raw_cache rows, indexer candidates) are checked by the step that reads them
    if (one === product(def.shape(this.g.cfg, { layer, n: 2 })) && r.values.length !== one) {
      throw new Unavailable(`${where} has ${r.values.length} values, expected ${one}`);
    }
    // ids must name something that exists: an expert of the model, a compressed row emitted so far
    const idLimit = stage === 'router_topk' ? this.g.cfg.nExpert : stage === 'index_topk' ? compressedRowCount(this.g.cfg, layer, pos) : undefined;
    if (idLimit !== undefined) for (const id of r.values) if (!(id >= 0 && id < idLimit)) throw new Unavailable(`${where} selects ${id}, outside 0..${idLimit - 1}`);
    return r.values;
  }
}

/**
 * The layer whose after_ffn_hc fed the head: the run's last layer from the run directory's manifest
 * when the dump sits in one, else the highest layer the dump holds (a `--layer N` run ends at N).
 */
function headLayerOf(file: string, records: Iterable<StageRecord>, cfg: Ds4Config): number {
  const dir = path.dirname(file);
  if (fs.existsSync(path.join(dir, MANIFEST_NAME))) {
    try {
      return readManifest(dir).layers.last;
    } catch {
      // an unreadable manifest next to the dump is not this dump's problem: fall back to its contents
    }
  }
  let last = -1;
  for (const r of records) if (r.layer < cfg.nLayer && resolveStage(r.stage)?.scope === 'layer' && r.layer > last) last = r.layer;
  return last < 0 ? cfg.nLayer - 1 : last;
}

/** Why a dumped record cannot be replayed at all, independent of the other records. */
function notReplayable(rec: StageRecord, cfg: Ds4Config): string | undefined {
  if (rec.kind === 'stats') return 'captured as statistics only: no values to replay';
  const def = resolveStage(rec.stage);
  if (!def) return `'${rec.stage}' is not a registry stage`;
  if (def.scope === 'layer' && !(rec.layer >= 0 && rec.layer < cfg.nLayer)) return `layer ${rec.layer} is not a layer of the model (0..${cfg.nLayer - 1})`;
  if (def.scope === 'layer' && !stageInLayer(def, layerKind(cfg, rec.layer))) {
    return `layer ${rec.layer} (compress ratio ${cfg.compressRatios[rec.layer]}) has no ${def.name}`;
  }
  if (!stageAt(cfg, def, rec.layer, rec.pos)) return `the graph produces no ${def.name} at layer ${rec.layer} pos ${rec.pos}`;
  return undefined;
}

export async function replayDump(file: string, opts: ReplayOptions): Promise<ReplayResult> {
  const { model, cfg } = opts;
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`ds4-diff: warning: ${m}\n`));
  const meta = await readDumpMeta(file);
  if (meta.modelFingerprint === 'unknown') {
    warn(`${file} does not name its model (imported without -m); replaying it on ${model.path} unchecked`);
  } else if (meta.modelFingerprint !== model.fingerprint) {
    throw badInput(`${file} was made with model ${meta.modelFingerprint.slice(0, 12)}, not ${model.path} (${model.fingerprint.slice(0, 12)}); pass its model with -m`);
  }
  if ((meta.producer?.options as { teacherForced?: boolean } | undefined)?.teacherForced) {
    warn(`${file} is a teacher-forced capture: its stages consumed the reference's values, not the dumped ones, so its own error is its compare against the reference, not its replay`);
  }
  const records = new Map<string, StageRecord>();
  for await (const r of iterateDump(file)) records.set(stageKey(resolveStage(r.stage)?.name ?? r.stage, r.layer, r.pos), r);
  const tokenAt = (pos: number): number => {
    const t = records.get(stageKey('embed_hc', 0, pos))?.token ?? [...records.values()].find((r) => r.pos === pos && r.token >= 0)?.token ?? meta.promptTokens[pos];
    if (t === undefined || t < 0) throw new Unavailable(`the token id at pos ${pos} is not in the dump`);
    if (t >= cfg.nVocab) throw new Unavailable(`token ${t} at pos ${pos} is outside the model's vocabulary (0..${cfg.nVocab - 1})`);
    return t;
  };
  const source = new DumpSource({ cfg, weights: new ModelWeights(model, cfg), token: tokenAt, lastLayer: headLayerOf(file, records.values(), cfg) }, records);

  const keep = opts.filter ?? (() => true);
  const order = [...records.values()].filter((r) => keep(r.stage, r.layer, r.pos));
  order.sort((x, y) => {
    const kx = graphOrderKey(x.stage, x.layer, x.pos), ky = graphOrderKey(y.stage, y.layer, y.pos);
    for (let i = 0; i < 4; i++) if (kx[i] !== ky[i]) return kx[i] - ky[i];
    return x.layer - y.layer || (x.stage < y.stage ? -1 : x.stage > y.stage ? 1 : 0);
  });

  const rows: ReplayRow[] = [];
  const derivedInputs: DerivedInputs = {};
  const out: ReplayResult['records'] = { replay: [], noise: [], ties: [] };
  const dumped: StageRecord[] = [];
  let group = '';
  for (const [i, rec] of order.entries()) {
    await throwIfCancelled();
    if (`${rec.layer}/${rec.pos}` !== group) {
      group = `${rec.layer}/${rec.pos}`;
      opts.onProgress?.(`pos ${rec.pos} layer ${rec.layer} (${i + 1}/${order.length} records)`);
    }
    const base = { stage: rec.stage, layer: rec.layer, pos: rec.pos };
    const why = notReplayable(rec, cfg);
    if (why) {
      rows.push({ ...base, status: 'skipped', reason: why });
      continue;
    }
    const stage = (resolveStage(rec.stage) as StageDef).name;
    let facts: StageFacts;
    source.derivedRead.clear();
    source.derivedStages.clear();
    try {
      // a replayed stage reads the producer's own outputs, fused or not: its twin reads the same inputs
      const read: Read = (s, l, q) => source.read(s, l, q);
      facts = stageFacts(source.g, stage, rec.layer, rec.pos, read, opts.approx ? read : undefined);
    } catch (e) {
      // a dumped value the step cannot use (an out-of-range row index) is an unusable input too
      if (!(e instanceof Unavailable || e instanceof RangeError || e instanceof TypeError)) throw e;
      rows.push({ ...base, status: 'skipped', reason: e.message });
      continue;
    }
    rows.push({ ...base, status: 'replayed', ...(source.derivedRead.size ? { derived: [...source.derivedRead] } : {}) });
    if (source.derivedStages.size) derivedInputs[stage] = [...new Set([...(derivedInputs[stage] ?? []), ...source.derivedStages])].sort();
    const name = { stage: rec.stage, layer: rec.layer, pos: rec.pos, token: rec.token };
    out.replay.push(makeRecord(cfg, rec.stage, rec.layer, rec.pos, rec.token, facts.values, rec.shape.reduce((a, b) => a * b, 1) === facts.values.length ? rec.shape : undefined));
    const f = factRecords(facts, name);
    if (f.noise) out.noise.push(f.noise);
    if (f.ties) out.ties.push(f.ties);
    dumped.push(rec);
  }
  const comparison = await compare({ reference: [], own: dumped, ownReference: out.replay, facts: await factsOf(out.noise, out.ties), derivedInputs, labels: { a: 'replayed', b: file } }, opts.judge);
  const skipped = rows.filter((r) => r.status === 'skipped').length;
  return {
    file,
    rows,
    comparison,
    records: out,
    counts: {
      rows: rows.length, replayed: rows.length - skipped, passed: comparison.counts.own - comparison.counts.ownFailed, failed: comparison.counts.ownFailed,
      skipped, derived: rows.filter((r) => r.derived).length,
    },
    derivedInputs,
    firstOwnFailure: comparison.firstOwnFailure,
  };
}
