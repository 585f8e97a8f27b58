/**
 * A trainable float64 copy of a model: all parameters in one flat vector (so the optimizer and
 * gradient clipping see one vector), with forward and backward passes (backpropagation through
 * time) over a window of one sequence. The cells' equations and their derivatives are
 * core/cells.ts's (activateCell, cellGradient), the very functions inference's reference steps
 * with; the gate order is PyTorch's, so a trained network exports to a model file with no
 * conversion.
 */
import { activateCell, argmax, cellGradient } from '../core/cells.js';
import { GATE_COUNT, wordTableRows, type CellKind, type ModelFile } from '../core/model.js';

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


/** Inverted dropout: zeroes each value with probability p and scales the rest by 1 / (1 - p); the mask is kept for the backward pass. */
function dropoutInPlace(v: Float64Array, mask: Float64Array, dropout: WindowOptions['dropout']): void {
  if (!dropout || dropout.p <= 0) {
    mask.fill(1);
    return;
  }
  const keep = 1 / (1 - dropout.p);
  for (let i = 0; i < v.length; i++) {
    mask[i] = dropout.random() < dropout.p ? 0 : keep;
    v[i]! *= mask[i]!;
  }
}

/** Per-step, per-layer values the backward pass needs. */
interface LayerCache {
  readonly x: Float64Array;
  readonly hPrev: Float64Array;
  readonly cPrev: Float64Array;
  /** Gate activations (after their nonlinearity), G*H. */
  readonly act: Float64Array;
  /** Dropout's scale per input float (0 or 1 / (1 - p)); all 1 without dropout. Layer 0 only. */
  readonly mask: Float64Array;
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

/**
 * A sequence of words as the rows of the embedding table each step averages: step t's rows are
 * rows[starts[t] .. starts[t + 1]).
 */
export interface WordSteps {
  readonly starts: Int32Array;
  readonly rows: Int32Array;
}

/** The embedding in front of the first layer: `rows` vectors of `dim` floats, trained with the rest. */
export interface EmbeddingShape {
  readonly rows: number;
  readonly dim: number;
}

/** What changes between training and scoring a window. */
export interface WindowOptions {
  readonly backward: boolean;
  /** Multiplies the gradient (1 / labelled steps of the batch). */
  readonly scale?: number;
  readonly lossAt?: number;
  readonly onHiddenGradient?: (t: number, norm: number) => void;
  /**
   * Inverted dropout on the first layer's input (the word vector, or the features) and on the top
   * layer's output before the head, with this probability; `random` draws the masks. Training only.
   */
  readonly dropout?: { readonly p: number; readonly random: () => number };
  /**
   * Label smoothing (Szegedy et al. 2016): the target puts 1 - e on the label and e / K on every
   * class, so the network is not pushed to certainty on 100 examples per class. Loss and gradient.
   */
  readonly labelSmoothing?: number;
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
  /** Offset of the embedding table in theta (rows x dim, row-major), when the input is words. */
  readonly embedding: (EmbeddingShape & { readonly offset: number }) | undefined;
  private caches: LayerCache[][] = [];
  private probs: Float64Array[] = [];
  /** The top layer's output after dropout, per step (what the head saw). */
  private tops: Float64Array[] = [];
  private topMasks: Float64Array[] = [];

  constructor(shapes: readonly LayerShape[], classes: number, embedding?: EmbeddingShape) {
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
    if (embedding) {
      if (embedding.dim !== shapes[0]!.inputSize) throw new Error(`embedding dim ${embedding.dim} is not the first layer's inputSize ${shapes[0]!.inputSize}`);
      this.embedding = { ...embedding, offset: n };
      n += embedding.rows * embedding.dim;
    }
    this.theta = new Float64Array(n);
    this.grad = new Float64Array(n);
  }

  /** The network of a softmax model file, with its weights (and its word table, for word input). */
  static fromModelFile(doc: ModelFile, table?: Float32Array): TrainableNetwork {
    if (doc.head.kind !== 'softmax') throw new Error('training supports softmax heads (classification) only');
    if (doc.input && !table) throw new Error('a model with word input needs its table');
    const net = new TrainableNetwork(
      doc.layers.map((l) => ({ cell: l.cell, inputSize: l.inputSize, hiddenSize: l.hiddenSize })),
      doc.head.labels.length,
      doc.input ? { rows: wordTableRows(doc.input), dim: doc.input.dim } : undefined,
    );
    if (net.embedding) net.theta.set(table!, net.embedding.offset);
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

  /** The embedding table as float32, as the model file stores it (undefined without word input). */
  embeddingTable(): Float32Array | undefined {
    const e = this.embedding;
    return e ? Float32Array.from(this.theta.subarray(e.offset, e.offset + e.rows * e.dim)) : undefined;
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
            mask: new Float64Array(l.inputSize).fill(1),
            ahn: new Float64Array(H),
            c: new Float64Array(H),
            h: new Float64Array(H),
          };
        }),
      );
      this.probs.push(new Float64Array(this.classes));
      this.tops.push(new Float64Array(this.lastH));
      this.topMasks.push(new Float64Array(this.lastH).fill(1));
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
    activateCell(p.cell, H, act, ahn, hPrev, cPrev, h, c);
  }

  /**
   * Runs steps [t0, t1) of `seq` forward from `state` (which is advanced to step t1), scores the
   * labelled steps, and when `backward` is set accumulates the gradient of their summed
   * cross-entropy (times `scale`) into `grad`, truncated at t0.
   *
   * `lossAt` restricts scoring to one step (used to measure how gradients decay with distance);
   * `onHiddenGradient(t, norm)` then reports |dL/dh_t| of the top layer for every step.
   */
  window(input: Float64Array | WordSteps, labels: Int32Array, t0: number, t1: number, state: RecurrentState, options: WindowOptions): WindowResult {
    const T = t1 - t0;
    this.ensureCaches(T);
    const L = this.layers.length;
    const K = this.classes;
    const HL = this.lastH;
    const { theta } = this;
    const result: WindowResult = { loss: 0, correct: 0, count: 0 };
    const smoothing = options.labelSmoothing ?? 0;
    for (let s = 0; s < T; s++) {
      const t = t0 + s;
      for (let k = 0; k < L; k++) {
        const cache = this.caches[s]![k]!;
        if (k === 0) this.firstInput(input, t, cache, options.dropout);
        else cache.x.set(this.caches[s]![k - 1]!.h);
        cache.hPrev.set(state.h[k]!);
        cache.cPrev.set(state.c[k]!);
        this.forwardLayer(this.layers[k]!, cache);
        state.h[k]!.set(cache.h);
        if (this.layers[k]!.cell === 'lstm') state.c[k]!.set(cache.c);
      }
      // Head: softmax over W h + b, on the top layer's output after dropout.
      const top = this.tops[s]!;
      top.set(this.caches[s]![L - 1]!.h);
      dropoutInPlace(top, this.topMasks[s]!, options.dropout);
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
      for (let q = 0; q < K; q++) probs[q]! /= sum;
      const best = argmax(probs, 0, K);
      const y = labels[t]!;
      if (y >= 0 && (options.lossAt === undefined || options.lossAt === t)) {
        result.loss -= (1 - smoothing) * Math.log(Math.max(probs[y]!, 1e-300));
        if (smoothing > 0) for (let q = 0; q < K; q++) result.loss -= (smoothing / K) * Math.log(Math.max(probs[q]!, 1e-300));
        result.correct += best === y ? 1 : 0;
        result.count++;
      }
    }
    if (options.backward) this.backward(input, labels, t0, T, options);
    return result;
  }

  /** Layer 0's input at step t: the features, or the mean of the word's embedding rows; then dropout. */
  private firstInput(input: Float64Array | WordSteps, t: number, cache: LayerCache, dropout: WindowOptions['dropout']): void {
    const x = cache.x;
    const I = x.length;
    if (input instanceof Float64Array) {
      for (let i = 0; i < I; i++) x[i] = input[t * I + i]!;
    } else {
      const e = this.embedding!;
      const from = input.starts[t]!;
      const to = input.starts[t + 1]!;
      x.fill(0);
      for (let q = from; q < to; q++) {
        const row = e.offset + input.rows[q]! * I;
        for (let i = 0; i < I; i++) x[i]! += this.theta[row + i]!;
      }
      const inv = 1 / Math.max(1, to - from);
      for (let i = 0; i < I; i++) x[i]! *= inv;
    }
    dropoutInPlace(x, cache.mask, dropout);
  }

  /** dL/dx of layer 0 at step t into the rows of the embedding the word averaged. */
  private embeddingGradient(input: WordSteps, t: number, cache: LayerCache, dx: Float64Array): void {
    const e = this.embedding!;
    const from = input.starts[t]!;
    const to = input.starts[t + 1]!;
    const inv = 1 / Math.max(1, to - from);
    const I = dx.length;
    for (let q = from; q < to; q++) {
      const row = e.offset + input.rows[q]! * I;
      for (let i = 0; i < I; i++) this.grad[row + i]! += dx[i]! * cache.mask[i]! * inv;
    }
  }

  private backward(input: Float64Array | WordSteps, labels: Int32Array, t0: number, T: number, options: WindowOptions): void {
    const { lossAt, onHiddenGradient } = options;
    const scale = options.scale ?? 1;
    const smoothing = options.labelSmoothing ?? 0;
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
        const top = this.tops[s]!;
        const topMask = this.topMasks[s]!;
        for (let q = 0; q < K; q++) dlogits[q] = (probs[q]! - (q === y ? 1 - smoothing : 0) - smoothing / K) * scale;
        for (let q = 0; q < K; q++) {
          const d = dlogits[q]!;
          grad[this.headB + q]! += d;
          for (let j = 0; j < HL; j++) {
            grad[this.headW + q * HL + j]! += d * top[j]!;
            dh[j]! += theta[this.headW + q * HL + j]! * d * topMask[j]!;
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
        // dx flows into the layer below at the same step, or into the word's embedding rows.
        if (k > 0) {
          const below = dhNext[k - 1]!;
          for (let j = 0; j < dx.length; j++) below[j]! += dx[j]!;
        } else if (!(input instanceof Float64Array)) {
          this.embeddingGradient(input, t, cache, dx);
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
    cellGradient(p.cell, H, act, ahn, hPrev, cPrev, c, dh, dc, dax, dah, dhPrev);
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
