// A stand-in for a ds4 / ds4-ascend build, for `ds4-diff engine` tests: it speaks the engine protocol
// (ascend/engine.ts: DS4_METAL_GRAPH_DUMP_* dumps and `ds4: dumped ...` lines, the Ascend gate's
// fallback lines, dump_tokens' token list) and computes with the project's own simulated device
// (ascend/orchestrator.ts runDevice, free-running). Run it through test/ds4-engine-double.mjs.
//
// ds4's flags it reads (ds4_cli.c): -m/--model (default: the bundled tiny model), -p/--prompt,
// --prompt-file, -sys/--system, --think/--think-max/--nothink (ds4 defaults to thinking), --dump-tokens
// (print the prompt tokens and exit without inference), --metal-graph-test / --metal-graph-full-test (the
// first prompt token only, through layer 0 / all layers, then the head), --ascend / --backend ascend (ds4-ascend: the
// device computes with the AscendC kernels' approximations; without, in exact f32 as a CPU/Metal/CUDA ds4 build is
// judged). Other ds4 flags (-c N, -n N, --temp F, ...) are accepted and ignored. Like ds4 it writes a stage only under its graph-dump name (the registry's
// first graph alias; stages without one are never dumped), the head at layer n_layer and pos 0, and
// honours DS4_METAL_GRAPH_DUMP_NAME/LAYER/POS with ds4's own test (ds4WantsDump). Like ds4-ascend it
// stops at a missing kernel with `ds4: Ascend host fallback disabled: <primitive>` (exit 1) when
// DS4_ASCEND_NO_HOST_FALLBACK is on, else runs it on the host and, with DS4_ASCEND_TRACE_FALLBACKS on,
// prints the fallback summary at exit.
//
// Double-only flags (what a test needs a broken engine to do):
//   --layers N               run layers 0..N only (ds4 always runs all; the head follows layer N)
//   --inject SPEC            plant a kernel fault (ascend/faults.ts), repeatable
//   --disable-kernel K       the build lacks device kernel K (its primitive needs the host), repeatable
//   --print-tokens           print the prompt tokens in dump_tokens' format, then run
//   --unimplemented WHAT     after --fail-after N dumps print ds4-ascend's not-implemented line, exit 1
//   --fail-after N           (default 0)
//   --crash-after N          SIGKILL itself right after the N-th dump (a shell reports 137)
//   --corrupt NAME           write graph dump NAME one value short
//   --say LINE               print LINE on stderr before running (repeatable)
//   --prefill                dump as ds4's prefill does: one file per stage and layer holding the batch
//                            (raw_cache as the ring's rows, compressed rows as the closed windows)
//   --link FILE=TARGET       before running, make <prefix>_FILE a symbolic link to TARGET and report it dumped
import * as fs from 'node:fs';
import { DUMP_PREFIX, NO_HOST_FALLBACK, TRACE_FALLBACKS, ds4WantsDump, envFlagOn } from '../ascend/engine.ts';
import type { FallbackEntry } from '../diff/manifest.ts';
import type { StageRecord } from '../model/stages.ts';
import { renderChat } from '../model/chat.ts';
import { configFromGguf } from '../model/config.ts';
import { Ds4DiffError, EXIT } from '../model/errors.ts';
import { openGguf } from '../model/gguf.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { resolveStage } from '../model/stages.ts';

interface DoubleArgs {
  model?: string;
  prompt?: string;
  system?: string;
  think: boolean;
  dumpTokens: boolean;
  printTokens: boolean;
  graphTest?: 'layer0' | 'full';
  layers?: number;
  inject: string[];
  disable: string[];
  unimplemented?: string;
  failAfter: number;
  crashAfter?: number;
  corrupt?: string;
  say: string[];
  link: string[];
  prefill: boolean;
  /** ds4-ascend (--ascend, --backend ascend) computes with the AscendC kernels' approximations; any other ds4 build in exact f32 */
  kernelMath: 'ascend' | 'exact';
}

// ds4 flags that take a value but do not matter here
const IGNORED_WITH_VALUE = new Set(['-c', '--ctx', '-n', '--tokens', '--temp', '--top-p', '--seed', '-t', '--threads', '--mtp', '--mtp-draft', '--mtp-margin']);

function parseArgs(argv: string[]): DoubleArgs {
  const a: DoubleArgs = { think: true, dumpTokens: false, printTokens: false, inject: [], disable: [], failAfter: 0, say: [], link: [], prefill: false, kernelMath: 'exact' };
  const count = (flag: string, v: string | undefined) => {
    if (v === undefined || !/^\d+$/.test(v)) throw new Ds4DiffError(`invalid value for ${flag}: ${v}`, 2);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Ds4DiffError(`${f} needs a value`, 2);
      return argv[++i];
    };
    if (f === '-m' || f === '--model') a.model = value();
    else if (f === '-p' || f === '--prompt') a.prompt = value();
    else if (f === '--prompt-file') a.prompt = fs.readFileSync(value(), 'utf8');
    else if (f === '-sys' || f === '--system') a.system = value();
    else if (f === '--think' || f === '--think-max') a.think = true;
    else if (f === '--nothink') a.think = false;
    else if (f === '--dump-tokens') a.dumpTokens = true;
    else if (f === '--metal-graph-test') a.graphTest = 'layer0';
    else if (f === '--metal-graph-full-test') a.graphTest = 'full';
    else if (f === '--print-tokens') a.printTokens = true;
    else if (f === '--layers') a.layers = count(f, value());
    else if (f === '--inject') a.inject.push(value());
    else if (f === '--disable-kernel') a.disable.push(value());
    else if (f === '--unimplemented') a.unimplemented = value();
    else if (f === '--fail-after') a.failAfter = count(f, value());
    else if (f === '--crash-after') a.crashAfter = count(f, value());
    else if (f === '--corrupt') a.corrupt = value();
    else if (f === '--say') a.say.push(value());
    else if (f === '--link') a.link.push(value());
    else if (f === '--prefill') a.prefill = true;
    else if (f === '--ascend') a.kernelMath = 'ascend';
    else if (f === '--backend') a.kernelMath = value() === 'ascend' ? 'ascend' : 'exact';
    else if (IGNORED_WITH_VALUE.has(f)) value();
    else if (!f.startsWith('-')) throw new Ds4DiffError(`unexpected argument: ${f}`, 2);
  }
  return a;
}

/** ds4.c dump_tokens_fp: the id list, then one `%6d  text` line per token (stdout). */
function printTokens(tok: Tokenizer, ids: number[]): void {
  const lines = [`[${ids.join(', ')}]`, ...ids.map((id) => `${String(id).padStart(6)}  ${tok.decode([id])}`)];
  process.stdout.write(lines.join('\n') + '\n');
}

/** ascend_report_fallback_stats: the totals, then one line per primitive, sizes in MiB with 2 decimals. */
function reportFallbacks(ledger: FallbackEntry[]): void {
  const mib = (b: number) => (b / 1048576).toFixed(2);
  const sum = (k: 'calls' | 'bytesToHost' | 'bytesToDevice') => ledger.reduce((s, e) => s + e[k], 0);
  process.stderr.write(`ds4: Ascend host fallback summary: calls=${sum('calls')} to_host=${mib(sum('bytesToHost'))} MiB to_device=${mib(sum('bytesToDevice'))} MiB\n`);
  for (const e of ledger) process.stderr.write(`ds4: Ascend host fallback: ${e.primitive} calls=${e.calls} to_host=${mib(e.bytesToHost)} MiB to_device=${mib(e.bytesToDevice)} MiB\n`);
}

/**
 * --prefill: the captures of the whole prompt dumped as ds4's layer-major prefill does (ds4.c ~l.11249ff),
 * one file per stage and layer at pos 0 holding every position's row; raw_cache as the ring's first
 * n rows (the cached kv_cur rows of positions 0..n-1); KVcompress / indexer_KVcompress as the batch's
 * closed windows in order; the head at pos 0. The indexer's per-selection stages are not dumped (ds4's
 * prefill lays them out per batch in its own way).
 */
function dumpPrefill(held: StageRecord[], write: (name: string, layer: number, pos: number, dtype: 'f32' | 'i32', v: Float32Array | Int32Array) => void): void {
  const groups = new Map<string, StageRecord[]>();
  for (const r of held) {
    const key = `${r.stage}/${r.layer}`;
    const g = groups.get(key);
    if (g) g.push(r);
    else groups.set(key, [r]);
  }
  const concat = (rs: StageRecord[]) => {
    const out = rs[0].dtype === 'i32' ? new Int32Array(rs.reduce((n, r) => n + r.values.length, 0)) : new Float32Array(rs.reduce((n, r) => n + r.values.length, 0));
    let o = 0;
    for (const r of rs) { out.set(r.values, o); o += r.values.length; }
    return out;
  };
  for (const [key, rs] of groups) {
    const [stage] = key.split('/');
    const def = resolveStage(stage);
    const name = def?.aliases.graph?.[0];
    if (!def || !name || def.when === 'index-select') continue;
    rs.sort((x, y) => x.pos - y.pos);
    const rows = stage === 'raw_cache' ? groups.get(`kv_cur/${rs[0].layer}`) ?? [] : rs;
    if (rows.length) write(name, rs[0].layer, 0, rs[0].dtype, concat(rows));
  }
}

/** Thrown from the capture tap to stop the graph as a failing ds4 primitive does (a Ds4DiffError, so
 *  runDevice passes it through unchanged). */
class StopEngine extends Ds4DiffError {}

async function main(argv: string[]): Promise<number> {
  const a = parseArgs(argv);
  const modelPath = a.model ?? (await (await import('../model/default-model.ts')).defaultModelPath());
  const model = await openGguf(modelPath);
  const cfg = configFromGguf(model);
  const tok = Tokenizer.fromGguf(model);
  if (a.prompt === undefined) throw new Ds4DiffError('this double needs -p PROMPT', 2);
  const prompt = renderChat(tok, a.prompt, { system: a.system, think: a.think }).ids;
  // ds4's graph tests run the first prompt token only (metal_graph_decode_test: token = prompt->v[0])
  const tokens = a.graphTest ? prompt.slice(0, 1) : prompt;
  const lastLayer = a.graphTest === 'layer0' ? 0 : a.layers ?? cfg.nLayer - 1;
  if (a.dumpTokens || a.printTokens) printTokens(tok, tokens);
  if (a.dumpTokens) return 0;
  for (const line of a.say) process.stderr.write(`${line}\n`);

  const prefix = process.env[DUMP_PREFIX];
  for (const spec of a.link) {
    const [file, target] = spec.split('=');
    const m = /^(.+)-(\d+)_pos(\d+)\.(bin|i32)$/.exec(file);
    if (!prefix || !m || !target) throw new Ds4DiffError(`--link ${spec}: expected NAME-LAYER_posPOS.bin=TARGET with ${DUMP_PREFIX} set`, 2);
    fs.symlinkSync(target, `${prefix}_${file}`);
    process.stderr.write(`ds4: dumped ${m[1]} layer ${m[2]} pos ${m[3]} to ${prefix}_${file}\n`);
  }
  const gateOn = envFlagOn(process.env[NO_HOST_FALLBACK]);
  let dumps = 0;
  const writeDump = (name: string, layer: number, pos: number, dtype: 'f32' | 'i32', all: Float32Array | Int32Array) => {
    if (!prefix || !ds4WantsDump(process.env, name, layer, pos)) return;
    if (a.unimplemented !== undefined && dumps >= a.failAfter) {
      process.stderr.write(`ds4: Ascend backend primitive not implemented yet: ${a.unimplemented}\n`);
      throw new StopEngine(`primitive not implemented yet: ${a.unimplemented}`, 1);
    }
    const path = `${prefix}_${name}-${layer}_pos${pos}.${dtype === 'i32' ? 'i32' : 'bin'}`;
    const values = name === a.corrupt ? all.subarray(0, all.length - 1) : all;
    fs.writeFileSync(path, Buffer.from(values.buffer, values.byteOffset, values.byteLength));
    process.stderr.write(`ds4: dumped ${name} layer ${layer} pos ${pos} to ${path}\n`);
    dumps++;
    if (a.crashAfter !== undefined && dumps >= a.crashAfter) process.kill(process.pid, 'SIGKILL');
  };
  const graphName = (stage: string) => resolveStage(stage)?.aliases.graph?.[0];
  // decode: each capture as ds4's decode path dumps it (the head at pos 0)
  const dump = (rec: StageRecord) => {
    const def = resolveStage(rec.stage);
    const name = graphName(rec.stage);
    if (!def || !name) return; // ds4 has no dump hook for this stage
    writeDump(name, rec.layer, def.scope === 'head' ? 0 : rec.pos, rec.dtype, rec.values);
  };
  const held: StageRecord[] = [];
  const { refuseUnlandedFaults, runDevice } = await import('../ascend/orchestrator.ts');
  const { parseInjects } = await import('../ascend/faults.ts');
  let ledger: FallbackEntry[] = [];
  let rc = 0;
  try {
    const inject = parseInjects(a.inject, 'sim');
    await refuseUnlandedFaults({ model, cfg, tokens, lastLayer, inject });
    const r = await runDevice({
      model, cfg, tokens, lastLayer, kernelMath: a.kernelMath,
      allowHostFallback: !gateOn, disabledKernels: a.disable, inject, tap: a.prefill ? (x) => held.push(x) : dump,
    });
    ledger = r.ledger;
    if (a.prefill) dumpPrefill(held, writeDump);
  } catch (e) {
    if (e instanceof StopEngine) rc = 1;
    else if (e instanceof Ds4DiffError && e.exitCode === EXIT.hostFallback) {
      // our gate's message starts `host fallback disabled: <primitive> (layer ...`; ds4-ascend prints the name only
      const primitive = /host fallback disabled: (\S+)/.exec(e.message)?.[1] ?? 'unknown';
      process.stderr.write(`ds4: Ascend host fallback disabled: ${primitive}\n`);
      rc = 1;
    } else throw e;
  }
  if (envFlagOn(process.env[TRACE_FALLBACKS])) reportFallbacks(ledger);
  model.close();
  return rc;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`ds4: ${(e as Error).message}\n`);
  process.exitCode = e instanceof Ds4DiffError ? e.exitCode : 1;
}
