// The device kernels' signatures on the TS side. Each kernel declares its signature once, in C++
// (kernels/*.cpp DS4_KERNEL, kernels/kernel_api.h); the addon exports it and everything here is derived
// from it: named launches (no positional argument lists in TS), the byte spans host twins read and
// write, which stages a kernel produces and its error budget per kernel math.
import { Ds4DiffError, EXIT } from '../model/errors.ts';
import { budgetAt, defaultAddonPath, loadAddon, type BufferSignature, type KernelSignature, type LaunchOptions, type MathModeName, type NativeAddon, type NativeDevice, type SpanBytes } from './native.ts';

export type { BufferSignature, KernelSignature } from './native.ts';

/** Named scalar arguments of a launch. */
export type Scalars = Record<string, number>;
/** Named buffer handles of a launch. */
export type Handles = Record<string, number>;

/** One buffer's span for a launch (bytes), with its declaration. */
export interface BufferSpan extends SpanBytes {
  buf: BufferSignature;
}

/** Written by the launch (out, inout). */
export const writes = (b: BufferSignature): boolean => b.role === 'out' || b.role === 'inout';
/** Read by the launch (in, weight, inout). */
export const reads = (b: BufferSignature): boolean => b.role !== 'out';

export class KernelCatalog {
  readonly kernels: ReadonlyMap<string, KernelSignature>;

  constructor(private readonly addon: Pick<NativeAddon, 'kernels' | 'spans'>) {
    this.kernels = new Map(addon.kernels().map((k) => [k.name, k]));
  }

  get(kernel: string): KernelSignature {
    const k = this.kernels.get(kernel);
    if (!k) throw new Error(`no device kernel '${kernel}' (see ds4-diff kernels)`);
    return k;
  }

  /** The scalars of a named launch in signature order; every declared name must be given, and nothing else. */
  scalarArgs(kernel: string, scalars: Scalars): number[] {
    return ordered(kernel, 'scalar', this.get(kernel).scalars, scalars);
  }

  /** The buffer handles of a named launch in signature order. */
  bufferArgs(kernel: string, bufs: Handles): number[] {
    return ordered(kernel, 'buffer', this.get(kernel).buffers.map((b) => b.name), bufs);
  }

  /** Every buffer's span for these scalars (the C++ evaluator of the declared expressions). */
  spans(kernel: string, scalars: Scalars): BufferSpan[] {
    const k = this.get(kernel);
    return this.addon.spans(kernel, this.scalarArgs(kernel, scalars)).map((s, i) => ({ ...s, buf: k.buffers[i] }));
  }

  /** The kernels whose launches produce registry stage `stage` (their declared stage lists). */
  stageKernels(stage: string): string[] {
    return [...this.kernels.values()].filter((k) => k.stages.includes(stage)).map((k) => k.name).sort();
  }

  /** A named launch on a device (the tests' and the kernel suite's way to call a kernel). */
  launch(dev: NativeDevice, kernel: string, bufs: Handles, scalars: Scalars, opts?: LaunchOptions): void {
    dev.launch(kernel, this.bufferArgs(kernel, bufs), this.scalarArgs(kernel, scalars), opts);
  }
}

function ordered(kernel: string, what: string, names: string[], given: Record<string, number>): number[] {
  for (const n of Object.keys(given)) if (!names.includes(n)) throw new Error(`${kernel}: no ${what} named ${n} (${what}s: ${names.join(', ')})`);
  return names.map((n) => {
    const v = given[n];
    if (v === undefined) throw new Error(`${kernel}: ${what} ${n} not given (${what}s: ${names.join(', ')})`);
    return v;
  });
}

const catalogs = new Map<string, KernelCatalog>();

/** The signature table of the simulator addon (loaded once per path; exit 125 with the reason when it is missing). */
export function kernelCatalog(addonPath: string = defaultAddonPath): KernelCatalog {
  let c = catalogs.get(addonPath);
  if (!c) {
    const m = loadAddon(addonPath);
    if (!m.ok) throw new Ds4DiffError(m.reason, EXIT.cannotEvaluate);
    c = new KernelCatalog(m.addon);
    catalogs.set(addonPath, c);
  }
  return c;
}

/** Which device kernels produce registry stage `stage` (canonical name), sorted. */
export function stageKernels(stage: string, addonPath?: string): string[] {
  return kernelCatalog(addonPath).stageKernels(stage);
}

/** `kernel`'s error budget for `math` at position `pos`: the largest NMSE of its outputs against its exact host twin on identical inputs. */
export function kernelBudget(kernel: string, math: MathModeName, pos = 0, addonPath?: string): number {
  return budgetAt(kernelCatalog(addonPath).get(kernel).budget, math, pos);
}
