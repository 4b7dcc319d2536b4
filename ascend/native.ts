// Loader and typed face of the simulated Ascend device addon (native/, kernels/; issue 5).
//
// The device: buffers live in device memory the host cannot address — JS holds opaque numeric
// handles and only upload/download move bytes. Launches go onto one in-order stream and run
// asynchronously on a worker thread; upload is stream-ordered, download synchronizes first.
// Kernel errors and sanitizer reports (use-after-free, out-of-bounds, with kernel, buffer and offset)
// surface as exceptions from the next synchronize()/download().
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type MathModeName = 'ascend' | 'exact';

export interface KernelStat {
  calls: number;
  /** Bytes the kernel declared to read (sanitizer ranges), summed over calls. */
  bytesIn: number;
  /** Bytes the kernel declared to write, summed over calls. */
  bytesOut: number;
  /** Wall time on the stream thread, ns. */
  ns: number;
}

/** A buffer of a kernel signature (kernels/kernel_api.h): sizes are expressions of the named scalars. */
export interface BufferSignature {
  name: string;
  /** in: activation read; weight: model tensor read; out: written; inout: read and written */
  role: 'in' | 'weight' | 'out' | 'inout';
  dtype: 'f32' | 'f16' | 'i8' | 'i32' | 'u8' | 'q8_0' | 'q2_k' | 'iq2_xxs';
  /** element count and first element of the span the kernel touches */
  count: string;
  offset: string;
  /** the span wraps modulo this many elements (the raw KV ring) */
  ring?: string;
  /** [N, OFF, STRIDE]: the span holds one N×N matrix at OFF of every STRIDE elements */
  mat?: [string, string, string];
  /** the kernel quantizes this f32 input to int8 in blocks of 32 (q8_0) or 256 (q8_k) */
  quant?: 'q8_0' | 'q8_k';
  /** whole expert slices, picked by the kernel's `slot` buffer */
  experts?: boolean;
}

/** A registered kernel's one declaration (kernels/*.cpp DS4_KERNEL): everything the TS side derives from. */
export interface KernelSignature {
  /** Launch name (the AscendC kernel is ds4_<name>). */
  name: string;
  /** What it computes. */
  doc: string;
  /** Scalar names, in launch order. */
  scalars: string[];
  /** Buffers, in launch order. */
  buffers: BufferSignature[];
  /** Registry stage names the graph's launches of it produce. */
  stages: string[];
  /** Named device operations it applies (exp rsqrt sqrt log round f16 rope; kernels/ascend_math.h). */
  approx: string[];
  /** Largest NMSE of its outputs against its exact host twin on identical inputs, per kernel math. */
  budget: KernelBudget;
}

/** A kernel's declared budget: max NMSE per kernel math, at position 0 when it grows with the position. */
export type KernelBudget = Record<MathModeName, number> & {
  /** relative error added per position of the row written (RoPE's angles; kernels/ascend_math.h) */
  perPos?: number;
};

/** A kernel's budget as a relative RMS error at position `pos`: √max_nmse plus its growth per position (`.grows_per_pos`, kernels/kernel_api.h). */
export function budgetRelAt(b: KernelBudget, math: MathModeName, pos: number): number {
  return Math.sqrt(b[math]) + (b.perPos ?? 0) * Math.max(0, pos);
}

/** The same as an NMSE (what the kernel suite judges); the declared value itself where it does not grow. */
export function budgetAt(b: KernelBudget, math: MathModeName, pos: number): number {
  return b.perPos ? budgetRelAt(b, math, pos) ** 2 : b[math];
}

/** One buffer's span for a launch's scalars, in bytes (ring: wrap length, 0 = none). */
export interface SpanBytes {
  offset: number;
  bytes: number;
  ring: number;
  /** [N, OFF, STRIDE] in elements */
  mat?: [number, number, number];
}

export interface LaunchOptions {
  /** Override the device's math mode for this launch. */
  math?: MathModeName;
  /** Override the parts count (1..64) for this launch. */
  parts?: number;
  /** Bugs planted in the kernel's own arithmetic: 'coarse-exp', 'round-half-away', 'pairs-halves'. */
  faults?: string[];
}

export interface NativeDevice {
  /** Allocate `bytes` of device memory; fresh memory reads as f32 NaN (0xff bytes). `tag` names it in errors. */
  alloc(bytes: number, tag: string): number;
  /**
   * A weight buffer that is `bytes` bytes at `offset` of a model file mapped by NativeAddon.mapFile: no fill,
   * no copy, no upload (the page cache serves it); read-only (a kernel or an upload writing it is a fault).
   */
  mapWeight(mapId: number, offset: number, bytes: number, tag: string): number;
  /** Free a buffer. Its memory is poisoned and quarantined; a launch that still uses it is reported. */
  free(handle: number): void;
  /** Allocation size in bytes. */
  size(handle: number): number;
  /** Copy bytes host → device at `offset` (stream-ordered: after every launch queued before it). */
  upload(handle: number, data: ArrayBufferView, offset?: number): void;
  /** Synchronize, then copy `bytes` (default: to the end) from `offset` device → host. */
  download(handle: number, bytes?: number, offset?: number): Buffer;
  /** Queue kernel `kernel` with buffer handles and scalar arguments in signature order (ascend/kernels.ts names them). */
  launch(kernel: string, bufs: number[], scalars: number[], opts?: LaunchOptions): void;
  /** Wait for the stream; throws the first kernel/sanitizer error since the last synchronize. */
  synchronize(): void;
  /** Record an event on the stream; returns its id. */
  recordEvent(): number;
  /** Block until the event has been reached by the stream. */
  waitEvent(event: number): void;
  /** Whether the stream has reached the event. */
  queryEvent(event: number): boolean;
  /** 'ascend' = the AscendC approximations (default); 'exact' = libm/IEEE (kernels/ascend_math.h). */
  setMathMode(mode: MathModeName): void;
  mathMode(): MathModeName;
  /** Parts per launch (DS4_ASCEND_KERNEL_PARTS, default 32, 1..64). */
  setParts(n: number): void;
  parts(): number;
  /** Per-kernel statistics since the last resetStats(). */
  stats(): Record<string, KernelStat>;
  resetStats(): void;
  /** The registered kernels' signatures. */
  kernels(): KernelSignature[];
}

/** The addon module: the device class, and the signature table without a device. */
export interface NativeAddon {
  Device: new () => NativeDevice;
  kernels(): KernelSignature[];
  spans(kernel: string, scalars: number[]): SpanBytes[];
  /** Map an open file read-only (model/gguf.ts); the id names the mapping in every thread of the process. */
  mapFile(fd: number): number;
  /** Drop the registration; views and device buffers that hold the mapping keep it until they go. */
  unmapFile(mapId: number): void;
  /** `length` bytes at `offset` of the mapping, as an ArrayBuffer over them (no copy; read-only memory). */
  mapRange(mapId: number, offset: number, length: number): ArrayBuffer;
  /** Memory read bandwidth in bytes/s: `threads` threads summing a `bytes` buffer with vector loads, best of `reps`. */
  readBandwidth(bytes: number, threads: number, reps: number): number;
}

export type NativeLoad = { ok: true; dev: NativeDevice; addon: NativeAddon } | { ok: false; reason: string };

const nativeDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'native');

/** Where install.mjs puts the addon. */
export const defaultAddonPath = join(nativeDir, 'build', 'Release', 'ds4_sim.node');

/** Why the addon is missing: the reason install.mjs recorded, or a generic hint. */
function missingReason(addonPath: string): string {
  const recorded = join(dirname(dirname(addonPath)), 'UNAVAILABLE.txt');
  if (existsSync(recorded)) return `simulated device addon not built: ${readFileSync(recorded, 'utf8').trim().split('\n')[0]}`;
  return `simulated device addon not found at ${addonPath} (build it with: node native/install.mjs)`;
}

/**
 * Load the addon and create a device. Never throws: a missing or broken addon gives ok:false with a
 * one-line reason that device commands print.
 */
export function loadNative(addonPath: string = defaultAddonPath): NativeLoad {
  const m = loadAddon(addonPath);
  if (!m.ok) return m;
  return { ok: true, dev: new m.addon.Device(), addon: m.addon };
}

/** The addon module alone (signatures and spans need no device). */
export function loadAddon(addonPath: string = defaultAddonPath): { ok: true; addon: NativeAddon } | { ok: false; reason: string } {
  if (!existsSync(addonPath)) return { ok: false, reason: missingReason(addonPath) };
  try {
    return { ok: true, addon: createRequire(import.meta.url)(addonPath) as NativeAddon };
  } catch (e) {
    return { ok: false, reason: `simulated device addon at ${addonPath} failed to load: ${(e as Error).message.split('\n')[0]}` };
  }
}
