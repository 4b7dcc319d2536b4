// The protocol between ds4-diff and a real ds4 / ds4-ascend build run as a child process (issue 7).
// Everything here is read from the C, not guessed:
//   * dumps — ds4.c metal_graph_debug_wants / metal_graph_debug_dump_tensor / _i32_tensor (l.8584-8655):
//     enabled by DS4_METAL_GRAPH_DUMP_PREFIX (set, non-empty); DS4_METAL_GRAPH_DUMP_NAME keeps a stage
//     when `strstr(env, name)` finds the stage's graph name INSIDE the variable (so a comma-separated list
//     works, and a longer name also admits its prefixes: "hc_attn_pre_mixes" admits "hc_attn_pre");
//     DS4_METAL_GRAPH_DUMP_LAYER is "all" or ONE layer (strtoul; the head is layer n_layer = 43, so a
//     layer filter drops the logits); DS4_METAL_GRAPH_DUMP_POS is ONE position (strtoul: text → 0).
//     Each file written prints `ds4: dumped <name> layer <il> pos <pos> to <path>` on stderr.
//   * the gate — ds4_ascend.c (donge/ds4-ascend @ 7f1d55b) ascend_no_host_fallback,
//     ascend_host_fallback_begin, ascend_unimplemented, ascend_report_fallback_stats:
//     `ds4: Ascend host fallback disabled: <name>`, `ds4: Ascend backend primitive not implemented yet:
//     <what>`, and at cleanup with DS4_ASCEND_TRACE_FALLBACKS set (non-empty, not "0")
//     `ds4: Ascend host fallback summary: calls=N to_host=X.XX MiB to_device=Y.YY MiB` followed by one
//     `ds4: Ascend host fallback: <name> calls=N to_host=X.XX MiB to_device=Y.YY MiB` per primitive.
//   * tokens — ds4.c dump_tokens_fp (l.14972, ds4 --dump-tokens, stdout): `[id, id, ...]`, then one
//     `%6d  <text>` line per token.
//   * progress — ds4.c l.7799 / 13270 / 13425: `ds4: [gpu ]prefill layer I/N` ended by '\r', not '\n'.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { FallbackEntry } from '../diff/manifest.ts';
import { StringDecoder } from 'node:string_decoder';
import { onCancel } from '../diff/cancel.ts';
import { badInput, fileError } from '../model/errors.ts';
import { STAGES, resolveStage } from '../model/stages.ts';

export const DUMP_PREFIX = 'DS4_METAL_GRAPH_DUMP_PREFIX';
export const DUMP_NAME = 'DS4_METAL_GRAPH_DUMP_NAME';
export const DUMP_LAYER = 'DS4_METAL_GRAPH_DUMP_LAYER';
export const DUMP_POS = 'DS4_METAL_GRAPH_DUMP_POS';
export const NO_HOST_FALLBACK = 'DS4_ASCEND_NO_HOST_FALLBACK';
export const TRACE_FALLBACKS = 'DS4_ASCEND_TRACE_FALLBACKS';

/** One variable the engine runs with, and who decided its value. */
export interface EnvSetting {
  name: string;
  /** undefined: left unset */
  value?: string;
  source: 'ds4-diff' | 'user environment';
}

/**
 * The engine's environment: `wanted` values (undefined = leave unset) unless the user's environment
 * already sets the variable (even to ""), which then wins and is reported as such.
 */
export function engineEnvironment(wanted: Record<string, string | undefined>, userEnv: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; settings: EnvSetting[] } {
  const env: NodeJS.ProcessEnv = { ...userEnv };
  const settings: EnvSetting[] = [];
  for (const [name, value] of Object.entries(wanted)) {
    if (userEnv[name] !== undefined) {
      settings.push({ name, value: userEnv[name], source: 'user environment' });
    } else {
      if (value !== undefined) env[name] = value;
      settings.push({ name, value, source: 'ds4-diff' });
    }
  }
  return { env, settings };
}

/** C's `getenv(x) && x[0] && strcmp(x, "0") != 0` (ascend_no_host_fallback, ascend_report_fallback_stats). */
export function envFlagOn(v: string | undefined): boolean {
  return v !== undefined && v !== '' && v !== '0';
}

/** C strtoul(s, NULL, 10) for the non-negative values ds4 expects: leading digits, else 0. */
function strtoul(s: string): number {
  const m = /^\s*\+?(\d+)/.exec(s);
  return m ? Number(m[1]) : 0;
}

/** ds4.c metal_graph_debug_wants: would the engine dump graph tensor `name` of layer `il` at `pos`? */
export function ds4WantsDump(env: NodeJS.ProcessEnv, name: string, il: number, pos: number): boolean {
  const prefix = env[DUMP_PREFIX];
  if (!prefix) return false;
  const names = env[DUMP_NAME];
  if (names && !names.includes(name)) return false;
  const layer = env[DUMP_LAYER];
  if (layer && layer !== 'all' && strtoul(layer) !== il) return false;
  const p = env[DUMP_POS];
  if (p && strtoul(p) !== pos) return false;
  return true;
}

/** Every ds4 graph-dump name the registry knows (first graph alias of each stage). */
export function graphNames(): string[] {
  return STAGES.flatMap((s) => (s.aliases.graph?.length ? [s.aliases.graph[0]] : []));
}

/**
 * DS4_METAL_GRAPH_DUMP_NAME for a list of stages (canonical or any alias): their graph names joined by
 * commas. `admitted` is every graph name ds4's substring test will then dump (may be more than asked).
 */
export function dumpNameFilter(stages: string[]): { value: string; admitted: string[] } {
  const names: string[] = [];
  for (const s of stages) {
    const def = resolveStage(s);
    if (!def) throw badInput(`--stages: '${s}' is not a stage (see ds4-diff stages)`);
    const g = def.aliases.graph?.[0];
    if (!g) throw badInput(`--stages: stage ${def.name} has no ds4 graph-dump name; ds4 never dumps it`);
    if (!names.includes(g)) names.push(g);
  }
  const value = names.join(',');
  return { value, admitted: graphNames().filter((g) => value.includes(g)) };
}

export type EngineEvent =
  | { kind: 'dumped'; name: string; layer: number; pos: number; path: string }
  | { kind: 'fallback-disabled'; primitive: string }
  | { kind: 'unimplemented'; primitive: string }
  | { kind: 'fallback-summary'; calls: number; toHostMiB: number; toDeviceMiB: number }
  | { kind: 'fallback'; primitive: string; calls: number; toHostMiB: number; toDeviceMiB: number }
  | { kind: 'tokens'; ids: number[] }
  | { kind: 'progress'; text: string };

const RE_DUMPED = /^ds4: dumped (\S+) layer (\d+) pos (\d+) to (.*)$/;
const RE_DISABLED = /^ds4: Ascend host fallback disabled: (.+)$/;
const RE_UNIMPLEMENTED = /^ds4: Ascend backend primitive not implemented yet: (.+)$/;
const MIB = String.raw`calls=(\d+) to_host=([0-9.]+) MiB to_device=([0-9.]+) MiB$`;
const RE_SUMMARY = new RegExp(`^ds4: Ascend host fallback summary: ${MIB}`);
const RE_FALLBACK = new RegExp(`^ds4: Ascend host fallback: (\\S+) ${MIB}`);
const RE_TOKENS = /^\[(\d+(?:, \d+)*)?\]$/;
const RE_PROGRESS = /^ds4: ((?:gpu )?prefill layer \d+\/\d+)$/;

/** One line of engine output (either stream, without its line ending) as a protocol event. */
export function parseEngineLine(raw: string): EngineEvent | undefined {
  const line = raw.trim();
  let m: RegExpExecArray | null;
  if ((m = RE_DUMPED.exec(line))) return { kind: 'dumped', name: m[1], layer: Number(m[2]), pos: Number(m[3]), path: m[4] };
  if ((m = RE_DISABLED.exec(line))) return { kind: 'fallback-disabled', primitive: m[1] };
  if ((m = RE_UNIMPLEMENTED.exec(line))) return { kind: 'unimplemented', primitive: m[1] };
  if ((m = RE_SUMMARY.exec(line))) return { kind: 'fallback-summary', calls: Number(m[1]), toHostMiB: Number(m[2]), toDeviceMiB: Number(m[3]) };
  if ((m = RE_FALLBACK.exec(line))) return { kind: 'fallback', primitive: m[1], calls: Number(m[2]), toHostMiB: Number(m[3]), toDeviceMiB: Number(m[4]) };
  if ((m = RE_TOKENS.exec(line))) return { kind: 'tokens', ids: m[1] ? m[1].split(', ').map(Number) : [] };
  if ((m = RE_PROGRESS.exec(line))) return { kind: 'progress', text: m[1] };
  return undefined;
}

/**
 * A dump name as the engine printed it is only ever a label: it must look like a graph name (no path
 * separators, no "..", no control characters) before it even enters the manifest's inventory.
 */
export function unsafeDumpName(name: string): string | undefined {
  if (name.includes('/') || name.includes('\\')) return 'contains a path separator';
  if (name.includes('..')) return "contains '..'";
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) return 'has characters a ds4 graph name never has';
  return undefined;
}

export interface DumpLine {
  name: string;
  layer: number;
  pos: number;
  /** canonical stage (registry alias), if known */
  stage?: string;
}

/** What the engine said, accumulated line by line. */
export interface EngineReport {
  /** `dumped` lines with acceptable names, in order */
  dumps: DumpLine[];
  /** `dumped` lines refused, with why (the name is never used) */
  rejectedLines: Array<{ line: string; reason: string }>;
  /** `host fallback disabled: X` primitives, in order of appearance */
  fallbackDisabled: string[];
  /** `primitive not implemented yet: X` */
  unimplemented: string[];
  /** DS4_ASCEND_TRACE_FALLBACKS report: per primitive, then the total */
  fallbacks: Array<{ primitive: string; calls: number; toHostMiB: number; toDeviceMiB: number }>;
  fallbackSummary?: { calls: number; toHostMiB: number; toDeviceMiB: number };
  /** the first token list the engine printed (dump_tokens format) */
  tokens?: number[];
  lastProgress?: string;
}

export function newEngineReport(): EngineReport {
  return { dumps: [], rejectedLines: [], fallbackDisabled: [], unimplemented: [], fallbacks: [] };
}

/** Fold one output line into the report; returns the event it was, if any. Token lists count only
 *  on stdout, where dump_tokens prints them (generated text could look like one elsewhere too). */
export function feedEngineLine(r: EngineReport, line: string, stream: 'stdout' | 'stderr' = 'stderr'): EngineEvent | undefined {
  const e = parseEngineLine(line);
  if (!e) return undefined;
  switch (e.kind) {
    case 'dumped': {
      const why = unsafeDumpName(e.name);
      if (why) r.rejectedLines.push({ line: line.trim(), reason: `dump name ${JSON.stringify(e.name)} ${why}; not a dump name, ignored` });
      else r.dumps.push({ name: e.name, layer: e.layer, pos: e.pos, stage: resolveStage(e.name)?.name });
      break;
    }
    case 'fallback-disabled':
      if (!r.fallbackDisabled.includes(e.primitive)) r.fallbackDisabled.push(e.primitive);
      break;
    case 'unimplemented':
      if (!r.unimplemented.includes(e.primitive)) r.unimplemented.push(e.primitive);
      break;
    case 'fallback-summary':
      r.fallbackSummary = { calls: e.calls, toHostMiB: e.toHostMiB, toDeviceMiB: e.toDeviceMiB };
      break;
    case 'fallback':
      r.fallbacks.push({ primitive: e.primitive, calls: e.calls, toHostMiB: e.toHostMiB, toDeviceMiB: e.toDeviceMiB });
      break;
    case 'tokens':
      if (stream === 'stdout') r.tokens ??= e.ids;
      break;
    case 'progress':
      r.lastProgress = e.text;
      break;
  }
  return e;
}

const mibToBytes = (mib: number) => Math.round(mib * 1048576);

/**
 * The run manifest's fallback ledger from what the engine printed: a refused fallback (gate on) is an
 * entry with 0 calls (the primitive never ran); the trace report gives calls and bytes (printed in MiB
 * with 2 decimals, so bytes are exact only to ±5 KiB).
 */
export function engineFallbackLedger(r: EngineReport): FallbackEntry[] {
  const out: FallbackEntry[] = r.fallbackDisabled.map((p) => ({ primitive: p, calls: 0, bytesToHost: 0, bytesToDevice: 0, reason: 'host fallback disabled (no-host-fallback gate): the engine stopped' }));
  for (const f of r.fallbacks) {
    if (out.some((e) => e.primitive === f.primitive)) continue;
    out.push({ primitive: f.primitive, calls: f.calls, bytesToHost: mibToBytes(f.toHostMiB), bytesToDevice: mibToBytes(f.toDeviceMiB), reason: 'ran on the host (DS4_ASCEND_TRACE_FALLBACKS report; bytes from MiB, 2 decimals)' });
  }
  return out;
}

export interface EngineExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** how long the engine ran */
  seconds: number;
  /** the --timeout it was killed at, when it was */
  limitSeconds?: number;
  /** bytes the engine printed (both streams), and how many engine.log kept (less when capped) */
  logBytes?: number;
  logKept?: number;
}

const signalName = (n: number) => Object.entries(osConstants.signals).find(([, v]) => v === n)?.[0];

/** `engine exited with 0`, `engine exited with 137 (killed)`, `engine killed by SIGKILL (exit 137)`, ... */
export function describeExit(e: EngineExit): string {
  // the limit it was killed at (what the user set), not the moment the kill landed
  const timeout = e.timedOut ? ` after the ${Number((e.limitSeconds ?? e.seconds).toFixed(3))} s timeout` : '';
  if (e.signal) {
    const n = osConstants.signals[e.signal];
    return `engine killed by ${e.signal}${timeout}${n ? ` (exit ${128 + n} in a shell)` : ''}`;
  }
  if (e.code !== null && e.code > 128 && signalName(e.code - 128)) {
    // a wrapper (shell, nohup, ssh) reports a child killed by signal N as 128+N
    const sig = signalName(e.code - 128)!;
    return `engine exited with ${e.code} (${sig === 'SIGKILL' ? 'killed' : sig === 'SIGSEGV' ? 'crashed' : `signal ${sig}`})${timeout}`;
  }
  return `engine exited with ${e.code}${timeout}`;
}

/** engine.log's default size cap: the first and the last half are kept. */
export const ENGINE_LOG_CAP = 64 << 20;
// a protocol line is short; a longer "line" (megabytes without a newline) is cut to this for parsing
const MAX_LINE_CHARS = 64 << 10;

export interface RunEngineOptions {
  env: NodeJS.ProcessEnv;
  /** both streams, as they come, go here (up to logCapBytes: the head and the tail, with a marker) */
  logFile: string;
  logCapBytes?: number;
  /** kill the engine after this many seconds (SIGTERM, then SIGKILL 5 s later) */
  timeoutSeconds?: number;
  onLine: (line: string, stream: 'stdout' | 'stderr') => void;
}

/**
 * Splits a stream into lines in time linear in its length (each chunk is scanned once, whatever the
 * line length), decoding UTF-8 across chunk boundaries; `\r`, `\n` and `\r\n` end a line (ds4's
 * progress lines end with `\r`). A line longer than MAX_LINE_CHARS is passed on cut to that length.
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private parts: string[] = [];
  private length = 0;
  private afterCR = false;

  constructor(private readonly emit: (line: string) => void) {}

  push(chunk: Buffer): void {
    this.scan(this.decoder.write(chunk));
  }

  end(): void {
    this.scan(this.decoder.end());
    if (this.length > 0 || this.parts.length > 0) this.flush();
  }

  private scan(text: string): void {
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      // the \n of a \r\n split across two chunks ends nothing new
      if (c === 10 && i === 0 && this.afterCR && this.length === 0) {
        start = 1;
        this.afterCR = false;
        continue;
      }
      this.add(text.slice(start, i));
      this.flush();
      this.afterCR = c === 13 && i === text.length - 1;
      if (c === 13 && text.charCodeAt(i + 1) === 10) i++;
      start = i + 1;
    }
    if (start < text.length) {
      this.add(text.slice(start));
      this.afterCR = false;
    }
  }

  private add(s: string): void {
    if (this.length >= MAX_LINE_CHARS || s === '') return;
    const part = s.length + this.length > MAX_LINE_CHARS ? s.slice(0, MAX_LINE_CHARS - this.length) : s;
    this.parts.push(part);
    this.length += part.length;
  }

  private flush(): void {
    const line = this.parts.join('');
    this.parts = [];
    this.length = 0;
    this.emit(line);
  }
}

/**
 * engine.log with a size cap: the first half of the cap is written as it comes, then only the latest
 * half is kept in memory and written after a marker line saying how much was left out.
 */
class CappedLog {
  private written = 0;
  private tail: Buffer[] = [];
  private tailBytes = 0;
  total = 0;

  constructor(private readonly fd: number, private readonly file: string, private readonly cap: number) {}

  write(chunk: Buffer): void {
    this.total += chunk.length;
    const head = Math.floor(this.cap / 2);
    if (this.written < head) {
      const n = Math.min(chunk.length, head - this.written);
      this.put(chunk.subarray(0, n));
      this.written += n;
      chunk = chunk.subarray(n);
      if (!chunk.length) return;
    }
    this.tail.push(chunk);
    this.tailBytes += chunk.length;
    const keep = this.cap - head;
    while (this.tailBytes - this.tail[0].length >= keep) this.tailBytes -= this.tail.shift()!.length;
  }

  /** Writes the tail (after the marker when output was left out); returns the bytes kept. */
  close(): number {
    let tail = Buffer.concat(this.tail);
    const keep = this.cap - Math.floor(this.cap / 2);
    if (tail.length > keep) tail = tail.subarray(tail.length - keep);
    const omitted = this.total - this.written - tail.length;
    if (omitted > 0) this.put(Buffer.from(`\n[ds4-diff: engine.log is capped at ${this.cap} bytes: ${omitted} bytes of the engine's output left out here; the first ${this.written} and the last ${tail.length} bytes are kept]\n`));
    this.put(tail);
    this.tail = [];
    return this.written + tail.length;
  }

  private put(b: Buffer): void {
    try {
      let off = 0;
      while (off < b.length) off += fs.writeSync(this.fd, b, off);
    } catch (e) {
      throw fileError(this.file, 'write the engine log', e);
    }
  }
}

/** Run the engine (argument vector, no shell) to its end; output is logged and split into lines. */
export function runEngine(argv: string[], o: RunEngineOptions): Promise<EngineExit> {
  if (!argv.length) throw badInput('no engine command: give it after --, e.g. ds4-diff engine -- ./ds4 -m MODEL -p Hello');
  let logFd: number;
  try {
    logFd = fs.openSync(o.logFile, 'w');
  } catch (e) {
    throw fileError(o.logFile, 'create the engine log', e);
  }
  const log = new CappedLog(logFd, o.logFile, o.logCapBytes ?? ENGINE_LOG_CAP);
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env: o.env, stdio: ['ignore', 'pipe', 'pipe'], shell: false });
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer = o.timeoutSeconds
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGTERM');
          killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
        }, o.timeoutSeconds * 1000)
      : undefined;
    // a signal to ds4-diff stops the engine too; one still running when ds4-diff exits is killed
    const stop = () => void child.kill('SIGTERM');
    const kill = () => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'));
    const unhookCancel = onCancel(stop);
    process.on('exit', kill);
    let failure: Error | undefined;
    const lines = {
      stdout: new LineSplitter((line) => o.onLine(line, 'stdout')),
      stderr: new LineSplitter((line) => o.onLine(line, 'stderr')),
    };
    const take = (stream: 'stdout' | 'stderr', chunk: Buffer) => {
      if (failure) return;
      try {
        log.write(chunk);
        lines[stream].push(chunk);
      } catch (e) {
        // the log cannot be written (disk full): stop the engine, report the file
        failure = e as Error;
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', (c: Buffer) => take('stdout', c));
    child.stderr.on('data', (c: Buffer) => take('stderr', c));
    // a program that cannot be started reports 'error' and then 'close': settle once, close the log once
    let settled = false;
    const settle = (then: (logKept: number) => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      unhookCancel();
      process.off('exit', kill);
      let kept = 0;
      try {
        kept = log.close();
      } catch (e) {
        failure ??= e as Error;
      }
      fs.closeSync(logFd);
      if (failure) reject(failure);
      else then(kept);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' ? 'no such program' : err.code === 'EACCES' ? 'not executable' : err.message;
      settle(() => reject(badInput(`engine '${argv[0]}': ${why}`)));
    });
    child.on('close', (code, signal) => {
      for (const s of ['stdout', 'stderr'] as const) lines[s].end();
      const seconds = (Date.now() - t0) / 1000;
      settle((logKept) => resolve({ code, signal, timedOut, seconds, ...(timedOut ? { limitSeconds: o.timeoutSeconds } : {}), logBytes: log.total, logKept }));
    });
  });
}

/** The ds4 CLI options that decide the prompt tokens (ds4_cli.c usage), as found in an engine's argv. */
export interface EnginePromptArgs {
  model?: string;
  prompt?: string;
  promptFile?: string;
  system?: string;
  /** ds4 default is thinking mode (--think), unlike ds4-diff's --nothink default */
  think: boolean;
}

/** Reads -m/--model, -p/--prompt, --prompt-file, -sys/--system, --think/--think-max/--nothink from ds4's argv. */
export function enginePromptArgs(argv: string[]): EnginePromptArgs {
  const out: EnginePromptArgs = { think: true };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i];
    if (a === '--think' || a === '--think-max') out.think = true;
    else if (a === '--nothink') out.think = false;
    else if (i + 1 >= argv.length) break;
    else if (a === '-m' || a === '--model') out.model = value();
    else if (a === '-p' || a === '--prompt') out.prompt = value();
    else if (a === '--prompt-file') out.promptFile = value();
    else if (a === '-sys' || a === '--system') out.system = value();
  }
  return out;
}

/**
 * ds4's graph self-tests compute only the FIRST prompt token at pos 0 (ds4.c metal_graph_decode_test
 * l.10428 and metal_graph_first_token_full_test: `token = prompt->v[0]`): --metal-graph-test through
 * layer 0 then the output head, --metal-graph-full-test through every layer. Undefined: a normal run.
 */
export function engineGraphTest(argv: string[]): { flag: string; layer0Only: boolean } | undefined {
  if (argv.includes('--metal-graph-test')) return { flag: '--metal-graph-test', layer0Only: true };
  if (argv.includes('--metal-graph-full-test')) return { flag: '--metal-graph-full-test', layer0Only: false };
  return undefined;
}

/** The backend an engine argv selects (ds4_cli.c parse_backend / --metal --cuda --ascend --cpu), if any. */
export function engineBackend(argv: string[]): string | undefined {
  let b: string | undefined;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--backend' && argv[i + 1] !== undefined) b = argv[++i];
    else if (a === '--metal' || a === '--cuda' || a === '--ascend' || a === '--cpu') b = a.slice(2);
  }
  return b;
}
