/**
 * A trainable float64 copy of a model: all parameters in one flat vector (so the optimizer and
 * gradient clipping see one vector), with forward and backward passes (backpropagation through
 * time) over a window of one sequence. Gate order and equations are exactly those of
 * core/cells.ts (PyTorch's), so a trained network exports to a model file with no conversion.
 */
import { GATE_COUNT, type CellKind, type ModelFile } from '../core/model.js';

export interface LayerShape {
  readonly cell: CellKind;
  readonly inputSize: number;
  readonly hiddenSize: number;
}

interface LayerParams extends LayerShape {
  readonly gates: number;
  /** Offsets into theta / grad. */
  readonly wih: number;
  readonly whh: number;
  readonly bih: number;
  readonly bhh: number;
}

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** Per-step, per-layer values the backward pass needs. */
interface LayerCache {
  readonly x: Float64Array;
  readonly hPrev: Float64Array;
  readonly cPrev: Float64Array;
  /** Gate activations (after their nonlinearity), G*H. */
  readonly act: Float64Array;
  /** GRU: W_hn h + b_hn, the part the reset gate scales. */
  readonly ahn: Float64Array;
  readonly c: Float64Array;
  readonly h: Float64Array;
}

export interface WindowResult {
  /** Sum of cross-entropy over the labelled steps scored. */
  loss: number;
  correct: number;
  count: number;
}

export interface RecurrentState {
  readonly h: Float64Array[];
  readonly c: Float64Array[];
}

export class TrainableNetwork {
  readonly theta: Float64Array;
  readonly grad: Float64Array;
  readonly layers: readonly LayerParams[];
  readonly classes: number;
  private readonly headW: number;
  private readonly headB: number;
  private readonly lastH: number;
  private caches: LayerCache[][] = [];
  private probs: Float64Array[] = [];

  constructor(shapes: readonly LayerShape[], classes: number) {
    let n = 0;
    this.layers = shapes.map((s) => {
      const G = GATE_COUNT[s.cell];
      const rows = G * s.hiddenSize;
      const p = { ...s, gates: G, wih: n, whh: n + rows * s.inputSize, bih: n + rows * (s.inputSize + s.hiddenSize), bhh: n + rows * (s.inputSize + s.hiddenSize + 1) };
      n += rows * (s.inputSize + s.hiddenSize + 2);
      return p;
    });
    this.lastH = shapes[shapes.length - 1]!.hiddenSize;
    this.classes = classes;
    this.headW = n;
    this.headB = n + classes * this.lastH;
    n += classes * (this.lastH + 1);
    this.theta = new Float64Array(n);
    this.grad = new Float64Array(n);
  }

  /** The network of a softmax model file, with its weights. */
  static fromModelFile(doc: ModelFile): TrainableNetwork {
    if (doc.head.kind !== 'softmax') throw new Error('training supports softmax heads (classification) only');
    const net = new TrainableNetwork(
      doc.layers.map((l) => ({ cell: l.cell, inputSize: l.inputSize, hiddenSize: l.hiddenSize })),
      doc.head.labels.length,
    );
    const put = (offset: number, rows: readonly (readonly number[])[] | readonly number[]): void => {
      const flat = (rows as unknown[]).flat() as number[];
      net.theta.set(flat, offset);
    };
    doc.layers.forEach((l, k) => {
      const p = net.layers[k]!;
      put(p.wih, l.weightIh);
      put(p.whh, l.weightHh);
      put(p.bih, l.biasIh);
      put(p.bhh, l.biasHh);
    });
    put(net.headW, doc.head.weight);
    put(net.headB, doc.head.bias);
    return net;
  }

  /** Writes the current weights into a copy of `doc` (same architecture). */
  toModelFile(doc: ModelFile): ModelFile {
    const rows = (offset: number, r: number, c: number): number[][] =>
      Array.from({ length: r }, (_, i) => Array.from(this.theta.subarray(offset + i * c, offset + (i + 1) * c)));
    const vec = (offset: number, n: number): number[] => Array.from(this.theta.subarray(offset, offset + n));
    const layers = this.layers.map((p) => {
      const R = p.gates * p.hiddenSize;
      return {
        cell: p.cell,
        inputSize: p.inputSize,
        hiddenSize: p.hiddenSize,
        weightIh: rows(p.wih, R, p.inputSize),
        weightHh: rows(p.whh, R, p.hiddenSize),
        biasIh: vec(p.bih, R),
        biasHh: vec(p.bhh, R),
      };
    });
    if (doc.head.kind !== 'softmax') throw new Error('training supports softmax heads only');
    return {
      ...doc,
      layers,
      head: { ...doc.head, weight: rows(this.headW, this.classes, this.lastH), bias: vec(this.headB, this.classes) },
    };
  }

  zeroState(): RecurrentState {
    return { h: this.layers.map((l) => new Float64Array(l.hiddenSize)), c: this.layers.map((l) => new Float64Array(l.hiddenSize)) };
  }

  private ensureCaches(T: number): void {
    while (this.caches.length < T) {
      this.caches.push(
        this.layers.map((l) => {
          const H = l.hiddenSize;
          return {
            x: new Float64Array(l.inputSize),
            hPrev: new Float64Array(H),
            cPrev: new Float64Array(H),
            act: new Float64Array(l.gates * H),
            ahn: new Float64Array(H),
            c: new Float64Array(H),
            h: new Float64Array(H),
          };
        }),
      );
      this.probs.push(new Float64Array(this.classes));
    }
  }

  private forwardLayer(p: LayerParams, cache: LayerCache): void {
    const { theta } = this;
    const H = p.hiddenSize;
    const I = p.inputSize;
    const R = p.gates * H;
    const { x, hPrev, cPrev, act, ahn, c, h } = cache;
    for (let r = 0; r < R; r++) {
      let ax = theta[p.bih + r]!;
      const wi = p.wih + r * I;
      for (let j = 0; j < I; j++) ax += theta[wi + j]! * x[j]!;
      let ah = theta[p.bhh + r]!;
      const wh = p.whh + r * H;
      for (let j = 0; j < H; j++) ah += theta[wh + j]! * hPrev[j]!;
      if (p.cell === 'gru' && r >= 2 * H) {
        // n gate: keep the hidden part apart for the reset gate (applied below).
        ahn[r - 2 * H] = ah;
        act[r] = ax;
      } else {
        act[r] = ax + ah;
      }
    }
    if (p.cell === 'lstm') {
      for (let j = 0; j < H; j++) {
        const i = (act[j] = sigmoid(act[j]!));
        const f = (act[H + j] = sigmoid(act[H + j]!));
        const g = (act[2 * H + j] = Math.tanh(act[2 * H + j]!));
        const o = (act[3 * H + j] = sigmoid(act[3 * H + j]!));
        c[j] = f * cPrev[j]! + i * g;
        h[j] = o * Math.tanh(c[j]!);
      }
    } else if (p.cell === 'gru') {
      for (let j = 0; j < H; j++) {
        const r = (act[j] = sigmoid(act[j]!));
        const z = (act[H + j] = sigmoid(act[H + j]!));
        const n = (act[2 * H + j] = Math.tanh(act[2 * H + j]! + r * ahn[j]!));
        h[j] = (1 - z) * n + z * hPrev[j]!;
      }
    } else {
      for (let j = 0; j < H; j++) h[j] = act[j] = Math.tanh(act[j]!);
    }
  }

  /**
   * Runs steps [t0, t1) of `seq` forward from `state` (which is advanced to step t1), scores the
   * labelled steps, and when `backward` is set accumulates the gradient of their summed
   * cross-entropy (times `scale`) into `grad`, truncated at t0.
   *
   * `lossAt` restricts scoring to one step (used to measure how gradients decay with distance);
   * `onHiddenGradient(t, norm)` then reports |dL/dh_t| of the top layer for every step.
   */
  window(
    input: Float64Array,
    labels: Int32Array,
    t0: number,
    t1: number,
    state: RecurrentState,
    options: { backward: boolean; scale?: number; lossAt?: number; onHiddenGradient?: (t: number, norm: number) => void },
  ): WindowResult {
    const T = t1 - t0;
    this.ensureCaches(T);
    const L = this.layers.length;
    const K = this.classes;
    const HL = this.lastH;
    const { theta } = this;
    const result: WindowResult = { loss: 0, correct: 0, count: 0 };
    const I0 = this.layers[0]!.inputSize;
    for (let s = 0; s < T; s++) {
      const t = t0 + s;
      for (let k = 0; k < L; k++) {
        const cache = this.caches[s]![k]!;
        if (k === 0) for (let i = 0; i < I0; i++) cache.x[i] = input[t * I0 + i]!;
        else cache.x.set(this.caches[s]![k - 1]!.h);
        cache.hPrev.set(state.h[k]!);
        cache.cPrev.set(state.c[k]!);
        this.forwardLayer(this.layers[k]!, cache);
        state.h[k]!.set(cache.h);
        if (this.layers[k]!.cell === 'lstm') state.c[k]!.set(cache.c);
      }
      // Head: softmax over W h + b.
      const top = this.caches[s]![L - 1]!.h;
      const probs = this.probs[s]!;
      let max = -Infinity;
      for (let q = 0; q < K; q++) {
        let v = theta[this.headB + q]!;
        for (let j = 0; j < HL; j++) v += theta[this.headW + q * HL + j]! * top[j]!;
        probs[q] = v;
        if (v > max) max = v;
      }
      let sum = 0;
      for (let q = 0; q < K; q++) sum += probs[q] = Math.exp(probs[q]! - max);
      let best = 0;
      for (let q = 0; q < K; q++) {
        probs[q]! /= sum;
        if (probs[q]! > probs[best]!) best = q;
      }
      const y = labels[t]!;
      if (y >= 0 && (options.lossAt === undefined || options.lossAt === t)) {
        result.loss -= Math.log(Math.max(probs[y]!, 1e-300));
        result.correct += best === y ? 1 : 0;
        result.count++;
      }
    }
    if (options.backward) this.backward(labels, t0, T, options.scale ?? 1, options.lossAt, options.onHiddenGradient);
    return result;
  }

  private backward(labels: Int32Array, t0: number, T: number, scale: number, lossAt: number | undefined, onHiddenGradient?: (t: number, norm: number) => void): void {
    const L = this.layers.length;
    const K = this.classes;
    const HL = this.lastH;
    const { theta, grad } = this;
    const dhNext = this.layers.map((l) => new Float64Array(l.hiddenSize));
    const dcNext = this.layers.map((l) => new Float64Array(l.hiddenSize));
    const dlogits = new Float64Array(K);
    for (let s = T - 1; s >= 0; s--) {
      const t = t0 + s;
      const y = labels[t]!;
      // dh of the top layer: from the head at this step, plus from the step after (dhNext).
      let dh = dhNext[L - 1]!;
      if (y >= 0 && (lossAt === undefined || lossAt === t)) {
        const probs = this.probs[s]!;
        const top = this.caches[s]![L - 1]!.h;
        for (let q = 0; q < K; q++) dlogits[q] = (probs[q]! - (q === y ? 1 : 0)) * scale;
        for (let q = 0; q < K; q++) {
          const d = dlogits[q]!;
          grad[this.headB + q]! += d;
          for (let j = 0; j < HL; j++) {
            grad[this.headW + q * HL + j]! += d * top[j]!;
            dh[j]! += theta[this.headW + q * HL + j]! * d;
          }
        }
      }
      if (onHiddenGradient) {
        let n2 = 0;
        for (let j = 0; j < HL; j++) n2 += dh[j]! ** 2;
        onHiddenGradient(t, Math.sqrt(n2 / Math.max(scale * scale, 1e-300)));
      }
      for (let k = L - 1; k >= 0; k--) {
        const p = this.layers[k]!;
        const cache = this.caches[s]![k]!;
        dh = dhNext[k]!;
        const dx = this.backwardLayer(p, cache, dh, dcNext[k]!);
        // dx flows into the layer below at the same step.
        if (k > 0) {
          const below = dhNext[k - 1]!;
          for (let j = 0; j < dx.length; j++) below[j]! += dx[j]!;
        }
      }
    }
  }

  /**
   * Backward through one layer at one step. On entry dh/dc hold dL/dh_t and dL/dc_t; on exit they
   * hold dL/dh_{t-1} and dL/dc_{t-1} (the recurrent path). Returns dL/dx_t.
   */
  private backwardLayer(p: LayerParams, cache: LayerCache, dh: Float64Array, dc: Float64Array): Float64Array {
    const { theta, grad } = this;
    const H = p.hiddenSize;
    const I = p.inputSize;
    const R = p.gates * H;
    const { x, hPrev, cPrev, act, ahn, c } = cache;
    const dax = new Float64Array(R);
    const dah = new Float64Array(R);
    const dhPrev = new Float64Array(H);
    if (p.cell === 'lstm') {
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
    } else if (p.cell === 'gru') {
      for (let j = 0; j < H; j++) {
        const r = act[j]!;
        const z = act[H + j]!;
        const n = act[2 * H + j]!;
        const dn = dh[j]! * (1 - z);
        const dz = dh[j]! * (hPrev[j]! - n);
        dhPrev[j] = dh[j]! * z;
        const dan = dn * (1 - n * n);
        const dr = dan * ahn[j]!;
        dax[j] = dah[j] = dr * r * (1 - r);
        dax[H + j] = dah[H + j] = dz * z * (1 - z);
        dax[2 * H + j] = dan;
        dah[2 * H + j] = dan * r;
      }
    } else {
      for (let j = 0; j < H; j++) dax[j] = dah[j] = dh[j]! * (1 - act[j]! * act[j]!);
    }
    const dx = new Float64Array(I);
    for (let r = 0; r < R; r++) {
      const gx = dax[r]!;
      const gh = dah[r]!;
      grad[p.bih + r]! += gx;
      grad[p.bhh + r]! += gh;
      const wi = p.wih + r * I;
      for (let j = 0; j < I; j++) {
        grad[wi + j]! += gx * x[j]!;
        dx[j]! += theta[wi + j]! * gx;
      }
      const wh = p.whh + r * H;
      for (let j = 0; j < H; j++) {
        grad[wh + j]! += gh * hPrev[j]!;
        dhPrev[j]! += theta[wh + j]! * gh;
      }
    }
    dh.set(dhPrev);
    return dx;
  }
}
