// manifest.json: what a run directory holds and how it was made. Written atomically (temp + rename);
// a run writes it once with complete: false when it starts and again with complete: true at the end,
// so a directory from an interrupted run is recognised and refused (exit 3), never half-compared.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { badInput } from '../model/errors.ts';
import { fileInRun } from './dump.ts';

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
  layers: { last: number; all: boolean };
  backend: string;
  kernelMath?: string;
  options: Record<string, unknown>;
  /** side ('reference', 'device', 'device-teacher', 'reference-f64', ...) -> file name in the run dir */
  files: Record<string, string>;
  noHostFallback: boolean;
  fallbackLedger: FallbackEntry[];
  exitCode?: number;
}

export function writeManifest(dir: string, m: RunManifest): void {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, MANIFEST_NAME);
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(m, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

export function readManifest(dir: string): RunManifest {
  const file = path.join(dir, MANIFEST_NAME);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw badInput(`${file}: ${code === 'ENOENT' ? 'no such file (not a ds4-diff run directory)' : `cannot read (${code})`}`);
  }
  let m: RunManifest;
  try {
    m = JSON.parse(text) as RunManifest;
  } catch (e) {
    throw badInput(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof m !== 'object' || m === null || typeof m.formatVersion !== 'number') throw badInput(`${file}: not a ds4-diff run manifest`);
  if (m.formatVersion > MANIFEST_FORMAT_VERSION) throw badInput(`${file}: manifest format version ${m.formatVersion} is newer than this ds4-diff reads (${MANIFEST_FORMAT_VERSION})`);
  if (m.complete !== true) throw badInput(`${file}: the run is incomplete (interrupted or still running); re-run it`);
  for (const k of ['model', 'promptTokens', 'layers', 'backend', 'files', 'fallbackLedger'] as const) {
    if (m[k] === undefined) throw badInput(`${file}: field '${k}' missing`);
  }
  return m;
}

/** Path of a side's dump in a run, or undefined if the run has no such side. */
export function sidePath(dir: string, m: RunManifest, side: string): string | undefined {
  const name = m.files[side];
  return name === undefined ? undefined : fileInRun(dir, name);
}
