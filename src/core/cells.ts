/**
 * Float64 reference cells: the ground truth every backend is tested against.
 *
 * Each cell is a pure step function `(weights, x, state) -> new state` for ONE key; the loop over
 * time, keys and batches lives elsewhere (backends, operators). Equations and gate order are
 * PyTorch's (see model.ts), with W_* rows taken from the matching gate block:
 *
 *   rnn:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
 *   lstm: i, f, g, o = sigma, sigma, tanh, sigma of (W_ih x + b_ih + W_hh h + b_hh) blocks
 *         c' = f * c + i * g;  h' = o * tanh(c')
 *   gru:  r = sigma(W_ir x + b_ir + W_hr h + b_hr);  z = sigma(W_iz x + b_iz + W_hz h + b_hz)
 *         n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h
 *
 * The GRU's reset gate multiplies the *whole* hidden contribution including its bias, as in
 * PyTorch and cuDNN (ONNX `linear_before_reset = 1`, Keras `reset_after = True`).
 */
import type { LayerWeights, RnnModel } from './model.js';

export const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** y[r] = b[r] + sum_j W[r, j] x[j] for a row-major [rows, cols] W. */
function affine(w: Float64Array, b: Float64Array, x: ArrayLike<number>, rows: number, cols: number, out: Float64Array): void {
  for (let r = 0; r < rows; r++) {
    let s = b[r]!;
    const base = r * cols;
    for (let j = 0; j < cols; j++) s += w[base + j]! * x[j]!;
    out[r] = s;
  }
}

export interface LayerState {
  readonly h: Float64Array;
  /** LSTM only. */
  readonly c?: Float64Array;
}

/** One step of one layer for one key. Returns fresh arrays; inputs are not modified. */
export function stepLayer(layer: LayerWeights, x: ArrayLike<number>, state: LayerState): LayerState {
  const H = layer.hiddenSize;
  const rows = layer.gates * H;
  const gx = new Float64Array(rows);
  const gh = new Float64Array(rows);
  affine(layer.weightIh, layer.biasIh, x, rows, layer.inputSize, gx);
  affine(layer.weightHh, layer.biasHh, state.h, rows, H, gh);
  const h = new Float64Array(H);
  switch (layer.cell) {
    case 'rnn':
      for (let j = 0; j < H; j++) h[j] = Math.tanh(gx[j]! + gh[j]!);
      return { h };
    case 'lstm': {
      const c = new Float64Array(H);
      const cPrev = state.c!;
      for (let j = 0; j < H; j++) {
        const i = sigmoid(gx[j]! + gh[j]!);
        const f = sigmoid(gx[H + j]! + gh[H + j]!);
        const g = Math.tanh(gx[2 * H + j]! + gh[2 * H + j]!);
        const o = sigmoid(gx[3 * H + j]! + gh[3 * H + j]!);
        c[j] = f * cPrev[j]! + i * g;
        h[j] = o * Math.tanh(c[j]!);
      }
      return { h, c };
    }
    case 'gru':
      for (let j = 0; j < H; j++) {
        const r = sigmoid(gx[j]! + gh[j]!);
        const z = sigmoid(gx[H + j]! + gh[H + j]!);
        const n = Math.tanh(gx[2 * H + j]! + r * gh[2 * H + j]!);
        h[j] = (1 - z) * n + z * state.h[j]!;
      }
      return { h };
  }
}

/** (x - mean) / std per feature. */
export function normalize(model: RnnModel, features: ArrayLike<number>, out: Float64Array | Float32Array): void {
  const { mean, std } = model.normalization;
  for (let i = 0; i < model.inputSize; i++) out[i] = (features[i]! - mean[i]!) / std[i]!;
}

/** The dense head on the last layer's hidden vector: softmax probabilities or linear values. */
export function applyHead(model: RnnModel, h: ArrayLike<number>): Float64Array {
  const { head, outputSize } = model;
  const H = model.layers[model.layers.length - 1]!.hiddenSize;
  const out = new Float64Array(outputSize);
  affine(head.weight, head.bias, h, outputSize, H, out);
  if (head.kind === 'softmax') softmaxInPlace(out);
  return out;
}

export function softmaxInPlace(v: Float64Array | Float32Array): void {
  let max = -Infinity;
  for (let k = 0; k < v.length; k++) if (v[k]! > max) max = v[k]!;
  let sum = 0;
  for (let k = 0; k < v.length; k++) {
    const e = Math.exp(v[k]! - max);
    v[k] = e;
    sum += e;
  }
  for (let k = 0; k < v.length; k++) v[k] = v[k]! / sum;
}

/**
 * Steps the whole stack for one key on already-normalized input. `state` is the key's state
 * vector in the model's segment layout (model.stateSegments) and is updated in place.
 * Returns the head's output.
 */
export function stepNetwork(model: RnnModel, input: ArrayLike<number>, state: Float64Array | Float32Array): Float64Array {
  let x: ArrayLike<number> = input;
  let offset = 0;
  for (const layer of model.layers) {
    const H = layer.hiddenSize;
    const h = Float64Array.from(state.subarray(offset, offset + H));
    const c = layer.cell === 'lstm' ? Float64Array.from(state.subarray(offset + H, offset + 2 * H)) : undefined;
    const next = stepLayer(layer, x, c ? { h, c } : { h });
    state.set(next.h, offset);
    offset += H;
    if (next.c) {
      state.set(next.c, offset);
      offset += H;
    }
    x = next.h;
  }
  return applyHead(model, x);
}
