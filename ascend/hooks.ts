// The device executor's hooks (ascend/orchestrator.ts DeviceGraph): a launch and a capture as the
// plug-ins see them. Teacher forcing, fault injection, host swap and producer tracking are plug-ins
// over these, generic over the kernels' signatures (ascend/kernels.ts).
import type { DeviceBackend } from './backend.ts';
import type { GraphSite } from './gate.ts';
import type { BufferSpan, KernelSignature, Scalars } from './kernels.ts';

/** One kernel launch of the graph, named. */
export class Launch {
  /** bugs planted in the kernel's own arithmetic for this launch (the device's launch option) */
  readonly faults: string[] = [];
  /** set by a plug-in that runs the launch on the host instead: the fallback ledger's reason */
  onHost?: string;
  private spanList?: BufferSpan[];

  constructor(
    readonly dev: DeviceBackend,
    readonly sig: KernelSignature,
    readonly handles: Record<string, number>,
    readonly scalars: Scalars,
    readonly site: GraphSite,
    /** the fork's fallback name for what this launch computes */
    readonly primitive: string,
  ) {}

  get kernel(): string {
    return this.sig.name;
  }

  /** every buffer's span for this launch's scalars */
  get spans(): BufferSpan[] {
    this.spanList ??= this.dev.catalog.spans(this.kernel, this.scalars);
    return this.spanList;
  }

  span(buffer: string): BufferSpan {
    const s = this.spans.find((x) => x.buf.name === buffer);
    if (!s) throw new Error(`${this.kernel} has no buffer ${buffer}`);
    return s;
  }
}

/** A stage read back from a device buffer (elements [off, off + n) of it). */
export interface Capture {
  stage: string;
  layer: number;
  pos: number;
  handle: number;
  n: number;
  off: number;
  i32: boolean;
  /** the launches that produced it (set by producer tracking) */
  kernels: readonly string[];
}

/** A plug-in of the executor; every hook is optional. */
export interface DevicePlugin {
  /** before the launch runs: may transform its inputs, plant faults, or claim it for the host */
  beforeLaunch?(l: Launch): void;
  /** after it ran (on the device or the host) */
  afterLaunch?(l: Launch): void;
  /** at a capture site, before the stage is read back */
  atCapture?(c: Capture): void;
  /** after the stage was read back (and tapped) */
  afterCapture?(c: Capture): void;
}
