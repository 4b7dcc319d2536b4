// The device backend interface the orchestrator drives (issue 5). `sim` is the simulated Ascend device
// (native addon, ascend/native.ts); a real CANN/AscendCL backend would implement the same interface
// with aclrtMalloc/aclrtMemcpyAsync/kernel launches. No such runtime exists here, so `ascend` fails
// plainly instead of pretending.
import { Ds4DiffError, EXIT, badInput } from '../model/errors.ts';
import { loadNative, type KernelDoc, type KernelStat, type MathModeName, type NativeDevice } from './native.ts';

/** What the orchestrator needs from a device: memory, an in-order stream of named kernels, stats. */
export interface DeviceBackend {
  readonly name: string;
  alloc(bytes: number, tag: string): number;
  free(handle: number): void;
  upload(handle: number, data: ArrayBufferView, offset?: number): void;
  download(handle: number, bytes?: number, offset?: number): Uint8Array;
  launch(kernel: string, bufs: number[], scalars: number[]): void;
  synchronize(): void;
  kernels(): KernelDoc[];
  stats(): Record<string, KernelStat>;
  resetStats(): void;
  setMathMode(mode: MathModeName): void;
}

export type BackendName = 'sim' | 'ascend';

function simBackend(dev: NativeDevice): DeviceBackend {
  return {
    name: 'sim',
    alloc: (b, t) => dev.alloc(b, t),
    free: (h) => dev.free(h),
    upload: (h, d, o) => dev.upload(h, d, o),
    download: (h, b, o) => dev.download(h, b, o),
    launch: (k, b, s) => dev.launch(k, b, s),
    synchronize: () => dev.synchronize(),
    kernels: () => dev.kernels(),
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
  return simBackend(load.dev);
}
