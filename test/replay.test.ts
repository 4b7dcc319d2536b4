// `ds4-diff replay` (issue 7, diff/replay.ts): every dumped stage recomputed from the dump's own inputs.
// On the bundled tiny fixture (6 layers: raw, raw, ratio 4, ratio 128, ratio 4, ratio 128; sliding
// window 8; indexer top-k 2) with 13 prompt tokens, so the raw window slides (pos ≥ 8), ratio-4 layers
// close compressed windows at pos 3, 7, 11 and the indexer selects (more than 2 rows) at pos 11 and 12.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNative } from '../ascend/native.ts';
import { configFromGguf, layerKind } from '../model/config.ts';
import { defaultModelPath } from '../model/default-model.ts';
import { openGguf } from '../model/gguf.ts';
import { compileFilter } from '../reference/capture.ts';
import { runReference } from '../reference/runner.ts';
import { emittedPositions, resolveStage, STAGES, stageInLayer } from '../model/stages.ts';
import { DUMP_FORMAT_VERSION, DumpWriter, readDump } from '../diff/dump.ts';
import { replayDump, type ReplayOptions, type ReplayResult } from '../diff/replay.ts';
import { makeJudge } from '../diff/gate.ts';
import { deviceBounds } from '../ascend/budgets.ts';
import type { CompareRow } from '../diff/compare.ts';
import type { StageRecord } from '../model/stages.ts';

const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
const ready = loadNative(process.env.DS4_SIM_ADDON).ok;

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const model = await openGguf(await defaultModelPath());
const cfg = configFromGguf(model);
const tokens = [1, 5, 9, 12, 40, 7, 3, 100, 200, 11, 13, 17, 19];
const dir = mkdtempSync(join(tmpdir(), 'ds4-replay-'));

async function writeDump(file: string, recs: (tap: (r: StageRecord) => void) => Promise<unknown>, fingerprint = model.fingerprint, side = 'reference'): Promise<string> {
  const w = await DumpWriter.open(file, { formatVersion: DUMP_FORMAT_VERSION, modelFingerprint: fingerprint, promptTokens: tokens, producer: { backend: side, version: 'test', ...(side === 'device' ? { kernelMath: 'ascend' } : {}) }, side });
  await recs((r) => w.write(r));
  await w.close();
  return file;
}

const refFile = await writeDump(join(dir, 'reference.arrow'), (tap) => runReference({ model, cfg, tokens, tap }));
const byStage = (res: ReplayResult, stage: string) => res.rows.filter((r) => r.stage === stage);
/** replay judged as the simulator's kernels are (ascend kernel math) */
const replay = (file: string, o: Partial<ReplayOptions> = {}) => replayDump(file, { model, cfg, judge: makeJudge({ deviceBound: deviceBounds('ascend') }), ...o });
/** the judged row of a replayed record */
const judged = (res: ReplayResult, r: { stage: string; layer: number; pos: number }): CompareRow | undefined => res.comparison.rows.find((x) => x.stage === r.stage && x.layer === r.layer && x.pos === r.pos);
const ownStatus = (res: ReplayResult, r: { stage: string; layer: number; pos: number }) => judged(res, r)?.own?.status ?? 'skipped';

describe('replay of a reference dump', async () => {
  const res = await replay(refFile);
  const { records } = await readDump(refFile);

  it('replays every record, and the reference re-entered with its own inputs reproduces them bit for bit', () => {
    expect(res.counts).toEqual({ rows: records.length, replayed: records.length, passed: records.length, failed: 0, skipped: 0, derived: 0 });
    expect(res.comparison.counts.own).toBe(records.length);
    for (const r of res.comparison.rows) {
      const m = r.own!.metrics!;
      if (m.kind === 'f32') expect(m.maxAbs, `${r.stage} layer ${r.layer} pos ${r.pos}`).toBe(0);
      else expect(m.exact, `${r.stage} layer ${r.layer} pos ${r.pos}`).toBe(true);
    }
    expect(res.firstOwnFailure).toBeUndefined();
  });

  it('covers every registry stage, the stateful ones at the positions the math says they exist', () => {
    expect(new Set(res.rows.map((r) => r.stage))).toEqual(new Set(STAGES.map((s) => s.name)));
    // a compressed row closes at every pos with (pos+1) % ratio == 0: floor(13/4) = 3 per ratio-4 layer, none at ratio 128
    const emitted = (ratio: number) => cfg.compressRatios.filter((r) => r === ratio).length * Math.floor(tokens.length / ratio);
    expect(byStage(res, 'attn_comp_row')).toHaveLength(emitted(4) + emitted(128));
    expect(byStage(res, 'index_comp_row')).toHaveLength(emitted(4));
    // the indexer selects once it holds more rows than top-k: at pos p it holds floor((p+1)/4) rows
    const selecting = tokens.map((_, p) => p).filter((p) => Math.floor((p + 1) / 4) > cfg.indexerTopK);
    expect(byStage(res, 'index_topk').map((r) => r.pos)).toEqual(selecting.flatMap((p) => cfg.compressRatios.filter((r) => r === 4).map(() => p)));
    // raw window rows: min(pos+1, sliding window)
    const raw = records.find((r) => r.stage === 'raw_cache' && r.pos === tokens.length - 1)!;
    expect(raw.shape).toEqual([Math.min(tokens.length, cfg.slidingWindow), cfg.headDim]);
    expect(byStage(res, 'logits')).toHaveLength(1);
  });
});

describe('replay of a partial capture', async () => {
  const stages = ['q_norm', 'q_rope', 'kv_cur', 'attn_heads'];
  const file = await writeDump(join(dir, 'partial.arrow'), (tap) => runReference({ model, cfg, tokens: tokens.slice(0, 5), tap, filter: { stages } }));
  const res = await replay(file);

  it('replays what has its inputs, derives what the dump never holds one level deep, and names the missing input of the rest', () => {
    let passed = 0;
    for (const r of res.rows) {
      const where = `layer ${r.layer} pos ${r.pos}`;
      // attention also reads the compressed rows emitted so far (ratio-4 layers: one at pos 3), which need the
      // compressor's projections the dump does not hold either
      const compRows = emittedPositions(cfg, r.layer, r.pos);
      if (r.stage === 'q_rope' || (r.stage === 'attn_heads' && compRows.length === 0)) {
        expect(ownStatus(res, r)).toBe('pass');
        const m = judged(res, r)!.own!.metrics!;
        expect(m.kind === 'f32' && m.maxAbs).toBe(0);
        // the raw window is not in the dump: derived from the dumped kv_cur rows of the window
        expect(r.derived).toEqual(r.stage === 'attn_heads' ? [`raw_cache ${where}`] : undefined);
        passed++;
      } else {
        // q_raw / kv_rope / the compressed row are not dumped, and neither are their own inputs: no derivation
        expect(r.status).toBe('skipped');
        const [missing, needs] = {
          q_norm: [`q_raw ${where}`, `q_lora_norm ${where}`],
          kv_cur: [`kv_rope ${where}`, `kv_norm ${where}`],
          attn_heads: [`attn_comp_row layer ${r.layer} pos ${compRows[0]}`, `attn_comp_kv layer ${r.layer} pos 0`],
        }[r.stage as 'q_norm' | 'kv_cur' | 'attn_heads'];
        expect(r.reason).toBe(`missing input ${missing} (not dumped; deriving it needs ${needs})`);
      }
    }
    const per = 5 * cfg.nLayer;
    expect(res.counts).toMatchObject({ rows: 4 * per, replayed: passed, passed, failed: 0, skipped: 4 * per - passed, derived: passed - per });
    expect(passed).toBeGreaterThan(per);
  });

  it('a filter selects the rows to replay', async () => {
    const only = await replay(file, { filter: compileFilter({ stages: ['q_rope'], layers: [2], pos: [4] }) });
    expect(only.rows.map((r) => [r.stage, r.layer, r.pos, ownStatus(only, r)])).toEqual([['q_rope', 2, 4, 'pass']]);
  });

  it('stateful stages need their earlier positions: a dump of pos 11..12 only replays what those positions hold', async () => {
    const { records } = await readDump(refFile);
    const f = await writeDump(join(dir, 'late.arrow'), async (tap) => records.filter((r) => r.pos >= 11).forEach(tap));
    const res = await replay(f);
    const row = (stage: string, layer: number, pos: number) => {
      const r = res.rows.find((x) => x.stage === stage && x.layer === layer && x.pos === pos)!;
      return { ...r, status: r.status === 'replayed' ? ownStatus(res, r) : r.status };
    };
    // the raw window at pos 11 holds min(12, 8) rows: kv_cur of pos 4..11, the first one missing is pos 4
    expect(row('raw_cache', 0, 11)).toMatchObject({ status: 'skipped', reason: `missing input kv_cur layer 0 pos ${12 - cfg.slidingWindow}` });
    // a ratio-4 row closing at pos 11 pools the windows 4..7 and 8..11; the attention at 11 reads the row closed at 3
    expect(row('attn_comp_row', 2, 11)).toMatchObject({ status: 'skipped', reason: 'missing input attn_comp_kv layer 2 pos 4' });
    expect(row('attn_heads', 2, 11)).toMatchObject({ status: 'skipped', reason: 'missing input attn_comp_row layer 2 pos 3' });
    // raw layers attend over the raw window alone, which the dump holds as raw_cache@11
    expect(row('attn_heads', 0, 11)).toMatchObject({ status: 'pass' });
    expect(row('q_rope', 2, 12)).toMatchObject({ status: 'pass' });
    expect(res.counts.failed).toBe(0);
  });

  it('an expert id outside the model fails router_topk and skips its consumers instead of aborting', async () => {
    const { records } = await readDump(refFile);
    const il = cfg.nHashLayers; // a top-k layer: router_topk is recomputed from router_probs, not the token
    const f = await writeDump(join(dir, 'bad-expert.arrow'), async (tap) => {
      for (const r of records) {
        if (r.layer !== il || r.pos !== 0) continue;
        tap(r.stage === 'router_topk' ? { ...r, values: Int32Array.from(r.values, (v, i) => (i === 0 ? cfg.nExpert : v)) } : r);
      }
    });
    const res = await replay(f);
    const status = (s: string) => {
      const r = byStage(res, s)[0];
      return { ...r, status: r.status === 'replayed' ? ownStatus(res, r) : r.status };
    };
    expect(status('router_topk')).toMatchObject({ status: 'fail' });
    expect(judged(res, byStage(res, 'router_topk')[0])!.own!.violations.map((v) => v.key)).toEqual(['maxClearFlips']);
    for (const s of ['router_w', 'moe_gate', 'moe_up', 'moe_down']) {
      expect(status(s)).toMatchObject({ status: 'skipped', reason: `input router_topk layer ${il} pos 0 selects ${cfg.nExpert}, outside 0..${cfg.nExpert - 1}` });
    }
    // moe_mid reads the dumped gate/up rows and weights, moe_out the dumped down rows: no expert id
    expect(status('moe_mid')).toMatchObject({ status: 'pass' });
    expect(status('moe_out')).toMatchObject({ status: 'pass' });
  });

  it('a --layer N run feeds the head from layer N', async () => {
    const f = await writeDump(join(dir, 'layer1.arrow'), (tap) => runReference({ model, cfg, tokens: tokens.slice(0, 3), lastLayer: 1, tap }));
    const r = await replay(f, { filter: (s) => resolveStage(s)?.scope === 'head' });
    expect(r.rows.map((x) => [x.stage, x.pos, ownStatus(r, x)])).toEqual(['out_hc_pre', 'out_hc_w', 'out_embd', 'out_norm', 'logits'].map((s) => [s, 2, 'pass']));
    for (const x of r.comparison.rows) expect(x.own!.metrics!.kind === 'f32' && x.own!.metrics!.maxAbs).toBe(0);
  });
});

describe.skipIf(!ready)('replay of device dumps (simulated device, free-running)', async () => {
  const { runDevice } = await import('../ascend/orchestrator.ts');
  const { parseInjects } = await import('../ascend/faults.ts');
  const device = (file: string, inject: string[]) =>
    writeDump(join(dir, file), (tap) => runDevice({ model, cfg, tokens, addonPath: process.env.DS4_SIM_ADDON, inject: parseInjects(inject, 'sim', process.env.DS4_SIM_ADDON), tap }), model.fingerprint, 'device');

  it('a clean device: every stage replays within its own budget', async () => {
    const res = await replay(await device('clean.arrow', []));
    expect(res.counts.skipped).toBe(0);
    expect(res.counts.replayed).toBeGreaterThan(0);
    expect(res.comparison.counts.own).toBe(res.counts.replayed);
    expect(res.comparison.rows.filter((r) => r.status !== 'pass').map((r) => `${r.stage}/${r.layer}/${r.pos}`)).toEqual([]);
  });

  it('rope_tail:pairs-halves fails the stages rope_tail produces, not the stages fed by them', async () => {
    const file = await device('rope-fault.arrow', ['rope_tail:pairs-halves']);
    const res = await replay(file);
    // every launch of rope_tail is faulty: S5 q/kv, the inverse S10, the compressors' row RoPE and the indexer's q
    const ROPED = new Set(['q_rope', 'kv_rope', 'attn_heads_back', 'attn_comp_row', 'index_comp_row', 'index_q']);
    // a rotation by θ = 0 is the identity whatever the pairing: q/kv/heads at pos 0 and compressed rows
    // roped at their window's first position 0 (closed at pos ratio-1) are unchanged by the fault
    const ropePos = (stage: string, layer: number, pos: number) => (stage.endsWith('_comp_row') ? pos + 1 - cfg.compressRatios[layer] : pos);
    for (const r of res.rows) {
      const expected = ROPED.has(r.stage) && ropePos(r.stage, r.layer, r.pos) > 0 ? 'fail' : 'pass';
      expect(ownStatus(res, r), `${r.stage} layer ${r.layer} pos ${r.pos}`).toBe(expected);
    }
    for (const s of ['q_rope', 'kv_rope']) expect(byStage(res, s).filter((r) => ownStatus(res, r) === 'fail')).toHaveLength(cfg.nLayer * (tokens.length - 1));
    // consumers of the faulty rows (attention over them, the FP8 cache row, the indexer scores) are right
    for (const s of ['kv_cur', 'raw_cache', 'attn_heads', 'attn_low', 'index_scores', 'index_topk']) {
      expect(byStage(res, s).length).toBeGreaterThan(0);
      expect(byStage(res, s).every((r) => ownStatus(res, r) === 'pass'), s).toBe(true);
    }
    expect(res.firstOwnFailure).toMatchObject({ stage: 'q_rope', layer: 0, pos: 1 });

    const c = cli(['replay', file, '--failures']);
    expect(c.code).toBe(1);
    expect(c.out).toContain(`replayed ${res.counts.replayed} stages: ${res.counts.passed} within their own budget, ${res.counts.failed} own-error failures, 0 skipped`);
    expect(c.out).toContain('first own failure: q_rope layer 0 pos 1');
    expect(c.out).not.toMatch(/^attn_heads /m);
  });
});

describe('ds4-diff replay command', () => {
  it('exit 0 on a reference dump, JSON with the result shape', () => {
    const r = cli(['replay', refFile, '--json', '--layers', '0']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as ReplayResult;
    expect(j.file).toBe(refFile);
    expect(j.counts.failed).toBe(0);
    expect(j.counts.rows).toBe(j.rows.length);
    // layer 0 plus the embedding and the head are kept: every layer-0 stage × 13 positions, 13 embeddings, 5 head stages
    const layer0 = STAGES.filter((s) => s.scope === 'layer' && stageInLayer(s, layerKind(cfg, 0))).length;
    expect(j.counts.rows).toBe(layer0 * tokens.length + tokens.length + 5);
  });

  it('refuses a missing dump, a corrupt one and a dump of another model with one line and exit 3', async () => {
    const corrupt = join(dir, 'corrupt.arrow');
    writeFileSync(corrupt, readFileSync(refFile).subarray(0, 4000));
    const other = await writeDump(join(dir, 'other.arrow'), async (tap) => tap({ stage: 'embed_hc', layer: 0, pos: 0, token: 1, dtype: 'f32', shape: [cfg.nHc, cfg.nEmbd], values: new Float32Array(cfg.nHc * cfg.nEmbd) }), 'f'.repeat(64));
    await expect(replay(join(dir, 'nope.arrow'))).rejects.toMatchObject({ exitCode: 3, message: expect.stringMatching(/nope\.arrow: no such file$/) });
    await expect(replay(corrupt)).rejects.toMatchObject({ exitCode: 3, message: expect.stringMatching(/corrupt\.arrow: truncated Arrow file/) });
    const r = cli(['replay', other]);
    expect(r.code).toBe(3);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/other\.arrow was made with model ffffffffffff, not .*; pass its model with -m/);
  });

  it("warns on a dump whose model is 'unknown' (a ds4 import without -m) and replays it", async () => {
    const file = await writeDump(join(dir, 'unknown.arrow'), (tap) => runReference({ model, cfg, tokens: tokens.slice(0, 2), lastLayer: 0, tap, filter: { stages: ['embed_hc', 'hc_attn_mix'] } }), 'unknown');
    const warnings: string[] = [];
    const res = await replay(file, { warn: (m) => warnings.push(m) });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/does not name its model/);
    expect(res.counts).toMatchObject({ replayed: 4, passed: 4 });
  });

  it('exit 125 when nothing can be replayed', async () => {
    const file = await writeDump(join(dir, 'heads-only.arrow'), (tap) => runReference({ model, cfg, tokens: tokens.slice(0, 2), lastLayer: 0, tap, filter: { stages: ['attn_heads'] } }));
    const r = cli(['replay', file]);
    expect(r.code).toBe(125);
    expect(r.out).toContain('replayed 0 stages: 0 within their own budget, 0 own-error failures, 2 skipped');
    expect(r.err).toMatch(/nothing could be replayed .*missing input raw_cache layer 0 pos 0/);
  });
});
