// manifest.json: what a run directory holds and how it was made. Written atomically (temp + rename);
// a run writes it with complete: false when it starts and as it goes, and with complete: true LAST,
// after its dumps and reports (diff/rundir.ts), so a directory from an interrupted or failed run is
// recognised and refused (exit 3), never half-compared.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../model/atomic-write.ts';
import { badInput, fileError } from '../model/errors.ts';
import type { CaptureMeta } from './dump.ts';
import type { Region } from './plan.ts';
import { readJsonFile } from './json.ts';

export const MANIFEST_FORMAT_VERSION = 1;
export const MANIFEST_NAME = 'manifest.json';

export interface FallbackEntry {
  primitive: string;
  calls: number;
  bytesToHost: number;
  bytesToDevice: number;
  reason?: string;
  layer?: number;
  pos?: number;
  stage?: string;
}

export interface RunManifest {
  formatVersion: number;
  complete: boolean;
  createdAt: string;
  model: { path: string; fingerprint: string };
  prompt?: string;
  promptTokens: number[];
  /** the tokens the device generated after the prompt (`run --generate`), each evaluated by both sides */
  generated?: number[];
  /** each token's text piece (prompt, then generated), for the reports */
  tokenPieces?: string[];
  layers: { last: number; all: boolean };
  backend: string;
  kernelMath?: string;
  options: Record<string, unknown>;
  /** the kernels the device passes launched for each stage (the judge's device bound counts these, ascend/budgets.ts) */
  producers?: Record<string, string[]>;
  /** how the dumps were captured (diff/plan.ts): in full, or statistics with what was kept in full, and the
   *  region a statistics capture's second pass re-captured in full */
  capture?: CaptureMeta & { region?: Region };
  /** side ('reference', 'device', 'device-teacher', 'reference-f64', ...) -> file name in the run dir */
  files: Record<string, string>;
  noHostFallback: boolean;
  fallbackLedger: FallbackEntry[];
  exitCode?: number;
  /** the run's layers (n_layer: the output head) whose weights hold no data (model/gguf.ts layersWithoutData) */
  weightless?: number[];
  /** the no-host-fallback gate's stop (`host fallback disabled: X ...`), when it stopped the run: a host-fallback
   *  failure whatever a baseline accepts (exitCode is the verdict's, which a baseline's allowance decides) */
  fallbackStop?: string;
  /** set when a signal stopped the run (the manifest then stays complete: false) */
  interrupted?: string;
  /** the one-line error that ended the run, when it did not finish */
  error?: string;
  /** engine.log and other logs cut to a size cap: what was kept */
  truncatedLogs?: Array<{ file: string; bytes: number; kept: number }>;
}

// Run directories this process is writing (diff/rundir.ts holds their lock): their own gate may read
// them before `complete` is written, which happens last.
const writing = new Set<string>();

/** Marks `dir` as being written by this process (or no longer). */
export function markWriting(dir: string, on: boolean): void {
  if (on) writing.add(path.resolve(dir));
  else writing.delete(path.resolve(dir));
}

/** Writes the manifest atomically: on any failure (disk full) the previous manifest stays as it was. */
export function writeManifest(dir: string, m: RunManifest): void {
  const file = path.join(dir, MANIFEST_NAME);
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw fileError(file, 'write the run manifest', e);
  }
  writeFileAtomic(file, 'write the run manifest', (fd) => fs.writeFileSync(fd, JSON.stringify(m, null, 2) + '\n'));
}

// a manifest is a few KB (the engine's dump inventory can make it a few MB)
const MANIFEST_MAX_BYTES = 64 << 20;

/** The manifest of a finished run directory; an incomplete one (interrupted, failed, still running) is refused. */
export function readManifest(dir: string): RunManifest {
  const file = path.join(dir, MANIFEST_NAME);
  const m = readJsonFile<RunManifest>(file, { what: 'run manifest', maxBytes: MANIFEST_MAX_BYTES, missing: 'no such file (not a ds4-diff run directory)' });
  if (typeof m !== 'object' || m === null || Array.isArray(m) || typeof m.formatVersion !== 'number') throw badInput(`${file}: not a ds4-diff run manifest`);
  if (m.formatVersion > MANIFEST_FORMAT_VERSION) throw badInput(`${file}: manifest format version ${m.formatVersion} is newer than this ds4-diff reads (${MANIFEST_FORMAT_VERSION})`);
  if (m.complete !== true && !writing.has(path.resolve(dir))) throw badInput(`${file}: ${incompleteReason(m)}`);
  for (const k of ['model', 'promptTokens', 'layers', 'backend', 'files', 'fallbackLedger'] as const) {
    if (m[k] === undefined || m[k] === null) throw badInput(`${file}: field '${k}' missing`);
  }
  const bad = manifestShapeProblem(m);
  if (bad) throw badInput(`${file}: ${bad}`);
  m.options ??= {};
  return m;
}

function incompleteReason(m: RunManifest): string {
  if (m.interrupted) return `the run is incomplete: it was interrupted by ${m.interrupted}; re-run it`;
  if (m.error) return `the run is incomplete: it ended with exit ${m.exitCode ?? '?'} (${m.error}); re-run it`;
  return 'the run is incomplete (interrupted, crashed or still running); re-run it';
}

/** The fields readers index into, with the types they assume. */
function manifestShapeProblem(m: RunManifest): string | undefined {
  if (typeof m.model !== 'object' || typeof m.model.fingerprint !== 'string' || typeof m.model.path !== 'string') return "field 'model' needs path and fingerprint strings";
  const index = (x: unknown) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 2 ** 31 - 1;
  if (!Array.isArray(m.promptTokens) || !m.promptTokens.every(index)) return "field 'promptTokens' must be a list of token ids";
  if (typeof m.layers !== 'object' || m.layers === null || !index(m.layers.last) || typeof m.layers.all !== 'boolean') return "field 'layers' needs an integer 'last' and a boolean 'all'";
  if (typeof m.backend !== 'string') return "field 'backend' must be a string";
  if (typeof m.files !== 'object' || Array.isArray(m.files) || Object.values(m.files).some((f) => typeof f !== 'string')) return "field 'files' must map sides to file names";
  if (!Array.isArray(m.fallbackLedger) || m.fallbackLedger.some((f) => typeof f !== 'object' || f === null || typeof f.primitive !== 'string')) return "field 'fallbackLedger' must be a list of {primitive, ...} entries";
  if (m.options !== undefined && (typeof m.options !== 'object' || m.options === null)) return "field 'options' must be an object";
  if (m.producers !== undefined && (typeof m.producers !== 'object' || m.producers === null || Array.isArray(m.producers) || Object.values(m.producers).some((ks) => !Array.isArray(ks) || ks.some((k) => typeof k !== 'string')))) return "field 'producers' must map stages to lists of kernel names";
  return undefined;
}

/** Path of a side's dump in a run, or undefined if the run has no such side. */
export function sidePath(dir: string, m: RunManifest, side: string): string | undefined {
  const name = m.files[side];
  return name === undefined ? undefined : fileInRun(dir, name);
}

/** Resolves a file name from a manifest inside the run dir, refusing anything that escapes it. */
export function fileInRun(dir: string, name: string): string {
  if (name !== path.basename(name) || name === '.' || name === '..') throw badInput(`${dir}/manifest.json: file name '${name}' is not a plain file name`);
  return path.join(dir, name);
}

/** Why the no-host-fallback gate stopped this run, if it did. Run directories written before `fallbackStop`
 *  show the stop only as the ledger entry of a primitive the gate disabled. */
export function fallbackStopOf(m: RunManifest): string | undefined {
  return m.fallbackStop ?? m.fallbackLedger.find((f) => f.reason?.startsWith('host fallback disabled'))?.primitive;
}

/** Did the engine not finish: a timeout, a signal or a non-zero exit (its exit as recorded in the manifest). */
export const engineFailed = (e: { timedOut?: unknown; signal?: unknown; code?: unknown }): boolean => e.timedOut === true || (e.signal ?? null) !== null || e.code !== 0;

/**
 * What an engine's run directory recorded besides its rows (`options.engine`: its exit, the primitives it
 * lacks, the dumps rejected at import), for every judge of that directory — `engine` itself, `gate`,
 * `bisect`, `baseline record` — alike: a killed engine's partial dumps are no verdict, a rejected dump a
 * failure, whichever command reads the directory.
 */
export function recordedProblems(m: RunManifest): { regressions?: string[]; unfinished?: string[]; untested?: string[]; notes?: string[] } {
  const weightless = weightlessProblems(m);
  const e = m.options.engine as { exit?: { code?: unknown; signal?: unknown; timedOut?: unknown; description?: unknown }; unimplemented?: unknown; dumps?: { files?: unknown; rejectedFiles?: unknown } } | undefined;
  if (!e || typeof e !== 'object') return weightless;
  const unfinished: string[] = [];
  const x = e.exit;
  if (x && typeof x === 'object' && engineFailed(x)) {
    unfinished.push(`${typeof x.description === 'string' ? x.description : `engine exited with ${String(x.code)}`}: only the ${Number(e.dumps?.files) || 0} dumps written before are judged`);
  }
  if (Array.isArray(e.unimplemented)) for (const p of e.unimplemented) unfinished.push(`engine primitive not implemented yet: ${String(p)}`);
  const rejected = Array.isArray(e.dumps?.rejectedFiles) ? (e.dumps.rejectedFiles as Array<{ file?: unknown; reason?: unknown }>) : [];
  const regressions = rejected.map((r) => `rejected dump ${String(r?.file)}: ${String(r?.reason)}`);
  return { regressions, unfinished, ...weightless };
}

/**
 * Layers whose weights hold no data compare zeros with zeros: a run through nothing else tested no kernel
 * (no verdict, whatever its rows say); otherwise the report says which layers tested nothing.
 */
function weightlessProblems(m: RunManifest): { untested?: string[]; notes?: string[] } {
  const w = Array.isArray(m.weightless) ? m.weightless : [];
  if (!w.length) return {};
  const last = m.layers.last;
  const layers = w.filter((l) => l <= last);
  const head = w.length > layers.length;
  if (layers.length === last + 1 && head) return { untested: [`the model holds no weight data in layers 0..${last} or the output head (a sparse file's holes read as zeros): every row compares zeros, no kernel was tested`] };
  return { notes: [`${layers.length ? `layer${layers.length > 1 ? 's' : ''} ${spans(layers)}` : ''}${layers.length && head ? ' and ' : ''}${head ? 'the output head' : ''} hold${layers.length + (head ? 1 : 0) > 1 ? '' : 's'} no weight data (a sparse file's holes read as zeros): ${layers.length + (head ? 1 : 0) > 1 ? 'their' : 'its'} rows compare zeros and test no kernel`] };
}

/** Sorted integers as runs: `1..42`, `0, 3..5`. */
function spans(xs: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < xs.length; ) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    out.push(j > i ? `${xs[i]}..${xs[j]}` : `${xs[i]}`);
    i = j + 1;
  }
  return out.join(', ');
}
