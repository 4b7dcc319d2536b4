// Matrix-vector products of the reference, dispatched on the weight's storage type.
// `ds4` precision reproduces ds4.c's CPU arithmetic: a Q8_0 weight first quantizes the activation to
// Q8_0 (quantize_q8_0_activation, then int8 x int8 block dots: dot_q8_0_row), an F16 weight is a
// plain f32 matvec (matvec_f16). `f64` precision is the rounding-noise twin: the same activation
// quantization and the same integer block dots, combined in double; F16/F32 weights in double.
import { GGMLType, rowBytes } from '../model/quant/types.ts';
import { dequantizeRow, dotQ8_0, matvecF16, matvecQ8_0Act, quantizeQ8_0Act } from '../model/quant/index.ts';
import { parallelRows } from './rowpool.ts';
import type { Precision, Vec, Weight } from './types.ts';

export function matvec(w: Weight, x: Vec, p: Precision, out?: Vec): Vec {
  if (x.length !== w.cols) throw new Error(`matvec ${w.name}: input has ${x.length} values, weight rows have ${w.cols}`);
  return p === 'f64' ? matvecF64(w, x, out) : matvecDs4(w, x, out);
}

function matvecDs4(w: Weight, x: Vec, out?: Vec): Float32Array {
  const o = out instanceof Float32Array && out.length === w.rows ? out : new Float32Array(w.rows);
  const xf = x instanceof Float32Array ? x : Float32Array.from(x);
  switch (w.type) {
    case GGMLType.Q8_0: {
      // the activation is quantized once, then the int8 row dots are split by rows (ds4 matvec_q8_0)
      const act = quantizeQ8_0Act(xf, 0, w.cols);
      parallelRows({ kind: 'q8_0', w: w.data, rows: w.rows, cols: w.cols, act }, o, (r0, r1) => matvecQ8_0Act(w.data, w.rows, w.cols, act, o, r0, r1));
      return o;
    }
    case GGMLType.F16:
      parallelRows({ kind: 'f16', w: w.data, rows: w.rows, cols: w.cols, x: xf }, o, (r0, r1) => matvecF16(w.data, w.rows, w.cols, xf, o, r0, r1));
      return o;
    case GGMLType.F32: {
      const W = f32View(w);
      for (let r = 0; r < w.rows; r++) {
        let acc = 0;
        const base = r * w.cols;
        for (let c = 0; c < w.cols; c++) acc = Math.fround(acc + Math.fround(W[base + c] * xf[c]));
        o[r] = acc;
      }
      return o;
    }
    default:
      throw new Error(`matvec ${w.name}: no ds4 matvec for weight type ${w.type} (routed experts use the Q8_K dots)`);
  }
}

function matvecF64(w: Weight, x: Vec, out?: Vec): Float64Array {
  const o = out instanceof Float64Array && out.length === w.rows ? out : new Float64Array(w.rows);
  const rb = rowBytes(w.type, w.cols);
  if (w.type === GGMLType.Q8_0) {
    const act = quantizeQ8_0Act(x, 0, w.cols);
    for (let r = 0; r < w.rows; r++) o[r] = dotQ8_0(w.data, r * rb, act, true);
    return o;
  }
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

/** Rows [row0, row0 + rows) of a weight, sharing its bytes (S11's per-group output projection). */
export function rowSlice(w: Weight, row0: number, rows: number): Weight {
  const rb = rowBytes(w.type, w.cols);
  return { name: `${w.name}[${row0}:${row0 + rows}]`, type: w.type, cols: w.cols, rows, data: w.data.subarray(row0 * rb, (row0 + rows) * rb) };
}
