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
import type { CellKind, LayerWeights, RnnModel } from './model.js';

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

/**
 * The cell's equations, once, for inference (stepLayer) and training (train/network.ts) alike.
 *
 * On entry `gates` holds each gate block's pre-activation W_ih x + b_ih + W_hh h + b_hh, except
 * GRU's n block, which holds only W_in x + b_in: its hidden part W_hn h + b_hn is in `hn`, since
 * the reset gate scales it (see the table above). On exit `gates` holds the activations (the
 * backward pass needs them), and `h` (and LSTM's `c`) the new state.
 */
export function activateCell(cell: CellKind, H: number, gates: Float64Array, hn: ArrayLike<number>, hPrev: ArrayLike<number>, cPrev: ArrayLike<number>, h: Float64Array, c: Float64Array): void {
  switch (cell) {
    case 'rnn':
      for (let j = 0; j < H; j++) h[j] = gates[j] = Math.tanh(gates[j]!);
      return;
    case 'lstm':
      for (let j = 0; j < H; j++) {
        const i = (gates[j] = sigmoid(gates[j]!));
        const f = (gates[H + j] = sigmoid(gates[H + j]!));
        const g = (gates[2 * H + j] = Math.tanh(gates[2 * H + j]!));
        const o = (gates[3 * H + j] = sigmoid(gates[3 * H + j]!));
        c[j] = f * cPrev[j]! + i * g;
        h[j] = o * Math.tanh(c[j]!);
      }
      return;
    case 'gru':
      for (let j = 0; j < H; j++) {
        const r = (gates[j] = sigmoid(gates[j]!));
        const z = (gates[H + j] = sigmoid(gates[H + j]!));
        const n = (gates[2 * H + j] = Math.tanh(gates[2 * H + j]! + r * hn[j]!));
        h[j] = (1 - z) * n + z * hPrev[j]!;
      }
      return;
  }
}

/**
 * The derivative of activateCell, for backpropagation through time. Given the activations it
 * left in `gates`, and dL/dh' in `dh` (and dL/dc' in `dc` for LSTM), writes dL/d(pre-activation)
 * of the input part to `dax` and of the hidden part to `dah` (they differ only in GRU's n block,
 * where the reset gate scales the hidden part), and the recurrent gradients that bypass the
 * weights: dL/dh through GRU's update gate into `dhPrev` (added), dL/dc through LSTM's forget
 * gate into `dc` (replaced).
 */
export function cellGradient(
  cell: CellKind,
  H: number,
  act: ArrayLike<number>,
  hn: ArrayLike<number>,
  hPrev: ArrayLike<number>,
  cPrev: ArrayLike<number>,
  c: ArrayLike<number>,
  dh: ArrayLike<number>,
  dc: Float64Array,
  dax: Float64Array,
  dah: Float64Array,
  dhPrev: Float64Array,
): void {
  switch (cell) {
    case 'rnn':
      for (let j = 0; j < H; j++) dax[j] = dah[j] = dh[j]! * (1 - act[j]! * act[j]!);
      return;
    case 'lstm':
      for (let j = 0; j < H; j++) {
        const i = act[j]!;
        const f = act[H + j]!;
        const g = act[2 * H + j]!;
        const o = act[3 * H + j]!;
        const tc = Math.tanh(c[j]!);
        const dct = dc[j]! + dh[j]! * o * (1 - tc * tc);
        dax[j] = dah[j] = dct * g * i * (1 - i);
        dax[H + j] = dah[H + j] = dct * cPrev[j]! * f * (1 - f);
        dax[2 * H + j] = dah[2 * H + j] = dct * i * (1 - g * g);
        dax[3 * H + j] = dah[3 * H + j] = dh[j]! * tc * o * (1 - o);
        dc[j] = dct * f;
      }
      return;
    case 'gru':
      for (let j = 0; j < H; j++) {
        const r = act[j]!;
        const z = act[H + j]!;
        const n = act[2 * H + j]!;
        const dn = dh[j]! * (1 - z);
        const dz = dh[j]! * (hPrev[j]! - n);
        dhPrev[j]! += dh[j]! * z;
        const dan = dn * (1 - n * n);
        const dr = dan * hn[j]!;
        dax[j] = dah[j] = dr * r * (1 - r);
        dax[H + j] = dah[H + j] = dz * z * (1 - z);
        dax[2 * H + j] = dan;
        dah[2 * H + j] = dan * r;
      }
      return;
  }
}

/** One step of one layer for one key. Returns fresh arrays; inputs are not modified. */
export function stepLayer(layer: LayerWeights, x: ArrayLike<number>, state: LayerState): LayerState {
  const H = layer.hiddenSize;
  const rows = layer.gates * H;
  const gates = new Float64Array(rows);
  const gh = new Float64Array(rows);
  affine(layer.weightIh, layer.biasIh, x, rows, layer.inputSize, gates);
  affine(layer.weightHh, layer.biasHh, state.h, rows, H, gh);
  // GRU's n block keeps its hidden part apart (activateCell applies the reset gate to it).
  const summed = layer.cell === 'gru' ? 2 * H : rows;
  for (let r = 0; r < summed; r++) gates[r]! += gh[r]!;
  const h = new Float64Array(H);
  const c = new Float64Array(layer.cell === 'lstm' ? H : 0);
  activateCell(layer.cell, H, gates, gh.subarray(2 * H), state.h, state.c ?? c, h, c);
  return layer.cell === 'lstm' ? { h, c } : { h };
}

/**
 * The index of the largest of `count` values starting at `from` (the first on a tie): a
 * softmax head's class, a CTC frame's symbol, a training example's guess.
 */
export function argmax(values: ArrayLike<number>, from = 0, count = values.length - from): number {
  let best = 0;
  for (let k = 1; k < count; k++) if (values[from + k]! > values[from + best]!) best = k;
  return best;
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
