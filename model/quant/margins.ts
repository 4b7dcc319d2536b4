// Rounding margins: where each element of a quantized vector sat relative to its rounding decision. The
// reference knows, for every value it rounds to a grid (FP8 KV rows, FP4 indexer activations, the f16
// cache store), how far the value before rounding was from the boundary between the two nearest codes.
// A kernel whose arithmetic differs from the reference's by δ may legitimately land on the other code
// only where that distance is below δ: a near tie. The judge uses these margins to tell a near-tie code
// flip (reported) from a wrong code (a failure).

/** `tie[i]`: distance, in output units, from element i's value before rounding to the nearest decision
 *  boundary; `step[i]`: the gap between the two codes that boundary separates. Infinity / 0 where
 *  nothing was rounded. */
export interface RoundingMargins {
  tie: Float64Array;
  step: Float64Array;
}

export function newMargins(n: number): RoundingMargins {
  return { tie: new Float64Array(n).fill(Infinity), step: new Float64Array(n) };
}

/** Keep the nearest decision an element met (it may be rounded more than once: FP8, then the f16 store). */
export function noteTie(m: RoundingMargins, i: number, tie: number, step: number): void {
  if (tie < m.tie[i]) {
    m.tie[i] = tie;
    m.step[i] = step;
  }
}
