// `ds4-diff engine [options] -- ENGINE ARGS...`: run a real ds4 / ds4-ascend build (or anything that
// speaks its protocol, ascend/engine.ts) as a child process with its graph dumps pointed into the run
// directory and the Ascend no-host gate on, then import its dumps as the device side, run our reference on
// the same model and tokens, compare, replay and gate like `run`.
//
// Exit codes, deciding what an unfinished engine means:
//   2   the engine printed `host fallback disabled: X` (or ran primitives on the host by its trace report
//       and no baseline accepts them): nothing it computed says anything about its device kernels alone
//   1   the compared stages regress (also when the engine died: what it did write is already wrong),
//       or a dump was rejected (its size does not fit its stage: the engine wrote something broken)
//   125 the engine died, timed out or hit an unimplemented primitive and what it wrote passes: no
//       verdict on the rest (`git bisect skip`); also when it wrote nothing comparable
//   3   bad input: options, model, prompt, an engine that cannot be started, or every dump rejected
//   0   the engine finished, every replayed stage is within its own budget and the end result within its budget
import type { Command } from 'commander';
import * as fs from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import {
  DUMP_LAYER, DUMP_NAME, DUMP_POS, DUMP_PREFIX, ENGINE_LOG_CAP, NO_HOST_FALLBACK, TRACE_FALLBACKS,
  describeExit, dumpNameFilter, engineBackend, engineEnvironment, engineFallbackLedger, engineGraphTest, enginePromptArgs, envFlagOn, feedEngineLine, newEngineReport, runEngine,
  type EngineExit, type EngineReport,
} from '../../ascend/engine.ts';
import { deviceBounds, kernelMathOf } from '../../ascend/budgets.ts';
import { judgeRun, referencePass } from '../../ascend/pipeline.ts';
import { throwIfCancelled } from '../../diff/cancel.ts';
import { stringifyJson } from '../../diff/json.ts';
import { replayDump } from '../../diff/replay.ts';
import { makeJudge, type RunVerdict } from '../../diff/gate.ts';
import { checkEvaluatedTokens, evaluatedTokens, importDs4Dumps, listDs4Dumps, type DumpFile, type ImportSummary } from '../../diff/import.ts';
import { engineFailed, type RunManifest } from '../../diff/manifest.ts';
import { defaultRunDir, withRunDir } from '../../diff/rundir.ts';
import { loadPolicy, type Policy } from '../../diff/policy.ts';
import { iterateDump } from '../../diff/dump.ts';
import { recordKey, resolveStage } from '../../model/stages.ts';
import { openCapture } from '../../diff/sink.ts';
import type { Ds4Config } from '../../model/config.ts';
import { Ds4DiffError, EXIT, badInput } from '../../model/errors.ts';
import { ModelWeights } from '../../reference/weights.ts';
import { checkReportPaths, type ReportOutputs } from '../../reports/write.ts';
import { addModelPromptOptions, addRunDirOptions, collectList, loadModelAndPrompt, newManifest, progress, tokenPieces, type LoadedRun, type ModelPromptOptions } from '../common.ts';
import { VERSION } from '../version.ts';

interface EngineOptions extends ModelPromptOptions, ReportOutputs {
  stages: string[];
  dumpLayer?: string;
  pos?: string;
  backend?: string;
  out?: string;
  force?: boolean;
  baseline?: string | false;
  policy?: string;
  timeout?: string;
  logCap?: string;
}

export function register(program: Command): void {
  const cmd = program.command('engine').description('run a ds4 / ds4-ascend build with its graph dumps into the run directory, then compare them with the reference and gate');
  addRunDirOptions(addModelPromptOptions(cmd))
    .argument('<engine...>', 'the engine command and its arguments, after --')
    .option('--stages <list>', 'dump only these stages (canonical or ds4 graph names; repeatable, comma-separated) → DS4_METAL_GRAPH_DUMP_NAME', collectList, [])
    .option('--dump-layer <n|all>', 'dump only this layer → DS4_METAL_GRAPH_DUMP_LAYER (ds4 takes one layer or "all"; the head is layer n_layer, so a number drops the logits)')
    .option('--pos <n>', 'dump only this position → DS4_METAL_GRAPH_DUMP_POS (ds4 takes one; the head is dumped as pos 0)')
    .option('--backend <name>', 'the backend the engine runs, for the manifest and baseline matching (default: from the engine\'s --ascend/--cuda/--metal/--cpu/--backend X, else "ds4")')
    .option('--timeout <s>', 'kill the engine after this many seconds')
    .option('--log-cap <MiB>', 'engine.log keeps at most this much: the first and the last half of the engine\'s output (default 64)')
    .addHelpText('after', [
      '',
      'The engine runs with DS4_METAL_GRAPH_DUMP_PREFIX=<run dir>/dumps/ds4, DS4_ASCEND_NO_HOST_FALLBACK=1 and',
      'DS4_ASCEND_TRACE_FALLBACKS=1; a variable already set in your environment keeps your value (the manifest says so).',
      'Model, prompt, system prompt and thinking mode you do not give are read from the engine\'s own -m, -p/--prompt-file, -sys, --think/--nothink (ds4 thinks by default).',
      'With --metal-graph-test in the engine\'s arguments the reference, like ds4\'s graph test, computes only the first prompt token, through layer 0 and the head.',
      '',
      'Exit codes: 0 pass, 1 regression (or a dump rejected), 2 host fallback, 3 bad input,',
      '125 the engine died or wrote nothing comparable and what it wrote passes (no verdict).',
      '',
      'Examples:',
      '  ds4-diff engine --layer 0 -- ./ds4_ascend --ascend --metal-graph-test -m ds4flash.gguf -c 512 -n 1 --temp 0 --nothink -p Hello',
      '  ds4-diff engine --stages q_rope,attn_out --timeout 3600 -- ./ds4 -m ds4flash.gguf -c 512 -n 1 --temp 0 --nothink -p Hello',
      'A normal ds4 run computes all layers: give --layer N only for an engine that stops after layer N (ds4 --metal-graph-test: layer 0).',
    ].join('\n'))
    .action(async (engine: string[], opts: EngineOptions, command: Command) => {
      process.exitCode = await engineCommand(engine, opts, command);
    });
}

/**
 * -m / -p / --system / --think as the engine reads them, where the user gave none to ds4-diff: the
 * reference must see the tokens the engine computed (ds4 thinks by default, ds4-diff does not).
 */
function promptOptions(engine: string[], opts: EngineOptions, command: Command, warn: (m: string) => void): { merged: EngineOptions; taken: string[] } {
  const e = enginePromptArgs(engine);
  const merged = { ...opts };
  const taken: string[] = [];
  if (merged.model === undefined && e.model !== undefined) {
    merged.model = e.model;
    taken.push('-m');
  }
  if (merged.tokens !== undefined) return { merged, taken };
  if (merged.prompt === undefined && e.prompt !== undefined) {
    merged.prompt = e.prompt;
    taken.push('-p');
  } else if (merged.prompt === undefined && e.promptFile !== undefined) {
    try {
      merged.prompt = fs.readFileSync(e.promptFile, 'utf8');
    } catch (err) {
      throw badInput(`${e.promptFile}: cannot read the engine's --prompt-file (${(err as NodeJS.ErrnoException).code})`);
    }
    taken.push('--prompt-file');
  } else if (e.prompt !== undefined && e.prompt !== merged.prompt) {
    warn(`-p ${JSON.stringify(merged.prompt)} differs from the engine's -p ${JSON.stringify(e.prompt)}: the reference runs yours`);
  }
  if (command.getOptionValueSource('system') === 'default' && e.system !== undefined) {
    merged.system = e.system;
    taken.push('--system');
  }
  if (!merged.think && !merged.nothink) {
    merged.think = e.think;
    taken.push(e.think ? '--think (ds4\'s default)' : '--nothink');
  }
  return { merged, taken };
}

function validateFilters(opts: EngineOptions): { name?: { value: string; admitted: string[] }; layer?: string; pos?: string; timeout?: number; logCap: number } {
  const name = opts.stages.length ? dumpNameFilter(opts.stages) : undefined;
  if (opts.dumpLayer !== undefined && opts.dumpLayer !== 'all' && !/^\d+$/.test(opts.dumpLayer)) throw badInput(`--dump-layer: '${opts.dumpLayer}' must be a layer number or "all" (ds4 filters one layer)`);
  if (opts.pos !== undefined && !/^\d+$/.test(opts.pos)) throw badInput(`--pos: '${opts.pos}' must be one position (ds4 filters one; it reads anything else as 0)`);
  let timeout: number | undefined;
  if (opts.timeout !== undefined) {
    timeout = Number(opts.timeout);
    if (!(timeout > 0)) throw badInput(`--timeout: '${opts.timeout}' is not a positive number of seconds`);
  }
  const logCap = opts.logCap === undefined ? ENGINE_LOG_CAP : Number(opts.logCap) * 2 ** 20;
  if (!(logCap >= 1024 && Number.isFinite(logCap))) throw badInput(`--log-cap: '${opts.logCap}' is not a size in MiB (at least 0.001)`);
  return { name, layer: opts.dumpLayer, pos: opts.pos, timeout, logCap: Math.floor(logCap) };
}

/** The dumps directory must not hold dumps of an earlier run: they would be imported as this one's. */
function checkDumpDir(prefix: string): void {
  if (!fs.existsSync(dirname(prefix))) return;
  const stale = listDs4Dumps(prefix);
  if (stale.length) throw badInput(`${dirname(prefix)} already holds ${stale.length} ds4 dumps named ${basename(prefix)}_* from an earlier run; use another --out (or prefix), or --force to replace the earlier run in --out`);
}

function prepareDumpDir(prefix: string): void {
  fs.mkdirSync(dirname(prefix), { recursive: true });
  checkDumpDir(prefix);
}

interface Rejected {
  file: string;
  reason: string;
}

/** Move a refused dump out of the listing (into <dumps>/rejected/): kept on disk, never imported. */
function setAside(f: DumpFile, reason: string, rejected: Rejected[]): void {
  const aside = join(dirname(f.file), 'rejected');
  fs.mkdirSync(aside, { recursive: true });
  fs.renameSync(f.path, Buffer.concat([Buffer.from(aside + '/'), f.base]));
  rejected.push({ file: basename(f.file), reason });
}

/**
 * importDs4Dumps, setting aside each file the importer refuses (not a regular file — a symbolic link
 * could point anywhere: it is never read —, a name out of range, a size or dtype not fitting its
 * stage) while the rest imports.
 */
async function importAccepting(prefix: string, out: string, cfg: Ds4Config, tokens: number[], fingerprint: string, warn: (m: string) => void): Promise<{ summary?: ImportSummary; rejected: Rejected[] }> {
  const rejected: Rejected[] = [];
  if (!listDs4Dumps(prefix).length) return { rejected };
  const summary = await importDs4Dumps(prefix, {
    out, cfg, promptTokens: tokens, modelFingerprint: fingerprint, version: VERSION, warn,
    onReject: (f, reason) => setAside(f, reason, rejected),
  });
  return { summary: summary.files ? summary : undefined, rejected };
}

/** The dump inventory for the manifest: per graph name, how many files, which layers and positions. */
function inventory(r: EngineReport): Array<{ name: string; stage?: string; dumps: number; layers: number[]; positions: number[] }> {
  const by = new Map<string, { name: string; stage?: string; dumps: number; layers: Set<number>; positions: Set<number> }>();
  for (const d of r.dumps) {
    let e = by.get(d.name);
    if (!e) by.set(d.name, (e = { name: d.name, stage: d.stage, dumps: 0, layers: new Set(), positions: new Set() }));
    e.dumps++;
    e.layers.add(d.layer);
    e.positions.add(d.pos);
  }
  const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
  return [...by.values()].map((e) => ({ name: e.name, stage: e.stage, dumps: e.dumps, layers: sorted(e.layers), positions: sorted(e.positions) }));
}

/** The prompt tokens: the engine's own list when it printed one (dump_tokens), else ours. */
function chooseTokens(run: LoadedRun, opts: EngineOptions, r: EngineReport, warn: (m: string) => void): { tokens: number[]; source: string } {
  const ours = opts.tokens !== undefined ? '--tokens' : 'tokenized here: -p rendered with the DS4 chat template, as ds4 -p does';
  if (!r.tokens) return { tokens: run.tokens, source: ours };
  const bad = r.tokens.find((t) => t >= run.cfg.nVocab);
  if (bad !== undefined || r.tokens.length === 0) {
    warn(`the engine printed token list [${r.tokens.slice(0, 8).join(', ')}${r.tokens.length > 8 ? ', ...' : ''}] that is not a prompt of this model; using the tokens ${ours}`);
    return { tokens: run.tokens, source: ours };
  }
  if (r.tokens.join(',') !== run.tokens.join(',')) warn(`the engine's prompt tokens differ from ours (${ours}); using the engine's`);
  return { tokens: r.tokens, source: 'engine output (its dump_tokens list)' };
}

async function engineCommand(engine: string[], rawOpts: EngineOptions, command: Command): Promise<number> {
  const filters = validateFilters(rawOpts);
  const policy: Policy | undefined = rawOpts.policy ? loadPolicy(rawOpts.policy) : undefined;
  checkReportPaths(rawOpts);
  const notes: string[] = [];
  const warn = (m: string) => {
    notes.push(m);
    process.stderr.write(`ds4-diff: warning: ${m}\n`);
  };
  const { merged: opts, taken } = promptOptions(engine, rawOpts, command, warn);
  const run = await loadModelAndPrompt(opts);
  const graphTest = engineGraphTest(engine);
  if (graphTest) {
    // the engine computes the first prompt token only (and layer 0 only for --metal-graph-test)
    if (graphTest.layer0Only) {
      if (run.lastLayer !== 0 && (opts.layer !== undefined || opts.layers !== undefined)) throw badInput(`${graphTest.flag} runs layer 0 only (ds4 metal_graph_decode_test); give --layer 0 or no layer option`);
      run.lastLayer = 0;
      run.allLayers = run.cfg.nLayer === 1;
    }
    run.tokens = run.tokens.slice(0, 1);
  }
  if (filters.layer !== undefined && filters.layer !== 'all' && Number(filters.layer) > run.cfg.nLayer) throw badInput(`--dump-layer ${filters.layer}: the model has layers 0..${run.cfg.nLayer - 1} and the head at ${run.cfg.nLayer}`);
  const dir = resolve(opts.out ?? defaultRunDir());

  const { env, settings } = engineEnvironment({
    [DUMP_PREFIX]: join(dir, 'dumps', 'ds4'),
    [DUMP_NAME]: filters.name?.value,
    [DUMP_LAYER]: filters.layer,
    [DUMP_POS]: filters.pos,
    [NO_HOST_FALLBACK]: '1',
    [TRACE_FALLBACKS]: '1',
  }, process.env);
  for (const s of settings) if (s.source === 'user environment') warn(`${s.name}=${JSON.stringify(s.value)} is taken from your environment (ds4-diff would set ${s.name === DUMP_PREFIX ? 'the run directory' : 'its own value'})`);
  const prefix = env[DUMP_PREFIX] ?? '';
  if (prefix === '') warn(`${DUMP_PREFIX} is empty in your environment: the engine will write no dumps`);
  else if (!opts.force) checkDumpDir(resolve(prefix));
  if (filters.name && filters.name.admitted.length > opts.stages.length) notes.push(`${DUMP_NAME}=${filters.name.value}: ds4's substring test also admits ${filters.name.admitted.join(', ')}`);

  const backend = opts.backend ?? engineBackend(engine) ?? 'ds4';
  const manifest: RunManifest = newManifest(run, backend, { engine: { argv: engine, env: settings, log: 'engine.log', promptFromEngineArgs: taken, graphTest: graphTest?.flag } });
  if (graphTest) notes.push(`${graphTest.flag}: ds4 computes only the first prompt token (id ${run.tokens[0]}) at pos 0${graphTest.layer0Only ? ', layer 0 and the head' : ''}; the reference does the same`);
  manifest.noHostFallback = envFlagOn(env[NO_HOST_FALLBACK]);
  return withRunDir({ out: dir, force: opts.force, manifest }, async (rd) => {
    // the dumps directory (after --force cleared an old run); a prefix outside the run is checked here
    if (prefix !== '') prepareDumpDir(resolve(prefix));
    const engineInfo = manifest.options.engine as Record<string, unknown>;

    // 1. the engine
    const report = newEngineReport();
    const prog = progress('engine');
    const exit: EngineExit = await runEngine(engine, {
      env, logFile: join(dir, 'engine.log'), logCapBytes: filters.logCap, timeoutSeconds: filters.timeout,
      onLine: (line, stream) => {
        if (feedEngineLine(report, line, stream)) prog.tick(`${report.dumps.length} dumps${report.lastProgress ? `, ${report.lastProgress}` : ''}`);
      },
    });
    prog.done();
    await throwIfCancelled();
    if (exit.logBytes !== undefined && exit.logKept !== undefined && exit.logKept < exit.logBytes) {
      manifest.truncatedLogs = [{ file: 'engine.log', bytes: exit.logBytes, kept: exit.logKept }];
      warn(`the engine printed ${exit.logBytes} bytes; engine.log keeps the first and the last ${Math.floor(filters.logCap / 2)} (--log-cap)`);
    }
    const exitText = describeExit(exit);
    const failed = engineFailed(exit);
    engineInfo.exit = { code: exit.code, signal: exit.signal, timedOut: exit.timedOut, seconds: Number(exit.seconds.toFixed(1)), ...(exit.limitSeconds !== undefined ? { timeoutSeconds: exit.limitSeconds } : {}), description: exitText };
    if (failed) process.stderr.write(`ds4-diff: ${exitText}; see ${join(dir, 'engine.log')}\n`);
    for (const p of report.fallbackDisabled) process.stderr.write(`ds4-diff: host fallback disabled: ${p} (reported by the engine; the no-host-fallback gate stopped it)\n`);
    for (const p of report.unimplemented) process.stderr.write(`ds4-diff: the engine has no implementation of primitive ${p} (Ascend backend primitive not implemented yet)\n`);
    for (const r of report.rejectedLines) warn(r.reason);

    // 2. tokens, then the engine's dumps → device.arrow
    const chosen = chooseTokens(run, opts, report, warn);
    let tokens = chosen.tokens;
    let source = chosen.source;
    const weights = new ModelWeights(run.model, run.cfg);
    // the prompt as we rendered it must be what the engine computed, or the reference runs another case
    if (prefix !== '') checkEvaluatedTokens(resolve(prefix), (id) => weights.embeddingRow(id), run.cfg, tokens);
    if (prefix !== '') {
      // ds4 -n N evaluates a head at the prompt's end and at each decode step, feeding back tokens it prints
      // as text: the steps it took are its head dumps and the positions its layers dumped
      const heads = report.dumps.filter((d) => d.stage === 'logits').length;
      const layerEnd = Math.max(-1, ...report.dumps.filter((d) => d.stage && resolveStage(d.stage)?.scope === 'layer').map((d) => d.pos));
      const lastPos = Math.max(tokens.length - 1 + (opts.tokens === undefined ? Math.max(heads - 1, 0) : 0), layerEnd);
      if (lastPos >= tokens.length) {
        try {
          const r = evaluatedTokens(resolve(prefix), (id) => weights.embeddingRow(id), run.cfg, tokens, lastPos);
          notes.push(`decode steps: the engine evaluated positions ${tokens.length}..${r.tokens.length - 1} past the ${tokens.length} prompt tokens; the tokens it fed back (${r.recovered.map((t) => t.id).join(', ')}) were recovered from its layer-0 dumps`);
          source += `, then ${r.recovered.length} generated tokens recovered from the engine's layer-0 dumps`;
          tokens = r.tokens;
        } catch (e) {
          if (!(e instanceof Ds4DiffError)) throw e;
          // the dumps past the prompt cannot be placed: the import rejects them by name
          warn(`the engine dumped positions up to ${lastPos}, past the ${tokens.length} tokens known, and their tokens cannot be recovered: ${e.message}`);
        }
      }
    }
    manifest.promptTokens = tokens;
    manifest.tokenPieces = tokenPieces(run.model, tokens);
    engineInfo.tokensSource = source;
    let imported: { summary?: ImportSummary; rejected: Rejected[] } = { rejected: [] };
    if (prefix !== '') imported = await importAccepting(resolve(prefix), join(dir, 'device.arrow'), run.cfg, tokens, run.model.fingerprint, warn);
    for (const r of imported.rejected) process.stderr.write(`ds4-diff: rejected dump ${r.file}: ${r.reason} (kept in dumps/rejected/, not compared)\n`);
    if (imported.summary) manifest.files.device = 'device.arrow';
    const listed = imported.summary?.files ?? 0;
    engineInfo.dumps = {
      prefix, lines: report.dumps.length, files: listed, records: imported.summary?.records ?? 0,
      unknownNames: imported.summary?.unknown ?? [], rejectedFiles: imported.rejected, rejectedLines: report.rejectedLines, inventory: inventory(report),
    };
    // ds4 rewrites the head's files at every head it evaluates: count each file once
    const reported = new Set(report.dumps.map((d) => `${d.name}/${d.layer}/${d.pos}`)).size;
    if (reported > listed + imported.rejected.length) notes.push(`the engine reported ${reported} dump files but ${listed + imported.rejected.length} are in the dump directory`);
    if (report.fallbackSummary) engineInfo.fallbackSummary = report.fallbackSummary;
    if (report.unimplemented.length) engineInfo.unimplemented = report.unimplemented;
    manifest.fallbackLedger = engineFallbackLedger(report);
    if (report.fallbackDisabled.length) manifest.fallbackStop = `host fallback disabled: ${report.fallbackDisabled.join(', ')} (the engine stopped there)`;

    const finish = (code: number) => {
      engineInfo.notes = notes;
      return rd.finish(code);
    };
    if (!imported.summary) {
      finish(report.fallbackDisabled.length ? EXIT.hostFallback : imported.rejected.length ? EXIT.badInput : EXIT.cannotEvaluate);
      if (report.fallbackDisabled.length) return EXIT.hostFallback;
      if (imported.rejected.length) throw badInput(`every dump the engine wrote was rejected (first: ${imported.rejected[0].file}: ${imported.rejected[0].reason}); is -m the GGUF the engine ran?`);
      throw new Ds4DiffError(`${exitText} and wrote no dumps to compare${prefix ? ` (under ${prefix}_*)` : ''}; is it a ds4 build that honours ${DUMP_PREFIX}? see ${join(dir, 'engine.log')}`, EXIT.cannotEvaluate);
    }

    // 3. the reference on the same model and tokens, with its facts, captured exactly where the engine
    // dumped (a filtered or unfinished engine run is judged on what it wrote, not drowned in missing rows)
    // and, when the engine finished with no layer filter, also where it should have: a stage it dumped in
    // one layer at a position, in every layer of the run that computes it there — a layer (or a stage in
    // a layer) it left out is rows on one side only, never a pass on what was not compared
    const keys = new Set<string>();
    const stages = new Set<string>();
    const layers = new Set<number>();
    const everyLayer = new Set<string>();
    for await (const rec of iterateDump(join(dir, 'device.arrow'))) {
      keys.add(recordKey(rec));
      stages.add(rec.stage);
      layers.add(rec.layer);
      if (resolveStage(rec.stage)?.scope === 'layer') everyLayer.add(`${rec.stage}/${rec.pos}`);
    }
    const layerFilter = env[DUMP_LAYER];
    const expectEveryLayer = !failed && (layerFilter === undefined || layerFilter === 'all');
    if (expectEveryLayer) for (let l = 0; l <= run.lastLayer; l++) layers.add(l);
    const expected = (r: { stage: string; layer: number; pos: number }) =>
      keys.has(recordKey(r)) || (expectEveryLayer && r.layer <= run.lastLayer && everyLayer.has(`${r.stage}/${r.pos}`));
    const filter = { stages: [...stages], layers: [...layers], pos: 'all' as const };
    const refProg = progress('reference');
    const { result } = await referencePass(rd, { ...run, tokens }, { version: VERSION, weights, filter, keep: expected, onProgress: (m) => refProg.tick(m) });
    refProg.done();

    // 4. replay: every dumped stage recomputed by the reference from the engine's own inputs, with its facts:
    // the own error of each of the engine's kernels, whatever came before it
    const math = kernelMathOf(manifest);
    const rprog = progress('replay');
    try {
      const judge = makeJudge({ deviceBound: deviceBounds(math), policy });
      const rp = await replayDump(join(dir, 'device.arrow'), { model: run.model, cfg: run.cfg, judge, approx: math === 'ascend', warn, onProgress: (m) => rprog.tick(m) });
      const replayMeta = { modelFingerprint: run.model.fingerprint, promptTokens: tokens, producer: { backend: 'reference', version: VERSION, replayOf: 'device.arrow', derivedInputs: rp.derivedInputs } };
      for (const [side, recs] of [['replay', rp.records.replay], ['replay-noise', rp.records.noise], ['replay-ties', rp.records.ties]] as const) {
        const sink = await openCapture(dir, side, replayMeta);
        for (const r of recs) sink.tap(r);
        await sink.close();
        manifest.files[side] = sink.file;
      }
      const { records: _, comparison: __, ...rest } = rp;
      fs.writeFileSync(join(dir, 'replay.json'), stringifyJson(rest));
      const first = rp.firstOwnFailure;
      engineInfo.replay = { file: 'replay.json', kernelMath: math, counts: rp.counts, firstOwnFailure: first && { stage: first.stage, layer: first.layer, pos: first.pos } };
      if (rp.counts.skipped) notes.push(`replay: ${rp.counts.skipped} dumped rows could not be recomputed from the dump (replay.json says why): their own error is unknown`);
    } catch (e) {
      if (!(e instanceof Ds4DiffError)) throw e;
      warn(`replay of ${join(dir, 'device.arrow')} failed: ${e.message}; only the free-running rows are judged`);
    } finally {
      rprog.done();
    }
    engineInfo.notes = notes;
    rd.save();

    // 5. the verdict (as `run`), with what an unfinished engine or a broken dump means (see the file comment),
    // read back from the manifest as `gate` reads it (diff/gate.ts recordedProblems)
    // `node double.mjs`, `nohup ./ds4_ascend`: name the program, not its launcher
    const program = /^(node|python3?|sh|bash|env|nohup|timeout)$/.test(basename(engine[0])) && engine[1] ? basename(engine[1]) : basename(engine[0]);
    let v: RunVerdict;
    try {
      v = await judgeRun(rd, {
        title: (baseline) => `ds4-diff engine: ${program}, ${tokens.length} tokens, layers 0..${run.lastLayer}, ${backend}/${math}${baseline ? `, baseline ${baseline}` : ''}`,
        baseline: opts.baseline, policy, notes: [`prompt tokens: ${source}`, ...notes], reports: opts,
      });
    } catch (e) {
      finish(e instanceof Ds4DiffError ? e.exitCode : EXIT.cannotEvaluate);
      throw e;
    }
    const code = v.verdict.exitCode;
    for (const p of report.fallbackDisabled) v.verdict.reasons.unshift(`host fallback disabled: ${p} (the engine stopped there)`);
    // `node double.mjs`, `nohup ./ds4_ascend`: name the program, not its launcher
    if (!opts.json) {
      const top = result.top.map((t) => `${t.id}:${t.logit.toFixed(3)}`).join(' ');
      process.stdout.write(`${exitText}; ${listed} dumps imported${imported.rejected.length ? `, ${imported.rejected.length} rejected` : ''}\nreference top-5: ${top}\nrun directory: ${dir}\n`);
      if (code === EXIT.regression) process.stdout.write(`which kernel: ds4-diff bisect ${dir} -m ${run.modelPath}\n`);
    }
    if (code !== EXIT.ok) process.stderr.write(`ds4-diff: exit ${code}: ${v.verdict.reasons[0] ?? v.verdict.line}\n`);
    return finish(code);
  });
}
