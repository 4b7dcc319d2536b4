// The lifecycle of a run directory (`run`, `engine`, `reference --out`):
//
//   open     a fresh directory (new, or empty), or — with --force — an old *run* directory whose contents
//            are cleared; a non-empty directory that holds no ds4-diff run is never cleared
//   lock     `.ds4-diff.lock` (pid, host, command, start time), created exclusively: a second run into
//            the same directory refuses, naming the holder; the lock of a process that is gone (same
//            host) is taken over with a warning
//   write    the manifest with complete: false, then the dumps as they are captured
//   finish   the reports, then the manifest with complete: true and the exit code — LAST, so a
//            directory whose manifest says complete holds everything it lists
//   end      the lock is released on every path; on an error or a signal the manifest stays
//            complete: false with why (`error`, `interrupted`), and `gate`, `compare`, `replay`, `bisect`
//            refuse the directory
//
// One run directory per process at a time is the normal case; nothing here assumes it.
import * as fs from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { Ds4DiffError, EXIT, badInput, fileError } from '../model/errors.ts';
import { cancelRequested, onCancel } from './cancel.ts';
import { readDumpMeta } from './dump.ts';
import { MANIFEST_NAME, markWriting, readManifest, sidePath, writeManifest, type RunManifest } from './manifest.ts';

export const LOCK_NAME = '.ds4-diff.lock';

interface LockInfo {
  pid: number;
  host: string;
  command: string;
  startedAt: string;
}

export interface OpenRunDirOptions {
  /** the directory (default: runs/<time>) */
  out?: string;
  /** clear an existing run directory's contents (never a directory that holds no run) */
  force?: boolean;
  /** the manifest as the run starts (written with complete: false) */
  manifest: RunManifest;
  /** the command line, for the lock (default: process.argv) */
  command?: string;
  warn?: (msg: string) => void;
}

/** An open run directory: holds the lock until `release`. */
export interface RunDir {
  dir: string;
  /** the live manifest: change it, then `save()` (still complete: false) or `finish(code)` */
  manifest: RunManifest;
  save(): void;
  /** Complete: true with the exit code, written last (after the reports); returns the code. */
  finish(exitCode: number): number;
  /** The run ended with `err`: the manifest stays complete: false and says why. */
  fail(err: unknown): void;
  release(): void;
}

export function defaultRunDir(): string {
  return path.join('runs', new Date().toISOString().replace(/[:.]/g, '-'));
}

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

function readLock(file: string): { info?: LockInfo; text: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fileError(file, 'read the run lock', e);
  }
  try {
    const info = JSON.parse(text) as LockInfo;
    if (Number.isInteger(info.pid) && typeof info.host === 'string') return { info, text };
  } catch {
    // an unreadable lock is reported as such below
  }
  return { text };
}

const holder = (l: LockInfo) => `pid ${l.pid} on ${l.host} (${l.command}, since ${l.startedAt})`;

/**
 * Takes the lock, or refuses naming its holder. A lock left by a process that no longer exists on
 * this host is moved aside and taken over with a warning; one whose holder cannot be checked (another
 * host, unreadable) is never taken.
 */
function acquireLock(dir: string, info: LockInfo, warn: (m: string) => void): string {
  const file = path.join(dir, LOCK_NAME);
  const text = JSON.stringify(info) + '\n';
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(file, text, { flag: 'wx' });
      return file;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fileError(file, 'create the run lock', e);
    }
    const held = readLock(file);
    if (!held) continue; // released meanwhile: try again
    const l = held.info;
    if (!l) throw badInput(`${dir} is locked by ${file}, which is unreadable; if no ds4-diff runs there, delete it`);
    if (l.host !== info.host) throw badInput(`${dir} is in use by ${holder(l)}; if that run is gone, delete ${file}`);
    if (l.pid === process.pid || pidAlive(l.pid)) throw badInput(`${dir} is in use by ${holder(l)}; wait for it or use another --out`);
    // stale: move it aside (only one taker wins the rename), check it is the lock we judged, take over
    const aside = `${file}.stale-${process.pid}`;
    try {
      fs.renameSync(file, aside);
    } catch {
      continue;
    }
    const moved = fs.readFileSync(aside, 'utf8');
    fs.rmSync(aside, { force: true });
    if (moved !== held.text) throw badInput(`${dir}: another run took its lock while this one was taking over a stale lock; use another --out`);
    warn(`${dir}: taking over the lock of ${holder(l)}: that process is gone`);
  }
  throw badInput(`${dir}: could not take the run lock ${file}`);
}

/** Does `dir` hold a ds4-diff run (a manifest, or a lock)? Decides what --force may clear. */
function holdsRun(dir: string, entries: string[]): boolean {
  if (entries.includes(LOCK_NAME)) return true;
  if (!entries.includes(MANIFEST_NAME)) return false;
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_NAME), 'utf8')) as Partial<RunManifest>;
    return typeof m === 'object' && m !== null && typeof m.formatVersion === 'number' && typeof m.files === 'object';
  } catch {
    return false;
  }
}

function describeOldRun(dir: string): string {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_NAME), 'utf8')) as RunManifest;
    const state = m.complete ? `complete, exit ${m.exitCode ?? '?'}` : m.interrupted ? `interrupted by ${m.interrupted}` : 'incomplete';
    return `a run (${state}, created ${m.createdAt})`;
  } catch {
    return 'a run';
  }
}

/** Opens a run directory for writing: checks, locks, clears (--force) and writes the starting manifest. */
export function openRunDir(o: OpenRunDirOptions): RunDir {
  const warn = o.warn ?? ((m: string) => process.stderr.write(`ds4-diff: warning: ${m}\n`));
  const dir = path.resolve(o.out ?? defaultRunDir());
  let entries: string[];
  try {
    const st = fs.statSync(dir, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw badInput(`${dir}: exists and is not a directory; a run directory is a directory`);
    fs.mkdirSync(dir, { recursive: true });
    entries = fs.readdirSync(dir);
  } catch (e) {
    throw fileError(dir, 'create the run directory', e);
  }
  const isRun = holdsRun(dir, entries);
  if (entries.length && !isRun) {
    throw badInput(`${dir} is not empty and holds no ds4-diff run (no ${MANIFEST_NAME}); refusing to write into it${o.force ? ' (--force only clears run directories)' : ''}: give a new or empty directory`);
  }
  const info: LockInfo = { pid: process.pid, host: hostname(), command: o.command ?? ['ds4-diff', ...process.argv.slice(2)].join(' '), startedAt: new Date().toISOString() };
  const lock = acquireLock(dir, info, warn);
  const lockText = fs.readFileSync(lock, 'utf8');
  const old = entries.filter((e) => e !== LOCK_NAME);
  try {
    if (old.length) {
      if (!o.force) throw badInput(`${dir} already holds ${describeOldRun(dir)}; give --force to replace it, or another --out`);
      for (const e of old) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
    }
  } catch (e) {
    fs.rmSync(lock, { force: true });
    throw fileError(dir, 'clear the old run', e);
  }

  let released = false;
  let finished = false;
  const manifest = o.manifest;
  const release = () => {
    if (released) return;
    released = true;
    markWriting(dir, false);
    unhookCancel();
    process.off('exit', release);
    // only our own lock: never one another run took over meanwhile
    if (readLock(lock)?.text === lockText) fs.rmSync(lock, { force: true });
  };
  const rd: RunDir = {
    dir,
    manifest,
    save: () => writeManifest(dir, { ...manifest, complete: false }),
    finish(exitCode: number) {
      manifest.complete = true;
      manifest.exitCode = exitCode;
      writeManifest(dir, manifest);
      finished = true;
      return exitCode;
    },
    fail(err: unknown) {
      if (finished || released) return;
      const e = err as Error;
      manifest.complete = false;
      manifest.exitCode = err instanceof Ds4DiffError ? err.exitCode : EXIT.cannotEvaluate;
      manifest.error = e?.message?.split('\n')[0] ?? String(err);
      try {
        writeManifest(dir, manifest);
      } catch {
        // the error being reported matters more than the manifest saying so (disk full)
      }
    },
    release,
  };
  // a signal: the manifest says so (still complete: false), the lock goes; the sinks remove their temp files
  const unhookCancel = onCancel(() => {
    if (finished) return;
    manifest.complete = false;
    manifest.interrupted = cancelRequested() ?? 'a signal';
    try {
      writeManifest(dir, manifest);
    } catch {
      // nothing more can be done while stopping
    }
    release();
    return `the run directory ${dir} is incomplete (manifest complete: false)`;
  });
  process.on('exit', release);
  markWriting(dir, true);
  try {
    writeManifest(dir, { ...manifest, complete: false });
  } catch (e) {
    release();
    throw e;
  }
  return rd;
}

/**
 * Runs `body` on an open run directory: an error leaves the manifest incomplete with why, and the
 * lock is released on every path. `body` calls `rd.finish(code)` after writing its reports.
 */
export async function withRunDir<T>(o: OpenRunDirOptions, body: (rd: RunDir) => Promise<T>): Promise<T> {
  const rd = openRunDir(o);
  try {
    return await body(rd);
  } catch (e) {
    rd.fail(e);
    throw e;
  } finally {
    rd.release();
  }
}

/**
 * Each side a run directory lists must be of the run: made with the manifest's model (fingerprint) on
 * the manifest's prompt tokens. A dump from another run copied in (or a run written over by another)
 * is refused by name rather than compared as if it were this run's.
 */
export async function checkRunSides(dir: string, m: RunManifest = readManifest(dir)): Promise<void> {
  for (const side of Object.keys(m.files)) {
    const file = sidePath(dir, m, side)!;
    if (!file.endsWith('.arrow')) continue;
    const meta = await readDumpMeta(file);
    if (meta.modelFingerprint !== m.model.fingerprint) {
      throw badInput(`${file}: made with model ${meta.modelFingerprint.slice(0, 16)}, but the run's manifest names ${m.model.fingerprint.slice(0, 16)} (${m.model.path}); not this run's ${side} dump`);
    }
    if (JSON.stringify(meta.promptTokens) !== JSON.stringify(m.promptTokens)) {
      throw badInput(`${file}: made on prompt tokens [${meta.promptTokens.slice(0, 8).join(',')}${meta.promptTokens.length > 8 ? ',...' : ''}] (${meta.promptTokens.length}), but the run's manifest has [${m.promptTokens.slice(0, 8).join(',')}${m.promptTokens.length > 8 ? ',...' : ''}] (${m.promptTokens.length}); not this run's ${side} dump`);
    }
  }
}

/**
 * A dump file that sits in a run directory must be of a finished run: `compare` and `replay` on a
 * side of an interrupted run are refused like `gate` on the directory.
 */
export function checkDumpRunComplete(file: string): void {
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(path.join(dir, MANIFEST_NAME))) return;
  let m: Partial<RunManifest>;
  try {
    m = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_NAME), 'utf8')) as Partial<RunManifest>;
  } catch {
    return; // not a manifest of ours: the dump stands on its own
  }
  if (typeof m !== 'object' || m === null || typeof m.formatVersion !== 'number' || typeof m.files !== 'object' || m.files === null) return;
  if (!Object.values(m.files).includes(path.basename(file))) return;
  readManifest(dir); // refuses an incomplete run, naming why
}
