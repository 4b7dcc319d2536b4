// Matrix-vector products of the reference, dispatched on the weight's storage type.
// `ds4` precision reproduces ds4.c's CPU arithmetic: a Q8_0 weight first quantizes the activation to
// Q8_0 (quantize_q8_0_activation, then int8 x int8 block dots: dot_q8_0_row), an F16 weight is a
// plain f32 matvec (matvec_f16), the routed experts' IQ2_XXS / Q2_K weights quantize it to Q8_K
// (matvec_iq2_xxs, the Q2_K down projection). `f64` precision is the rounding-noise twin: the same
// activation quantization and the same integer block dots, combined in double; F16/F32 weights in double.
// `ascend` multiplies as `ds4` does (the Ascend approximations are in exp/rsqrt/sqrt/log, not in products).
//
// While a stage is evaluated at several precisions and positions (reference/facts.ts, the runner's
// prefill), its products are shared (sharedProducts): the precisions of one input quantize it to the same
// codes, so one pass over a weight yields the ds4 result and the f64 twin's; and the positions of a
// prompt are multiplied by a weight in one pass over it (precompute), as ds4's prefill streams each
// layer's weights once. Every output element is the same function of the same inputs either way.
import { GGMLType, rowBytes } from '../model/quant/types.ts';
import { dequantizeRow, quantizeQ8_0Act, quantizeQ8_K } from '../model/quant/index.ts';
import { parallelRows, type RowInput, type RowKernel, type RowOutputs } from './rowpool.ts';
import type { Precision, Vec, Weight } from './types.ts';

const KERNEL: Partial<Record<GGMLType, RowKernel>> = {
  [GGMLType.Q8_0]: 'q8_0',
  [GGMLType.F16]: 'f16',
  [GGMLType.IQ2_XXS]: 'iq2_xxs',
  [GGMLType.Q2_K]: 'q2_k',
};

/** One weight's products with one input, at ds4's f32 combination and/or the f64 twin's. */
interface Product {
  f32?: Float32Array;
  f64?: Float64Array;
}

/** The products of the stage being evaluated, by input (its bytes: a subarray is its own input) and weight. */
class Products {
  private readonly byInput = new Map<ArrayBufferLike, Map<string, Product>>();

  constructor(readonly twins: boolean) {}

  private slot(w: Weight, x: Vec): { at: Map<string, Product>; key: string } {
    let at = this.byInput.get(x.buffer);
    if (!at) this.byInput.set(x.buffer, (at = new Map()));
    return { at, key: `${x.byteOffset}:${x.length}:${w.name}` };
  }

  get(w: Weight, x: Vec): Product | undefined {
    const { at, key } = this.slot(w, x);
    return at.get(key);
  }

  /** Keeps the combinations given, beside those already kept. */
  set(w: Weight, x: Vec, p: Product): void {
    const { at, key } = this.slot(w, x);
    const kept = at.get(key) ?? {};
    at.set(key, { f32: p.f32 ?? kept.f32, f64: p.f64 ?? kept.f64 });
  }
}

let shared: Products | undefined;

/**
 * Runs `fn` with the products it computes kept and shared (see the file comment); `twins`: the f64 twin
 * will evaluate the same inputs, so every product is combined both ways in its one pass. Inside another
 * sharedProducts, that one's products are the ones shared.
 */
export function sharedProducts<T>(twins: boolean, fn: () => T): T {
  if (shared) return fn();
  shared = new Products(twins);
  try {
    return fn();
  } finally {
    shared = undefined;
  }
}

/** y = W·x at precision p (a fresh array the caller may change). */
export function matvec(w: Weight, x: Vec, p: Precision): Vec {
  return matmul(w, [x], p)[0];
}

/** W·x for every input, the weight read once for all of them; each result as matvec gives it. */
export function matmul(w: Weight, xs: Vec[], p: Precision): Vec[] {
  for (const x of xs) if (x.length !== w.cols) throw new Error(`matvec ${w.name}: input has ${x.length} values, weight rows have ${w.cols}`);
  const kind = KERNEL[w.type];
  if (!kind) return xs.map((x) => (p === 'f64' ? matvecF64(w, x) : matvecF32(w, x)));
  const part = p === 'f64' ? 'f64' : 'f32';
  if (!shared) return products(w, kind, xs, p, false)[part]!;
  const kept = shared;
  const missing = xs.filter((x) => !kept.get(w, x)?.[part]);
  if (missing.length) {
    // F16 multiplies the input as given: an f64 input is the twin's own, never the ds4 evaluation's
    const both = kept.twins && (kind !== 'f16' || missing.every((x) => x instanceof Float32Array));
    const out = products(w, kind, missing, p, both);
    missing.forEach((x, i) => kept.set(w, x, { f32: out.f32?.[i], f64: out.f64?.[i] }));
  }
  // a kept product is handed out as a copy: steps change their results in place (RoPE, scaling)
  return xs.map((x) => kept.get(w, x)![part]!.slice());
}

/** The products of a quantized or F16 weight with the inputs at p (and the other combination too when `both`), rows split across threads. */
function products(w: Weight, kind: RowKernel, xs: Vec[], p: Precision, both: boolean): RowOutputs {
  const want = { f32: p !== 'f64' || both, f64: p === 'f64' || both };
  return parallelRows({ kind, w: w.data, src: w.src, rows: w.rows, cols: w.cols, xs: xs.map((x) => rowInput(kind, x, p)) }, want);
}

/** The input as the kernel takes it: quantized (Q8_0 for Q8_0 weights, Q8_K for the experts) or, for F16, in f64. */
function rowInput(kind: RowKernel, x: Vec, p: Precision): RowInput {
  if (kind === 'q8_0') return quantizeQ8_0Act(x, 0, x.length);
  if (kind === 'iq2_xxs' || kind === 'q2_k') return quantizeQ8_K(x);
  // ds4 multiplies f32 values (an f64 input rounded first); the twin its own doubles
  return Float64Array.from(p === 'f64' || x instanceof Float32Array ? x : Float32Array.from(x));
}

/** F32 weights (none of the DS4 matrices the graph multiplies; kept for completeness of the dispatch). */
function matvecF32(w: Weight, x: Vec): Float32Array {
  if (w.type !== GGMLType.F32) throw new Error(`matvec ${w.name}: no ds4 matvec for weight type ${w.type}`);
  const o = new Float32Array(w.rows);
  const W = f32View(w);
  for (let r = 0; r < w.rows; r++) {
    let acc = 0;
    const base = r * w.cols;
    for (let c = 0; c < w.cols; c++) acc = Math.fround(acc + Math.fround(W[base + c] * Math.fround(x[c])));
    o[r] = acc;
  }
  return o;
}

/** Any other type in the twin: dequantized rows, summed in double. */
function matvecF64(w: Weight, x: Vec): Float64Array {
  const o = new Float64Array(w.rows);
  const rb = rowBytes(w.type, w.cols);
  const row = new Float32Array(w.cols);
  for (let r = 0; r < w.rows; r++) {
    dequantizeRow(w.type, w.data.subarray(r * rb, (r + 1) * rb), w.cols, row);
    let acc = 0;
    for (let c = 0; c < w.cols; c++) acc += row[c] * x[c];
    o[r] = acc;
  }
  return o;
}

function f32View(w: Weight): Float32Array {
  if (w.data.byteOffset % 4 === 0) return new Float32Array(w.data.buffer, w.data.byteOffset, w.rows * w.cols);
  return new Float32Array(w.data.slice().buffer, 0, w.rows * w.cols);
}

/**
 * Computes, inside sharedProducts, the products a stage's positions will ask for — each weight's with
 * all its inputs in one pass (matmul) — so the per-position evaluation finds them made. `pairs` is what
 * the stage's step declares it multiplies (reference/steps.ts `products`); a pair it leaves out is
 * simply computed when asked.
 */
export function precompute(pairs: Array<[Weight, Vec]>, p: Precision): void {
  if (!shared) return;
  const byWeight = new Map<string, { w: Weight; xs: Vec[] }>();
  for (const [w, x] of pairs) {
    const g = byWeight.get(w.name) ?? { w, xs: [] };
    if (!g.xs.includes(x)) g.xs.push(x);
    byWeight.set(w.name, g);
  }
  for (const { w, xs } of byWeight.values()) matmul(w, xs, p);
}

/** Rows [row0, row0 + rows) of a weight, sharing its bytes (S11's per-group output projection). */
export function rowSlice(w: Weight, row0: number, rows: number): Weight {
  const rb = rowBytes(w.type, w.cols);
  return {
    name: `${w.name}[${row0}:${row0 + rows}]`, type: w.type, cols: w.cols, rows, data: w.data.subarray(row0 * rb, (row0 + rows) * rb),
    src: w.src && { mapId: w.src.mapId, offset: w.src.offset + row0 * rb },
  };
}
