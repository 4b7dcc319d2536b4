// One captured intermediate: the unit that the reference and device taps emit, the dumps store,
// and the diff compares. `layer` follows ds4's dump convention: 0..n_layer-1 for layer stages,
// 0 for the embedding, n_layer for the output head (ds4 dumps result_* with layer id 43).
export interface StageRecord {
  stage: string;
  layer: number;
  pos: number;
  token: number;
  dtype: 'f32' | 'i32';
  shape: number[];
  values: Float32Array | Int32Array;
}

/** A capture tap: every stage of every layer and position passes through one. */
export type Tap = (rec: StageRecord) => void;
