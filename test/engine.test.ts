// `ds4-diff engine`: the ds4 engine protocol (ascend/engine.ts) against the C's own formats, and the
// command end to end against the test double (test/ds4-engine-double.mjs, our simulated device behind
// ds4's dump/gate protocol), run as a user runs it: child processes, exit codes, the run directory.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  LineSplitter, describeExit, ds4WantsDump, dumpNameFilter, engineEnvironment, engineFallbackLedger, enginePromptArgs, feedEngineLine, newEngineReport, parseEngineLine,
} from '../ascend/engine.ts';
import { loadNative } from '../ascend/native.ts';
import { runDevice } from '../ascend/orchestrator.ts';
import { readDump } from '../diff/dump.ts';
import type { RunManifest } from '../diff/manifest.ts';
import { configFromGguf } from '../model/config.ts';
import { defaultModelPath } from '../model/default-model.ts';
import { Ds4DiffError } from '../model/errors.ts';
import { openGguf } from '../model/gguf.ts';
import { STAGES, stageInLayer } from '../model/stages.ts';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'cli', 'ds4-diff.js');
const DOUBLE = join(ROOT, 'test', 'ds4-engine-double.mjs');
const ready = loadNative(process.env.DS4_SIM_ADDON).ok;

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', ...env }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const tmp = () => mkdtempSync(join(tmpdir(), 'ds4-engine-'));
const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as RunManifest;
const engineOf = (m: RunManifest) => m.options.engine as Record<string, any>;
// a ds4-ascend build (--ascend: judged under the Ascend kernel math); 5 prompt tokens: BOS, <｜User｜>, Hello, <｜Assistant｜>, </think> (empty system prompt, --nothink)
const DOUBLE_ARGS = ['--ascend', '-sys', '', '--nothink', '-p', 'Hello', '--layers', '0'];
const engine = (dir: string, double: string[] = [], opts: string[] = [], env: Record<string, string> = {}) =>
  cli(['engine', '--layer', '0', '--out', dir, ...opts, '--', process.execPath, DOUBLE, ...DOUBLE_ARGS, ...double], env);

describe('engine protocol lines (formats of ds4.c and ds4_ascend.c)', () => {
  it('parses each printf format into its fields', () => {
    // fprintf(stderr, "ds4: dumped %s layer %u pos %u to %s\n", ...)
    expect(parseEngineLine('ds4: dumped Qcur layer 3 pos 17 to /r/dumps/ds4_Qcur-3_pos17.bin')).toEqual({ kind: 'dumped', name: 'Qcur', layer: 3, pos: 17, path: '/r/dumps/ds4_Qcur-3_pos17.bin' });
    expect(parseEngineLine('ds4: Ascend host fallback disabled: routed_moe_iq2_q2')).toEqual({ kind: 'fallback-disabled', primitive: 'routed_moe_iq2_q2' });
    expect(parseEngineLine('ds4: Ascend backend primitive not implemented yet: indexer_topk')).toEqual({ kind: 'unimplemented', primitive: 'indexer_topk' });
    expect(parseEngineLine('ds4: Ascend host fallback summary: calls=12 to_host=1.50 MiB to_device=0.25 MiB')).toEqual({ kind: 'fallback-summary', calls: 12, toHostMiB: 1.5, toDeviceMiB: 0.25 });
    expect(parseEngineLine('ds4: Ascend host fallback: swiglu calls=7 to_host=0.02 MiB to_device=0.01 MiB')).toEqual({ kind: 'fallback', primitive: 'swiglu', calls: 7, toHostMiB: 0.02, toDeviceMiB: 0.01 });
    // dump_tokens_fp: "[" ids joined by ", " "]"
    expect(parseEngineLine('[0, 558, 284, 559, 561]')).toEqual({ kind: 'tokens', ids: [0, 558, 284, 559, 561] });
    expect(parseEngineLine('ds4: gpu prefill layer 7/43')).toEqual({ kind: 'progress', text: 'gpu prefill layer 7/43' });
    for (const other of ['ds4: context buffers 12.00 MiB (ctx=512, backend=ascend)', '   284  Hello', 'Hello! How can I assist you today', '[1,2]']) expect(parseEngineLine(other), other).toBeUndefined();
  });

  it('never takes a dumped name that could be a path', () => {
    const r = newEngineReport();
    for (const name of ['../../etc/passwd', 'a/b', '..', 'x\\y', 'Qcur'])
      feedEngineLine(r, `ds4: dumped ${name} layer 0 pos 0 to /somewhere`);
    expect(r.dumps).toEqual([{ name: 'Qcur', layer: 0, pos: 0, stage: 'q_rope' }]);
    expect(r.rejectedLines.map((x) => x.line)).toEqual(['../../etc/passwd', 'a/b', '..', 'x\\y'].map((n) => `ds4: dumped ${n} layer 0 pos 0 to /somewhere`));
  });

  it('turns the gate lines into the fallback ledger (MiB back to bytes)', () => {
    const r = newEngineReport();
    feedEngineLine(r, 'ds4: Ascend host fallback disabled: hc_split_sinkhorn');
    feedEngineLine(r, 'ds4: Ascend host fallback summary: calls=3 to_host=1.50 MiB to_device=0.25 MiB');
    feedEngineLine(r, 'ds4: Ascend host fallback: swiglu calls=3 to_host=1.50 MiB to_device=0.25 MiB');
    const l = engineFallbackLedger(r);
    expect(l.map((e) => [e.primitive, e.calls, e.bytesToHost, e.bytesToDevice])).toEqual([
      ['hc_split_sinkhorn', 0, 0, 0],
      ['swiglu', 3, 1.5 * 1048576, 0.25 * 1048576],
    ]);
    // token lists count only on stdout, where dump_tokens prints them
    feedEngineLine(r, '[1, 2, 3]', 'stderr');
    expect(r.tokens).toBeUndefined();
    feedEngineLine(r, '[4, 5]', 'stdout');
    feedEngineLine(r, '[6]', 'stdout');
    expect(r.tokens).toEqual([4, 5]);
  });

  it('describes how the engine ended, naming a kill', () => {
    expect(describeExit({ code: 137, signal: null, timedOut: false, seconds: 1 })).toBe('engine exited with 137 (killed)');
    expect(describeExit({ code: null, signal: 'SIGKILL', timedOut: false, seconds: 1 })).toBe('engine killed by SIGKILL (exit 137 in a shell)');
    expect(describeExit({ code: 139, signal: null, timedOut: false, seconds: 1 })).toBe('engine exited with 139 (crashed)');
    expect(describeExit({ code: 1, signal: null, timedOut: false, seconds: 1 })).toBe('engine exited with 1');
    expect(describeExit({ code: null, signal: 'SIGTERM', timedOut: true, seconds: 30 })).toBe('engine killed by SIGTERM after the 30 s timeout (exit 143 in a shell)');
  });
});

describe('ds4 dump filters (metal_graph_debug_wants)', () => {
  const env = (o: Record<string, string>) => ({ DS4_METAL_GRAPH_DUMP_PREFIX: '/r/ds4', ...o });
  it('NAME is a substring test of the variable, LAYER is one layer or all, POS one position', () => {
    expect(ds4WantsDump({}, 'Qcur', 0, 0)).toBe(false);
    expect(ds4WantsDump({ DS4_METAL_GRAPH_DUMP_PREFIX: '' }, 'Qcur', 0, 0)).toBe(false);
    expect(ds4WantsDump(env({}), 'Qcur', 5, 9)).toBe(true);
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_NAME: 'Qcur,KVcur' }), 'KVcur', 0, 0)).toBe(true);
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_NAME: 'Qcur,KVcur' }), 'Qraw', 0, 0)).toBe(false);
    // strstr: the longer name admits its prefix
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_NAME: 'hc_attn_pre_mixes' }), 'hc_attn_pre', 0, 0)).toBe(true);
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_LAYER: 'all' }), 'Qcur', 42, 0)).toBe(true);
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_LAYER: '2' }), 'Qcur', 2, 0)).toBe(true);
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_LAYER: '2' }), 'result_output', 43, 0)).toBe(false);
    // strtoul reads text as 0
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_LAYER: 'first' }), 'Qcur', 0, 0)).toBe(true);
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_POS: '3' }), 'Qcur', 0, 3)).toBe(true);
    expect(ds4WantsDump(env({ DS4_METAL_GRAPH_DUMP_POS: '3' }), 'Qcur', 0, 4)).toBe(false);
  });

  it('maps stages to the graph names ds4 dumps them under', () => {
    expect(dumpNameFilter(['q_rope', 'attn_out'])).toEqual({ value: 'Qcur,attn_out', admitted: ['Qcur', 'attn_out'] });
    expect(dumpNameFilter(['hc_attn_mix']).admitted.sort()).toEqual(['hc_attn_pre', 'hc_attn_pre_mixes']);
    expect(() => dumpNameFilter(['embed_hc'])).toThrow(/no ds4 graph-dump name/);
    expect(() => dumpNameFilter(['nope'])).toThrow(Ds4DiffError);
  });

  it('a variable set in the user environment wins, even when empty', () => {
    const { env, settings } = engineEnvironment({ A: '1', B: '1', C: undefined }, { B: '0', D: 'x' });
    expect([env.A, env.B, env.C, env.D]).toEqual(['1', '0', undefined, 'x']);
    expect(settings.map((s) => s.source)).toEqual(['ds4-diff', 'user environment', 'ds4-diff']);
    expect(engineEnvironment({ A: '1' }, { A: '' }).env.A).toBe('');
  });

  it('reads the prompt options from ds4\'s argv (ds4 thinks by default)', () => {
    expect(enginePromptArgs(['./ds4', '--ascend', '-m', 'm.gguf', '-c', '512', '-p', 'Hello'])).toEqual({ model: 'm.gguf', prompt: 'Hello', think: true });
    expect(enginePromptArgs(['./ds4', '--nothink', '-sys', '', '--prompt-file', 'p.txt'])).toEqual({ promptFile: 'p.txt', system: '', think: false });
  });
});

describe.skipIf(!ready)('ds4-diff engine -- the test double', async () => {
  const modelPath = await defaultModelPath();
  const model = await openGguf(modelPath);
  const cfg = configFromGguf(model);
  // what ds4 dumps for one position of a layer of layer 0's kind, and for the head (dumped once)
  const graph = (s: (typeof STAGES)[number]) => !!s.aliases.graph?.length;
  const perPos = STAGES.filter((s) => s.scope === 'layer' && graph(s) && stageInLayer(s, cfg.compressRatios[0] === 0 ? 'raw' : cfg.compressRatios[0] === 4 ? 'ratio4' : 'ratio128')).length;
  const headStages = STAGES.filter((s) => s.scope === 'head' && graph(s)).length;
  const T = 5;

  it('the README\'s examples as written: a ds4 build without --ascend computes and is judged in exact f32 (exit 0), a killed one is no verdict (125)', () => {
    const clean = cli(['engine', '--layer', '0', '--out', join(tmp(), 'run'), '--', process.execPath, DOUBLE, '-p', 'Hello', '--layers', '0']);
    expect(clean.code, clean.out + clean.err).toBe(0);
    expect(clean.out).toMatch(/^ds4-diff engine: .*ds4\/exact/m);
    const killed = cli(['engine', '--layer', '0', '--out', join(tmp(), 'run'), '--', process.execPath, DOUBLE, '-p', 'Hello', '--layers', '0', '--crash-after', '20']);
    expect(killed.code, killed.out + killed.err).toBe(125);
  });

  it('gate and bisect of an engine run directory keep what the engine recorded besides its rows: killed is no verdict (125), a rejected dump a failure (1), never a pass', () => {
    const verdict = (out: string) => out.split('\n').find((l) => /^(PASS|FAIL|NO VERDICT)/.test(l));
    const killed = join(tmp(), 'run');
    const k = cli(['engine', '--layer', '0', '--out', killed, '--', process.execPath, DOUBLE, '-p', 'Hello', '--layers', '0', '--crash-after', '200']);
    expect(k.code, k.out + k.err).toBe(125);
    const kg = cli(['gate', killed]);
    expect([kg.code, verdict(kg.out)]).toEqual([125, verdict(k.out)]);
    const kb = cli(['baseline', 'record', killed, '--out', join(tmp(), 'b.json')]);
    expect(kb.code).toBe(3);
    expect(kb.err.trim()).toMatch(/^ds4-diff: \S+: engine killed by SIGKILL .*; a baseline records a passing run$/);
    const dir = tmp();
    const target = join(dir, '..', `${basename(dir)}-outside.bin`);
    writeFileSync(target, Buffer.alloc(4 * cfg.nEmbd));
    const l = engine(dir, ['--link', `attn_norm-0_pos3.bin=${target}`]);
    expect(l.code).toBe(1);
    const lg = cli(['gate', dir]);
    expect([lg.code, verdict(lg.out)]).toEqual([1, verdict(l.out)]);
    expect(verdict(lg.out)).toMatch(/^FAIL: rejected dump ds4_attn_norm-0_pos3\.bin: is a symbolic link/);
    // no kernel is wrong by itself, but the run fails: unresolved (125), not "nothing to blame" (0)
    const html = join(tmp(), 'bisect.html');
    const b = cli(['bisect', dir, '--html', html]);
    expect(b.code, b.out).toBe(125);
    expect(b.out).toMatch(/rejected dump ds4_attn_norm-0_pos3\.bin/);
    expect(readFileSync(html, 'utf8')).toContain(verdict(l.out));
  });

  it('a prompt that is not the one the engine computed is refused (exit 3) by the dump that shows it, not blamed on its first layer', () => {
    const r = cli(['engine', '--layer', '0', '-p', 'Goodbye', '--out', join(tmp(), 'run'), '--', process.execPath, DOUBLE, ...DOUBLE_ARGS]);
    expect(r.code, r.out).toBe(3);
    expect(r.err).toMatch(/^ds4-diff: \S+ds4_hc_attn_pre-0_pos\d+\.bin: position \d+ is not token \d+'s embedding times a weight \(cosine [-\d.]+\): the run evaluated other tokens than \[/m);
    expect(r.out).not.toMatch(/^FAIL/m);
  });

  it('round trip: a complete run directory, every dump imported and compared, gate verdict 0', async () => {
    const dir = tmp();
    const r = engine(dir);
    expect(r.err).not.toMatch(/at .*\.ts:\d+/);
    expect(r.code).toBe(0);
    expect(r.out).toContain('engine exited with 0');
    const m = manifestOf(dir);
    expect(m.complete).toBe(true);
    expect(m.exitCode).toBe(0);
    // the reference with its facts, the replay of the engine's dump with its facts
    expect(Object.keys(m.files).sort()).toEqual(['device', 'reference', 'reference-noise', 'reference-ties', 'replay', 'replay-noise', 'replay-ties']);
    for (const f of ['engine.log', 'report.md', 'junit.xml', 'report.html', 'replay.json']) expect(existsSync(join(dir, f)), f).toBe(true);
    const e = engineOf(m);
    // replay: the simulated kernels' own errors are all within their arithmetic budgets
    expect(e.replay.counts.failed).toBe(0);
    expect(e.replay.counts.replayed).toBeGreaterThan(0);
    const files = perPos * T + headStages;
    expect(e.dumps).toMatchObject({ lines: files, files, records: files, rejectedFiles: [], rejectedLines: [] });
    expect(readdirSync(join(dir, 'dumps')).length).toBe(files);
    expect(m.promptTokens).toHaveLength(T);
    expect(e.env.find((s: { name: string }) => s.name === 'DS4_METAL_GRAPH_DUMP_PREFIX')).toEqual({ name: 'DS4_METAL_GRAPH_DUMP_PREFIX', value: join(dir, 'dumps', 'ds4'), source: 'ds4-diff' });
    expect(m.noHostFallback).toBe(true);
    // the device side holds exactly the dumped stages; the head sits at the last prompt position
    const dev = await readDump(join(dir, m.files.device));
    expect(dev.records).toHaveLength(files);
    expect(dev.records.find((x) => x.stage === 'logits')).toMatchObject({ layer: cfg.nLayer, pos: T - 1 });
    // every device row has its reference row: the comparison covers all of them
    expect(r.out).toContain(`${files} rows compared (${files} judged by their own error), 0 failed, 0 on one side only`);
    // the protocol is lossless: each imported record is bit for bit what the simulated device computed
    const direct = new Map<string, Float32Array | Int32Array>();
    await runDevice({ model, cfg, tokens: m.promptTokens, lastLayer: 0, tap: (x) => direct.set(`${x.stage}/${x.layer}/${x.pos}`, x.values) });
    for (const x of dev.records) expect([...x.values], `${x.stage}/${x.layer}/${x.pos}`).toEqual([...direct.get(`${x.stage}/${x.layer}/${x.pos}`)!]);
  });

  it('ds4 prefill dumps (one file per stage and layer: the batch, the ring, the closed windows) import to the decode captures exactly', async () => {
    // layers 0..2: layer 2 is ratio 4 with the indexer; 10 tokens (default system prompt) close windows at pos 3 and 7
    const run = (dir: string, extra: string[]) => cli(['engine', '--layer', '2', '--out', dir, '--', process.execPath, DOUBLE, '-p', 'Hello', '--nothink', '--layers', '2', ...extra]);
    const dDir = tmp(), pDir = tmp();
    // (free-running over 3 layers the registry's defaults already see accumulated error: exit 0 or 1, the same for both)
    const dr = run(dDir, []), pr = run(pDir, ['--prefill']);
    expect([0, 1]).toContain(dr.code);
    expect(pr.code, pr.err).toBe(dr.code);
    const decode = new Map((await readDump(join(dDir, 'device.arrow'))).records.map((r) => [`${r.stage}/${r.layer}/${r.pos}`, r]));
    const prefill = (await readDump(join(pDir, 'device.arrow'))).records;
    const n = manifestOf(pDir).promptTokens.length;
    expect(n).toBeGreaterThan(cfg.slidingWindow); // the ring holds more rows than the window
    for (const r of prefill) {
      const d = decode.get(`${r.stage}/${r.layer}/${r.pos}`);
      expect(d, `${r.stage}/${r.layer}/${r.pos}`).toBeDefined();
      expect(r.shape).toEqual(d!.shape);
      expect(Array.from(r.values)).toEqual(Array.from(d!.values));
    }
    const where = (stage: string, layer: number) => prefill.filter((r) => r.stage === stage && r.layer === layer).map((r) => r.pos);
    for (let il = 0; il <= 2; il++) expect(where('raw_cache', il)).toEqual([n - 1]);
    expect(where('attn_comp_row', 2)).toEqual([3, 7]);
    expect(where('index_comp_row', 2)).toEqual([3, 7]);
    expect(where('q_rope', 1)).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it('a host fallback line: ledger entry naming the primitive, exit 2, partial dumps kept', async () => {
    const dir = tmp();
    const r = engine(dir, ['--disable-kernel', 'swiglu']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('host fallback disabled: swiglu');
    const m = manifestOf(dir);
    expect(m.fallbackLedger).toEqual([expect.objectContaining({ primitive: 'swiglu', calls: 0 })]);
    expect(m.exitCode).toBe(2);
    expect(engineOf(m).exit.code).toBe(1); // ds4-ascend fails the graph step at the refused primitive
    // the shared expert's swiglu comes after the router: those were dumped and compared, nothing after
    const dev = await readDump(join(dir, m.files.device));
    expect(dev.records.some((x) => x.stage === 'router_w')).toBe(true);
    expect(dev.records.some((x) => x.stage === 'shared_out' || x.pos > 0)).toBe(false);
  });

  it('environment overrides are respected: DS4_ASCEND_NO_HOST_FALLBACK=0 lets the engine fall back, its trace fills the ledger, still exit 2', () => {
    const dir = tmp();
    const r = engine(dir, ['--disable-kernel', 'swiglu'], [], { DS4_ASCEND_NO_HOST_FALLBACK: '0' });
    expect(r.code).toBe(2);
    expect(r.err).toContain('DS4_ASCEND_NO_HOST_FALLBACK="0" is taken from your environment');
    const m = manifestOf(dir);
    expect(m.noHostFallback).toBe(false);
    expect(engineOf(m).env.find((s: { name: string }) => s.name === 'DS4_ASCEND_NO_HOST_FALLBACK')).toEqual({ name: 'DS4_ASCEND_NO_HOST_FALLBACK', value: '0', source: 'user environment' });
    // the shared expert's swiglu runs once per token in layer 0: T calls, all on the host
    expect(m.fallbackLedger).toEqual([expect.objectContaining({ primitive: 'swiglu', calls: T })]);
    expect(engineOf(m).fallbackSummary).toMatchObject({ calls: T });
    expect(engineOf(m).dumps.files).toBe(perPos * T + headStages);
  });

  it('an unimplemented primitive is parsed, named, and the passing partial run gives no verdict (125)', () => {
    const dir = tmp();
    const r = engine(dir, ['--unimplemented', 'indexer_topk', '--fail-after', '12']);
    expect(r.code).toBe(125);
    expect(r.err).toContain('indexer_topk');
    const m = manifestOf(dir);
    expect(engineOf(m).unimplemented).toEqual(['indexer_topk']);
    expect(engineOf(m).exit).toMatchObject({ code: 1, signal: null, description: 'engine exited with 1' });
    expect(engineOf(m).dumps.files).toBe(12);
    expect(m.exitCode).toBe(125);
  });

  it('an engine killed midway: its dumps are compared, the message says killed, exit 125 or 1, never 0', () => {
    const dir = tmp();
    const r = engine(dir, ['--crash-after', '20']);
    expect(r.code).toBe(125);
    expect(r.err).toContain('engine killed by SIGKILL (exit 137 in a shell)');
    const m = manifestOf(dir);
    expect(m.complete).toBe(true);
    expect(engineOf(m).dumps.files).toBe(20);
    expect(r.out).toMatch(/20 rows compared \(\d+ judged by their own error\), 0 failed/);

    // behind a shell (nohup/ssh wrappers do the same) the kill arrives as exit status 137
    const dir2 = tmp();
    const wrapped = cli(['engine', '--layer', '0', '--out', dir2, '--', 'sh', '-c', '"$@"; exit $?', 'sh', process.execPath, DOUBLE, ...DOUBLE_ARGS, '--crash-after', '20']);
    expect(wrapped.code).toBe(125);
    expect(wrapped.err).toContain('engine exited with 137 (killed)');

    // and what it did write already regresses: exit 1; replay puts the fault on the stage that has it
    // (+0.5 on every rms_norm_weight output: attn_norm is the first, its own error far past its budget)
    const dir3 = tmp();
    const bad = engine(dir3, ['--crash-after', '20', '--inject', 'rms_norm_weight:bias=0.5']);
    expect(bad.code).toBe(1);
    expect(engineOf(manifestOf(dir3)).replay.firstOwnFailure).toEqual({ stage: 'attn_norm', layer: 0, pos: 0 });
    expect(bad.out).toContain('first stage wrong by itself: attn_norm layer 0 pos 0');
  });

  it('a dump whose size does not fit its stage is rejected by name, kept aside, the rest compared; exit 1', () => {
    const dir = tmp();
    const r = engine(dir, ['--corrupt', 'Qcur']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/rejected dump ds4_Qcur-0_pos0\.bin: \d+ values do not fit stage q_rope/);
    const m = manifestOf(dir);
    const rej = engineOf(m).dumps.rejectedFiles as Array<{ file: string }>;
    expect(rej.map((x) => x.file).sort()).toEqual(Array.from({ length: T }, (_, p) => `ds4_Qcur-0_pos${p}.bin`));
    expect(readdirSync(join(dir, 'dumps', 'rejected')).length).toBe(T);
    expect(engineOf(m).dumps.records).toBe(perPos * T + headStages - T);
  });

  it('a traversal attempt in a dumped line, or a dump that is a link, is refused and not followed', () => {
    const dir = tmp();
    const outside = join(tmp(), 'secret-0_pos0.bin');
    writeFileSync(outside, Buffer.alloc(12));
    const r = engine(dir, ['--say', `ds4: dumped ../secret layer 0 pos 0 to ${outside}`]);
    expect(r.code).toBe(0);
    const m = manifestOf(dir);
    expect(engineOf(m).dumps.rejectedLines).toEqual([expect.objectContaining({ line: `ds4: dumped ../secret layer 0 pos 0 to ${outside}` })]);
    expect(engineOf(m).dumps.files).toBe(perPos * T + headStages);
    expect(engineOf(m).dumps.unknownNames).toEqual([]);

    // a dump file that is a symbolic link (here to a file outside the run, with a fitting size) is never read
    const dir2 = tmp();
    const target = join(dir2, '..', `${basename(dir2)}-outside.bin`);
    writeFileSync(target, Buffer.alloc(4 * cfg.nEmbd));
    const l = engine(dir2, ['--link', `attn_norm-0_pos7.bin=${target}`]);
    expect(l.code).toBe(1);
    expect(l.err).toContain('rejected dump ds4_attn_norm-0_pos7.bin: is a symbolic link; not read');
    expect(engineOf(manifestOf(dir2)).dumps.files).toBe(perPos * T + headStages);
  });

  it('takes the engine\'s printed prompt tokens over its own tokenization, and says so', () => {
    const dir = tmp();
    // ds4-diff is told --think, the engine runs --nothink: the engine's tokens are the ones that ran
    const r = engine(dir, ['--print-tokens'], ['--think']);
    expect(r.code).toBe(0);
    const m = manifestOf(dir);
    expect(engineOf(m).tokensSource).toContain('engine output');
    const printed = readFileSync(join(dir, 'engine.log'), 'utf8').split('\n').find((l) => l.startsWith('['))!;
    expect(`[${m.promptTokens.join(', ')}]`).toBe(printed);
    expect(r.err).toContain('differ from ours');
  });

  it('honours --stages and --pos through ds4\'s filter variables', () => {
    const dir = tmp();
    const r = engine(dir, [], ['--stages', 'q_rope,attn_out', '--pos', '3']);
    expect(readdirSync(join(dir, 'dumps')).sort()).toEqual(['ds4_Qcur-0_pos3.bin', 'ds4_attn_out-0_pos3.bin']);
    // their inputs were not dumped: no own error, no logits — compared, but no evidence either way (125)
    expect(r.out).toContain('2 rows compared (0 judged by their own error), 0 failed, 0 on one side only');
    expect(r.code).toBe(125);
    expect(r.out).toMatch(/^NO VERDICT: no row was judged by its own error or by the end result/m);
  });

  it('--metal-graph-test: the first token through layer 0 and the head, gated like the shipped Atlas baseline', () => {
    const dir = tmp();
    // the Atlas baseline's shape (baselines/atlas-300i-duo-q2-imatrix-layer0-hello.json): matched by model
    // file name and prompt text, layer-0 stages and the logits (layer n_layer) at pos 0, max_abs only
    const atlasLike = (logitsMaxAbs: number) => {
      const file = join(dir, '..', `${basename(dir)}-${logitsMaxAbs}.json`);
      writeFileSync(file, JSON.stringify({
        formatVersion: 2, kind: 'ds4-diff-baseline', recordedAt: '2026-11-23T00:00:00Z',
        provenance: { source: 'a published graph-test log (test)' },
        case: { modelFile: basename(modelPath), prompt: 'Hello', layers: { last: 0, all: false }, backend: 'ascend' },
        growth: 2, own: [], deviations: [], fallbacks: [],
        inherited: [
          ...['hc_attn_post_w', 'hc_attn_comb', 'q_rope', 'after_attn_hc'].map((stage) => ({ stage, layer: 0, pos: 0, bounds: { maxAbs: 0.05 } })),
          { stage: 'logits', layer: cfg.nLayer, pos: 0, bounds: { maxAbs: logitsMaxAbs } },
        ],
      }));
      return file;
    };
    const args = (baseline: string, out: string) => ['engine', '--json', '--out', out, '--baseline', baseline, '--', process.execPath, DOUBLE, '--ascend', '--metal-graph-test', '-sys', '', '--nothink', '-p', 'Hello'];
    const r = cli(args(atlasLike(0.05), dir));
    expect(r.code, r.err).toBe(0);
    const m = manifestOf(dir);
    // ds4's graph test computes prompt token 0 only (BOS), at pos 0
    expect(m).toMatchObject({ backend: 'ascend', prompt: 'Hello', promptTokens: [0], layers: { last: 0, all: false } });
    // each published stage's free-running row is held to the baseline's envelope, and within it
    const rows = JSON.parse(r.out).comparison.rows as Array<{ stage: string; layer: number; pos: number; free?: { status: string; tolerance: { bounds: Array<{ key: string; limit: number; from: string }> } } }>;
    for (const stage of ['hc_attn_post_w', 'hc_attn_comb', 'q_rope', 'after_attn_hc', 'logits']) {
      const row = rows.find((x) => x.stage === stage && x.pos === 0)!;
      expect(row.free!.status, stage).toBe('pass');
      expect(row.free!.tolerance.bounds.find((b) => b.key === 'maxAbs')!.from, stage).toMatch(/^baseline .*free-running envelope/);
    }
    const dir2 = tmp();
    expect(cli(args(atlasLike(1e-6), dir2)).code).toBe(1);
  });
});

describe('engine output: lines in linear time, a capped log, the timeout named', () => {
  it('splits lines across chunk boundaries (\\r, \\n, \\r\\n, split UTF-8) and cuts an endless line for parsing', () => {
    const lines: string[] = [];
    const sp = new LineSplitter((l) => lines.push(l));
    const euro = Buffer.from('€');
    for (const c of [Buffer.from('ds4: dumped Qcur layer 0 pos 0 to x\r'), Buffer.from('\nprefill layer 1/43\rnext'), euro.subarray(0, 1), Buffer.concat([euro.subarray(1), Buffer.from('\n\n')])]) sp.push(c);
    sp.push(Buffer.alloc(200_000, 0x61));
    sp.end();
    expect(lines.slice(0, 4)).toEqual(['ds4: dumped Qcur layer 0 pos 0 to x', 'prefill layer 1/43', 'next€', '']);
    expect(lines).toHaveLength(5);
    expect(lines[4]).toBe('a'.repeat(64 << 10));
  });

  it('engine.log keeps the head and the tail under --log-cap, says so in the log and the manifest; the timeout message gives the limit', () => {
    const dir = tmp();
    // 400 KB on stdout without a newline, then a last line
    const prog = "process.stdout.write('H'.repeat(1000) + 'x'.repeat(398000) + 'T'.repeat(1000)); process.stdout.write('\\nlast line\\n')";
    const r = cli(['engine', '-p', 'Hello', '--log-cap', '0.0625', '--out', dir, '--', process.execPath, '-e', prog]);
    expect(r.code).toBe(125);
    const log = readFileSync(join(dir, 'engine.log'), 'utf8');
    const cap = 65536;
    expect(log.startsWith('H'.repeat(1000) + 'x')).toBe(true);
    expect(log.endsWith('T'.repeat(1000) + '\nlast line\n')).toBe(true);
    expect(log).toContain(`[ds4-diff: engine.log is capped at ${cap} bytes: ${400011 - cap} bytes of the engine's output left out here; the first ${cap / 2} and the last ${cap / 2} bytes are kept]`);
    expect(manifestOf(dir).truncatedLogs).toEqual([{ file: 'engine.log', bytes: 400011, kept: cap }]);
    expect(r.err).toContain('engine.log keeps the first and the last 32768 (--log-cap)');

    const hung = cli(['engine', '-p', 'Hello', '--out', tmp(), '--timeout', '0.5', '--', process.execPath, '-e', 'setTimeout(() => {}, 60000)']);
    expect(hung.code).toBe(125);
    expect(hung.err).toContain('engine killed by SIGTERM after the 0.5 s timeout');
  });
});

describe('ds4-diff engine: bad input and dead engines', () => {
  it('one line and exit 3 for what the user got wrong', () => {
    const none = cli(['engine', '-p', 'Hello', '--out', tmp()]);
    expect(none.code).toBe(3);
    const missing = cli(['engine', '-p', 'Hello', '--out', tmp(), '--', '/nonexistent/ds4_ascend', '-p', 'Hello']);
    expect(missing.code).toBe(3);
    expect(missing.err.trim()).toBe("ds4-diff: engine '/nonexistent/ds4_ascend': no such program");
    for (const [opt, val, what] of [['--pos', '1,2', '--pos'], ['--stages', 'embed_hc', 'embed_hc'], ['--dump-layer', 'first', '--dump-layer'], ['--timeout', '0', '--timeout']]) {
      const r = cli(['engine', '-p', 'Hello', opt, val, '--', 'true']);
      expect(r.code, opt).toBe(3);
      expect(r.err.trim().split('\n'), opt).toHaveLength(1);
      expect(r.err, opt).toContain(what);
    }
    const dir = tmp();
    mkdirSync(join(dir, 'dumps'));
    writeFileSync(join(dir, 'dumps', 'ds4_Qcur-0_pos0.bin'), Buffer.alloc(4));
    const stale = cli(['engine', '-p', 'Hello', '--out', dir, '--', 'true']);
    expect(stale.code).toBe(3);
    expect(stale.err).toContain('from an earlier run');
  });

  it('an engine that writes nothing is reported (125); a hung one is killed at --timeout', () => {
    const dir = tmp();
    const r = cli(['engine', '-p', 'Hello', '--out', dir, '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.err).toContain('engine exited with 0 and wrote no dumps');
    expect(manifestOf(dir)).toMatchObject({ complete: true, exitCode: 125 });
    const hung = cli(['engine', '-p', 'Hello', '--out', tmp(), '--timeout', '1', '--', process.execPath, '-e', 'setTimeout(() => {}, 60000)']);
    expect(hung.code).toBe(125);
    expect(hung.err).toContain('engine killed by SIGTERM after the 1 s timeout');
  });
});
