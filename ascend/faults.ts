// Fault injection into the simulated device (issue 6): `--inject KERNEL[.BUFFER]:FAULT[=ARG][@LAYER|@A:B]`
// plants one of the real bug classes seen while porting DS4 into one kernel, so bisect can be shown to
// name it and `calibrate` can measure what the verdicts catch. Which faults a kernel takes follows from
// its signature (ascend/kernels.ts), with no per-kernel table:
//   bias=X, scale=X, nan=I  any float buffer it writes (all of them, or the named one; nan: the first)
//   stale-buffer            an activation it reads (the first, or the named one) holds the previous
//                           position's contents — a buffer reused without being rewritten
//   transpose-comb          a square matrix it reads or writes (the HC comb) is transposed
//   coarse-exp              its exp is (1 + x/16)^16                      (kernels that use exp)
//   round-half-away         its float → int8 rounding ties away from zero (kernels that round to int8)
//   pairs-halves            its RoPE rotates (x_j, x_{j+n_rot/2}) pairs   (kernels that rotate pairs)
//   expert-off-by-one       the expert slices it reads are staged for id + 1 (kernels reading experts)
//   emit-pos                the compressor pools its window one token late (the window-pool kernel)
// The first five work around the launch (outputs post-processed, inputs swapped and restored); the
// next three run inside the kernel (a launch option of the device, kernels/ascend_math.h); the last two
// are the graph's own staging/timing. A fault lives in the device kernel: a kernel swapped for its host
// twin (bisect) runs clean. A fault must be able to land in the run: `FaultPlugin.dry` walks the run's
// launches first and anything that would plant nothing is refused before the run (exit 3).
import { badInput } from '../model/errors.ts';
import { openBackend } from './backend.ts';
import type { DevicePlugin, Launch } from './hooks.ts';
import { readSpan, writeSpan } from './host.ts';
import { writes, type BufferSignature, type BufferSpan, type KernelCatalog, type KernelSignature } from './kernels.ts';

export const FAULT_KINDS = [
  'bias', 'scale', 'nan', 'pairs-halves', 'transpose-comb', 'expert-off-by-one', 'stale-buffer', 'round-half-away', 'coarse-exp', 'emit-pos',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface Injection {
  kernel: string;
  fault: FaultKind;
  /** bias: the constant; scale: the factor; nan: the output element index */
  arg?: number;
  /** the one buffer it targets (`KERNEL.BUFFER:...`); else the kind's default */
  buffer?: string;
  /** only launches in these layers (inclusive; `@L` or `@A:B` after the spec); all layers when absent */
  layers?: [number, number];
  /** the spec as the user wrote it, for messages and reports */
  spec: string;
}

/** The kernel the graph launches when a compressor window closes (emit-pos delays that launch). */
export const WINDOW_POOL_KERNEL = 'compressor_update_pool';

/** Faults run inside the kernel's arithmetic (a device launch option, kernels/kernel_api.h KernelFaultFlag). */
const IN_KERNEL = new Set<FaultKind>(['coarse-exp', 'round-half-away', 'pairs-halves']);

const floatOut = (b: BufferSignature): boolean => writes(b) && b.dtype === 'f32';
const activationIn = (b: BufferSignature): boolean => b.role === 'in' || b.role === 'inout';
const matrix = (b: BufferSignature): boolean => b.mat !== undefined;

/** The buffers a fault of `kind` may target in `k` (none for the kinds that act on no buffer). */
function candidates(k: KernelSignature, kind: FaultKind): BufferSignature[] {
  if (kind === 'bias' || kind === 'scale' || kind === 'nan') return k.buffers.filter(floatOut);
  if (kind === 'stale-buffer') return k.buffers.filter(activationIn);
  if (kind === 'transpose-comb') return k.buffers.filter(matrix);
  return [];
}

/** What a kernel must have for each kind, as its signature shows it, and how its absence reads. */
const NEEDS: Record<FaultKind, [has: (k: KernelSignature) => boolean, lacks: string]> = {
  bias: [(k) => k.buffers.some(floatOut), 'it has no float output'],
  scale: [(k) => k.buffers.some(floatOut), 'it has no float output'],
  nan: [(k) => k.buffers.some(floatOut), 'it has no float output'],
  'stale-buffer': [(k) => k.buffers.some(activationIn), 'it reads no activation a reused buffer could hold'],
  'transpose-comb': [(k) => k.buffers.some(matrix), 'it reads and writes no square matrix (only the HC comb is one)'],
  'coarse-exp': [(k) => k.approx.includes('exp'), 'it computes no exp'],
  'round-half-away': [(k) => k.approx.includes('round'), 'it rounds no float to int8'],
  'pairs-halves': [(k) => k.approx.includes('rope'), 'it rotates no RoPE pairs'],
  'expert-off-by-one': [(k) => k.buffers.some((b) => b.experts), 'it reads no expert slices staged by id'],
  'emit-pos': [(k) => k.name === WINDOW_POOL_KERNEL, `only the compressor's window pool (${WINDOW_POOL_KERNEL}) emits compressed rows at window ends`],
};

/** Why fault `kind` makes no sense for kernel `k` (its signature), or '' when it does. */
export function faultRefusal(k: KernelSignature, kind: FaultKind): string {
  const [has, lacks] = NEEDS[kind];
  if (!has(k)) return kind === 'bias' || kind === 'scale' || kind === 'nan' ? `${k.name} has no float output a ${kind} fault could change` : `fault ${kind} makes no sense for ${k.name}: ${lacks}`;
  // bisect names a fault by the stages its kernel produces: a kernel producing none could never be named
  if (k.stages.length === 0) return `${k.name} produces no stage of the graph, so a fault in it could never be named`;
  return '';
}

/** The fault kinds kernel `k` takes (by its signature): what `calibrate` may plant in it. */
export function kernelFaults(k: KernelSignature): FaultKind[] {
  return FAULT_KINDS.filter((kind) => faultRefusal(k, kind) === '');
}

/** Does fault f apply to a launch in layer `layer`? */
export function faultInLayer(f: Injection, layer: number): boolean {
  return !f.layers || (layer >= f.layers[0] && layer <= f.layers[1]);
}

const NUMERIC = new Set<FaultKind>(['bias', 'scale', 'nan']);

/** Parse `KERNEL[.BUFFER]:FAULT[=ARG][@LAYERS]`; refuse (exit 3) unknown kernels, buffers and faults, and faults that make no sense for the kernel. */
export function parseInject(spec: string, catalog: KernelCatalog): Injection {
  const m = /^([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_]+))?:([a-z-]+)(?:=([^@]*))?(?:@(\d+)(?::(\d+))?)?$/.exec(spec.trim());
  if (!m) throw badInput(`--inject ${spec}: expected KERNEL[.BUFFER]:FAULT[=ARG][@LAYER|@A:B], e.g. rope_tail:pairs-halves or matmul_q8_0:bias=0.1@5`);
  const [, kernel, buffer, name, argText, lo, hi] = m;
  const layers: [number, number] | undefined = lo === undefined ? undefined : [Number(lo), Number(hi ?? lo)];
  if (layers && layers[1] < layers[0]) throw badInput(`--inject ${spec}: layer range ${lo}:${hi} is empty`);
  const k = catalog.kernels.get(kernel);
  if (!k) throw badInput(`--inject ${spec}: no kernel ${kernel} (see ds4-diff kernels)`);
  if (!(FAULT_KINDS as readonly string[]).includes(name)) throw badInput(`--inject ${spec}: unknown fault ${name} (expected one of ${FAULT_KINDS.join(', ')})`);
  const fault = name as FaultKind;
  let arg: number | undefined;
  if (NUMERIC.has(fault)) {
    if (argText === undefined || argText.trim() === '' || !Number.isFinite(Number(argText))) throw badInput(`--inject ${spec}: fault ${fault} needs a number, e.g. ${kernel}:${fault}=${fault === 'nan' ? 0 : 0.1}`);
    arg = Number(argText);
    if (fault === 'nan' && !(Number.isInteger(arg) && arg >= 0)) throw badInput(`--inject ${spec}: nan=I needs an element index ≥ 0`);
  } else if (argText !== undefined) {
    throw badInput(`--inject ${spec}: fault ${fault} takes no argument`);
  }
  const why = faultRefusal(k, fault);
  if (why) throw badInput(`--inject ${spec}: ${why}`);
  if (buffer !== undefined) {
    const c = candidates(k, fault);
    if (!k.buffers.some((b) => b.name === buffer)) throw badInput(`--inject ${spec}: ${kernel} has no buffer ${buffer} (buffers: ${k.buffers.map((b) => b.name).join(', ')})`);
    if (!c.some((b) => b.name === buffer)) {
      throw badInput(`--inject ${spec}: fault ${fault} cannot target ${kernel}.${buffer}${c.length ? ` (it can target ${c.map((b) => b.name).join(', ')})` : ' (it takes no buffer)'}`);
    }
  }
  return { kernel, fault, arg, spec, layers, ...(buffer !== undefined ? { buffer } : {}) };
}

/** Parse every `--inject` spec against the kernels of `backend` (refused before any work is done). */
export function parseInjects(specs: string[], backend: string, addonPath?: string): Injection[] {
  if (specs.length === 0) return [];
  const catalog = openBackend(backend, addonPath).catalog;
  return specs.map((s) => parseInject(s, catalog));
}

/** The buffers of launch `l` that injection `f` acts on (the named one, or the kind's default). */
function targets(f: Injection, l: Launch): BufferSpan[] {
  const c = candidates(l.sig, f.fault).filter((b) => f.buffer === undefined || b.name === f.buffer);
  const pick = f.fault === 'bias' || f.fault === 'scale' ? c : c.slice(0, 1);
  return pick.map((b) => l.span(b.name)).filter((s) => s.bytes > 0);
}

const f32 = (b: Uint8Array): Float32Array => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);

/** Transpose every N×N matrix of a span's values (mat: [N, OFF, STRIDE]) in place. */
function transposeMatrices(v: Float32Array, s: BufferSpan): void {
  const [n, off, stride] = s.mat as [number, number, number];
  for (let r = 0; r + stride <= v.length; r += stride) {
    for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) {
      const i = r + off + a * n + b, j = r + off + b * n + a;
      [v[i], v[j]] = [v[j], v[i]];
    }
  }
}

/**
 * The fault plug-in of the executor. `dry`: nothing touches the device; the plug-in only records which
 * injections land (what `unlanded()` reports), for the walk before the run.
 */
export class FaultPlugin implements DevicePlugin {
  private readonly landed = new Set<Injection>();
  private readonly largestOutput = new Map<Injection, number>();
  /** stale-buffer: each faulty launch's input from the previous position, by layer/stage/call */
  private readonly stale = new Map<string, Uint8Array>();
  private readonly staleCalls = new Map<string, number>();
  /** input bytes to put back after the launch, so only the faulty kernel sees them changed */
  private restore: Array<[handle: number, span: BufferSpan, bytes: Uint8Array]> = [];

  constructor(readonly injections: readonly Injection[], private readonly hostKernels: ReadonlySet<string>, readonly dry = false) {}

  /** Injection of `kind` on `kernel` in `layer`, for the graph's own faults (none once the kernel runs on the host). */
  planted(kernel: string, kind: FaultKind, layer: number): Injection | undefined {
    if (this.hostKernels.has(kernel)) return undefined;
    return this.injections.find((f) => f.kernel === kernel && f.fault === kind && faultInLayer(f, layer));
  }

  private active(l: Launch): Injection[] {
    if (l.onHost) return []; // the host twin is the reference's math: the planted fault lives in the device kernel
    return this.injections.filter((f) => f.kernel === l.kernel && faultInLayer(f, l.site.layer));
  }

  beforeLaunch(l: Launch): void {
    for (const f of this.active(l)) {
      this.noteLanding(f, l);
      if (this.dry) continue;
      if (IN_KERNEL.has(f.fault)) l.faults.push(f.fault);
      else if (f.fault === 'stale-buffer') this.swapStale(l, targets(f, l)[0]);
      else if (f.fault === 'transpose-comb') {
        const s = targets(f, l)[0];
        if (s && !writes(s.buf)) this.transform(l, s, (v) => transposeMatrices(v, s));
      }
    }
  }

  afterLaunch(l: Launch): void {
    for (const f of this.dry ? [] : this.active(l)) {
      if (f.fault === 'transpose-comb') {
        const s = targets(f, l)[0];
        if (s && writes(s.buf)) this.rewrite(l, s, (v) => transposeMatrices(v, s));
      } else if (f.fault === 'bias' || f.fault === 'scale') {
        const v = f.arg as number;
        for (const s of targets(f, l)) this.rewrite(l, s, (y) => y.forEach((x, i) => (y[i] = f.fault === 'bias' ? x + v : x * v)));
      } else if (f.fault === 'nan') {
        const s = targets(f, l)[0];
        if (s && (f.arg as number) < s.bytes / 4) this.rewrite(l, s, (y) => (y[f.arg as number] = NaN));
      }
    }
    for (const [h, s, bytes] of this.restore) writeSpan(l.dev, h, s, bytes);
    this.restore = [];
  }

  /** Read a span, change it, write it back. */
  private rewrite(l: Launch, s: BufferSpan, change: (v: Float32Array) => void): void {
    const h = l.handles[s.buf.name];
    const bytes = readSpan(l.dev, h, s);
    change(f32(bytes));
    writeSpan(l.dev, h, s, bytes);
  }

  /** Change an input for this launch only (restored after it unless the kernel writes that buffer). */
  private transform(l: Launch, s: BufferSpan, change: (v: Float32Array) => void): void {
    const h = l.handles[s.buf.name];
    const before = readSpan(l.dev, h, s);
    if (!writes(s.buf)) this.restore.push([h, s, before]);
    const after = before.slice();
    change(f32(after));
    writeSpan(l.dev, h, s, after);
  }

  /** stale-buffer: the input keeps what the same call site read at the previous position. */
  private swapStale(l: Launch, s: BufferSpan | undefined): void {
    if (!s) return;
    const key = this.staleKey(l);
    const h = l.handles[s.buf.name];
    const cur = readSpan(l.dev, h, s);
    const prev = this.stale.get(key);
    this.stale.set(key, cur);
    if (prev && prev.byteLength === cur.byteLength) {
      if (!writes(s.buf)) this.restore.push([h, s, cur]);
      writeSpan(l.dev, h, s, prev);
    }
  }

  /** layer|stage|n-th launch of this kernel at that (layer, stage, pos) */
  private staleKey(l: Launch): string {
    const at = `${l.kernel}|${l.site.layer}|${l.site.stage}|${l.site.pos}`;
    const call = this.staleCalls.get(at) ?? 0;
    this.staleCalls.set(at, call + 1);
    return `${l.kernel}|${l.site.layer}|${l.site.stage}|${call}`;
  }

  private noteLanding(f: Injection, l: Launch): void {
    if (f.fault === 'nan') {
      const n = (targets(f, l)[0]?.bytes ?? 0) / 4;
      this.largestOutput.set(f, Math.max(this.largestOutput.get(f) ?? 0, n));
      if ((f.arg as number) < n) this.landed.add(f);
    } else if (f.fault === 'stale-buffer' && this.dry) {
      // in the walk, a repeat of the same call site at a later position is what makes an input stale
      const key = this.staleKey(l);
      if (this.stale.has(key)) this.landed.add(f);
      this.stale.set(key, new Uint8Array(0));
    } else {
      this.landed.add(f);
    }
  }

  /** The injections that planted nothing, each with why (after a walk of the run's launches). */
  unlanded(launchedLayers: (kernel: string) => number[], run: { lastLayer: number; nLayer: number }): Array<{ f: Injection; why: string }> {
    const out: Array<{ f: Injection; why: string }> = [];
    for (const f of this.injections) {
      if (this.landed.has(f)) continue;
      const layers = launchedLayers(f.kernel);
      const where = f.layers ? `layer${f.layers[0] === f.layers[1] ? ` ${f.layers[0]}` : `s ${f.layers[0]}..${f.layers[1]}`}` : 'any layer';
      let why: string;
      if (f.layers && f.layers[0] > run.nLayer) why = `layer ${f.layers[0]} is outside the model (layers 0..${run.nLayer - 1}, output head ${run.nLayer})`;
      else if (!layers.some((il) => !f.layers || (il >= f.layers[0] && il <= f.layers[1]))) {
        why = layers.length
          ? `${f.kernel} is not launched in ${where} of this run (it runs in layers ${[...new Set(layers)].join(',')}; this run has layers 0..${run.lastLayer} and the output head ${run.nLayer})`
          : `${f.kernel} is not launched by this run (layers 0..${run.lastLayer} and the output head ${run.nLayer})`;
      } else if (f.fault === 'nan') why = `element ${f.arg} is beyond every output of ${f.kernel} in this run (at most ${this.largestOutput.get(f) ?? 0} values)`;
      else if (f.fault === 'stale-buffer') why = `${f.kernel} never runs again at the same place at a later position in this run, so nothing it reads is stale`;
      else why = `it plants nothing in this run`;
      out.push({ f, why });
    }
    return out;
  }
}
