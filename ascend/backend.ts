// The device backend interface the orchestrator drives (issue 5). `sim` is the simulated Ascend device
// (native addon, ascend/native.ts); a real CANN/AscendCL backend would implement the same interface
// with aclrtMalloc/aclrtMemcpyAsync/kernel launches. No such runtime exists here, so `ascend` fails
// plainly instead of pretending. `planBackend` runs nothing: it lets the orchestrator walk a pass's
// launches before the pass (what an injected fault will land on).
import { Ds4DiffError, EXIT, badInput } from '../model/errors.ts';
import type { GgufModel } from '../model/gguf.ts';
import { KernelCatalog, kernelCatalog } from './kernels.ts';
import { loadNative, type KernelStat, type LaunchOptions, type MathModeName, type NativeAddon, type NativeDevice } from './native.ts';

/** What the orchestrator needs from a device: memory, an in-order stream of named kernels, stats. */
export interface DeviceBackend {
  readonly name: string;
  /** the kernels' signatures (ascend/kernels.ts): launches are named through it */
  readonly catalog: KernelCatalog;
  alloc(bytes: number, tag: string): number;
  /**
   * A weight buffer of `bytes` model bytes at absolute file `offset`, backed by the model file's mapping (no
   * fill, no copy, no upload), when this device can read that mapping; else undefined (alloc and upload it).
   */
  mapWeight(model: GgufModel, offset: number, bytes: number, tag: string): number | undefined;
  free(handle: number): void;
  upload(handle: number, data: ArrayBufferView, offset?: number): void;
  download(handle: number, bytes?: number, offset?: number): Uint8Array;
  /** buffers and scalars in signature order (KernelCatalog.bufferArgs/scalarArgs) */
  launch(kernel: string, bufs: number[], scalars: number[], opts?: Pick<LaunchOptions, 'faults'>): void;
  synchronize(): void;
  stats(): Record<string, KernelStat>;
  resetStats(): void;
  setMathMode(mode: MathModeName): void;
}

export type BackendName = 'sim' | 'ascend';

function simBackend(dev: NativeDevice, addon: NativeAddon, catalog: KernelCatalog): DeviceBackend {
  return {
    name: 'sim',
    catalog,
    alloc: (b, t) => dev.alloc(b, t),
    // the model's mapping lives in the addon that made it: another build of the addon (DS4_SIM_ADDON) uploads
    mapWeight: (m, offset, bytes, tag) => (m.mapping?.addon === addon ? dev.mapWeight(m.mapping.id, offset, bytes, tag) : undefined),
    free: (h) => dev.free(h),
    upload: (h, d, o) => dev.upload(h, d, o),
    download: (h, b, o) => dev.download(h, b, o),
    launch: (k, b, s, o) => dev.launch(k, b, s, o),
    synchronize: () => dev.synchronize(),
    stats: () => dev.stats(),
    resetStats: () => dev.resetStats(),
    setMathMode: (m) => dev.setMathMode(m),
  };
}

/**
 * Open a backend by name. `sim` without a built addon → exit 125 with the loader's reason (the
 * reference still works); `ascend` → exit 3: it needs the CANN runtime, which is not available here.
 */
export function openBackend(name: string, addonPath?: string): DeviceBackend {
  if (name === 'ascend') {
    throw badInput('backend ascend needs the Huawei CANN runtime (AscendCL) on an Atlas host; it is not available here (use --backend sim)');
  }
  if (name !== 'sim') throw badInput(`unknown backend '${name}' (expected sim or ascend)`);
  const load = loadNative(addonPath);
  if (!load.ok) throw new Ds4DiffError(load.reason, EXIT.cannotEvaluate);
  return simBackend(load.dev, load.addon, kernelCatalog(addonPath));
}

/**
 * A backend that runs nothing: allocations are numbered, downloads read zeros, launches are only
 * checked against the signatures. The orchestrator walks a pass on it to see which launches it makes.
 */
export function planBackend(addonPath?: string): DeviceBackend {
  const catalog = kernelCatalog(addonPath);
  let next = 1;
  return {
    name: 'plan',
    catalog,
    alloc: () => next++,
    mapWeight: () => undefined,
    free: () => undefined,
    upload: () => undefined,
    download: (_h, bytes = 0) => new Uint8Array(bytes),
    launch: (k) => void catalog.get(k),
    synchronize: () => undefined,
    stats: () => ({}),
    resetStats: () => undefined,
    setMathMode: () => undefined,
  };
}
