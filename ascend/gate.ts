// The no-host-fallback gate and the fallback ledger (catalog §9, ds4_ascend.c
// ascend_host_fallback_begin / ascend_note_fallback).
//
// Every primitive the device path runs goes through `DeviceGate.dispatch`: when the backend has the
// kernel it launches it; when not (never ported, or removed with --disable-kernel as an unported
// primitive would be missing) the gate either stops the run — `host fallback disabled: <primitive>
// (layer L, pos P, stage S)`, exit 2 — or, with host fallback allowed, reads the inputs back, computes
// on the host, writes the result back and records the bytes moved, as the fork's host paths do.
import type { FallbackEntry } from '../diff/manifest.ts';
import { Ds4DiffError, EXIT } from '../model/errors.ts';

/** DS4_ASCEND_NO_HOST_FALLBACK: on if set, non-empty and not "0" (ds4_ascend.c reads it the same way). */
export function envForcesNoHostFallback(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.DS4_ASCEND_NO_HOST_FALLBACK;
  return v !== undefined && v !== '' && v !== '0';
}

/** Where in the graph a primitive runs, for the gate's message and the ledger. */
export interface GraphSite {
  layer: number;
  pos: number;
  stage: string;
}

/** A host implementation of a primitive: it gets the inputs read back and returns what to write back. */
export interface HostFallback {
  /** Read the primitive's inputs from the device; returns the bytes moved to the host. */
  readInputs(): number;
  /** Compute on the host and write the outputs back; returns the bytes moved to the device. */
  computeAndWrite(): number;
}

export class DeviceGate {
  private readonly entries = new Map<string, FallbackEntry>();
  readonly allowHostFallback: boolean;

  /**
   * @param available kernels the backend can launch (the addon's registry minus disabled ones)
   * @param allowHostFallback the user's --allow-host-fallback; ignored (gate on) when the
   *   environment forces DS4_ASCEND_NO_HOST_FALLBACK
   */
  constructor(private readonly available: ReadonlySet<string>, allowHostFallback = false, env: NodeJS.ProcessEnv = process.env) {
    this.allowHostFallback = allowHostFallback && !envForcesNoHostFallback(env);
  }

  has(kernel: string): boolean {
    return this.available.has(kernel);
  }

  /**
   * Run `primitive`: `onDevice()` when every kernel it needs is available, else the host fallback
   * (gate off) or a Ds4DiffError exit 2 naming primitive, layer, position and stage (gate on).
   * `kernels` are the device kernels the primitive is made of; `primitive` is the fork's fallback name.
   */
  dispatch(primitive: string, kernels: readonly string[], site: GraphSite, onDevice: () => void, host: HostFallback): void {
    if (kernels.every((k) => this.available.has(k))) {
      onDevice();
      return;
    }
    if (!this.allowHostFallback) {
      const missing = kernels.filter((k) => !this.available.has(k)).join(', ');
      throw new Ds4DiffError(
        `host fallback disabled: ${primitive} (layer ${site.layer}, pos ${site.pos}, stage ${site.stage}); no device kernel ${missing}`,
        EXIT.hostFallback,
      );
    }
    this.runOnHost(primitive, site, host, 'no device kernel (host fallback allowed)');
  }

  /**
   * Run a primitive on the host regardless of the gate and record it with `reason` — bisect's kernel
   * swap (issue 6) replaces device kernels by host reference implementations and says so.
   */
  runOnHost(primitive: string, site: GraphSite, host: HostFallback, reason: string): void {
    const toHost = host.readInputs();
    const toDevice = host.computeAndWrite();
    this.note(primitive, toHost, toDevice, site, reason);
  }

  /** ascend_note_fallback: per-name calls and bytes; the first site is kept for the report. */
  private note(primitive: string, toHost: number, toDevice: number, site: GraphSite, reason: string): void {
    const e = this.entries.get(primitive);
    if (e) {
      e.calls++;
      e.bytesToHost += toHost;
      e.bytesToDevice += toDevice;
      return;
    }
    this.entries.set(primitive, {
      primitive, calls: 1, bytesToHost: toHost, bytesToDevice: toDevice,
      reason, layer: site.layer, pos: site.pos, stage: site.stage,
    });
  }

  ledger(): FallbackEntry[] {
    return [...this.entries.values()].map((e) => ({ ...e }));
  }
}
