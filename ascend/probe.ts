// The simulated device as bisect's probe (diff/bisect.ts): one device pass per call, free-running or
// teacher-forced against the reference, with chosen kernels swapped for their host implementations
// (ascend/host.ts) and the case's injected faults in place. Records the kernels that produced each
// capture and turns a NaN stop into data instead of an error.
import type { BisectProbe, ProbeRun } from '../diff/bisect.ts';
import type { StageRecord } from '../model/stages.ts';
import type { Ds4Config } from '../model/config.ts';
import type { GgufModel } from '../model/gguf.ts';
import type { Injection } from './faults.ts';
import { HOST_KERNELS } from './host.ts';
import { Producers } from './producers.ts';
import { KernelNanError, openDeviceSession, runDevice, type DeviceSession } from './orchestrator.ts';

export interface SimProbeOptions {
  model: GgufModel;
  cfg: Ds4Config;
  tokens: number[];
  lastLayer: number;
  reference: StageRecord[];
  kernelMath?: 'ascend' | 'exact';
  inject?: Injection[];
  disabledKernels?: string[];
  allowHostFallback?: boolean;
  /** the prompt as ds4-ascend's batched prefill (runDevice `prefill`) */
  prefill?: boolean;
  /** where the head runs (runDevice `headPositions`; default the last token) */
  headPositions?: number[];
  addonPath?: string;
  onProgress?: (msg: string) => void;
  /** a device session with the case's weights, kept open by the caller (default: the probe opens its own) */
  session?: DeviceSession;
}

/** The probe keeps one device with the case's weights across its passes; close() frees it (unless the caller gave it). */
export function simProbe(o: SimProbeOptions): BisectProbe & { close(): void } {
  const ref = new Map(o.reference.map((r) => [`${r.stage}/${r.layer}/${r.pos}`, r.values]));
  let session: DeviceSession | undefined = o.session;
  return {
    lastLayer: o.lastLayer,
    close: () => {
      if (session !== o.session) session?.close();
    },
    async run({ teacher, hostKernels, lastLayer }): Promise<ProbeRun> {
      const records: StageRecord[] = [];
      const producers = new Map<string, readonly string[]>();
      const launched = new Set<string>();
      const byStage = new Producers();
      const out: ProbeRun = { records, producers, swappable: [] };
      session ??= openDeviceSession(o.model, 'sim', o.addonPath);
      try {
        await runDevice({
          session,
          model: o.model, cfg: o.cfg, tokens: o.tokens, lastLayer: lastLayer ?? o.lastLayer,
          kernelMath: o.kernelMath, inject: o.inject, disabledKernels: o.disabledKernels, allowHostFallback: o.allowHostFallback, prefill: o.prefill, headPositions: o.headPositions,
          addonPath: o.addonPath, hostKernels,
          tap: (r) => records.push(r),
          teacher: teacher ? (s, l, p) => ref.get(`${s}/${l}/${p}`) : undefined,
          producers: (s, l, p, ks) => {
            producers.set(`${s}/${l}/${p}`, ks);
            byStage.note(s, l, p, ks);
            for (const k of ks) launched.add(k);
          },
          onProgress: o.onProgress,
        });
      } catch (e) {
        if (!(e instanceof KernelNanError)) throw e;
        out.nan = { stage: e.stage, layer: e.layer, pos: e.pos, element: e.element, kernels: e.kernels, message: e.message };
      }
      out.swappable = [...launched].filter((k) => HOST_KERNELS[k]);
      out.stageProducers = byStage.table();
      return out;
    },
  };
}
