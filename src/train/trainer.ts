/**
 * Training: truncated backpropagation through time, Adam, gradient-norm clipping and early
 * stopping on the validation loss, on the CPU in TypeScript. Reproducible: the seed fixes the
 * initial weights and the order of sequences.
 *
 * Each update sees a batch of sequences over one window of `window` steps; the recurrent state
 * carries across windows (forward), the gradient does not (the truncation).
 */
import { z } from 'zod';
import type { CellKind, ModelFile } from '../core/model.js';
import { createRng } from '../core/prng.js';
import { randomModelFile } from '../core/random-model.js';
import { formatZodIssues } from '../core/validation.js';
import { UsageError } from '../core/errors.js';
import type { PipelineDefinition } from '../pipeline/define.js';
import { featureStats, type Dataset, type Sequence } from './dataset.js';
import { TrainableNetwork } from './network.js';

export const trainOptionsSchema = z
  .object({
    epochs: z.int().positive().default(30),
    seed: z.int().nonnegative().default(1),
    /** Sequences per update. */
    batchSize: z.int().positive().default(16),
    /** Truncation length of BPTT, in steps. */
    window: z.int().positive().default(16),
    learningRate: z.number().positive().default(0.005),
    /** Clip the global gradient norm to this. */
    clipNorm: z.number().positive().default(1),
    /** Halve the learning rate after this many epochs without a better validation loss. */
    decayPatience: z.int().positive().default(2),
    /** Stop after this many epochs without a better validation loss. */
    patience: z.int().positive().default(6),
    /** Override the pipeline's architecture. */
    cell: z.enum(['rnn', 'lstm', 'gru']).optional(),
    hiddenSize: z.int().positive().optional(),
    layers: z.int().positive().optional(),
  })
  .strict();
export type TrainOptions = z.input<typeof trainOptionsSchema>;

export interface EpochReport {
  readonly epoch: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly valLoss: number;
  readonly valAccuracy: number;
  /** Mean global gradient norm before clipping. */
  readonly gradNorm: number;
  readonly learningRate: number;
  readonly seconds: number;
}

export interface TrainResult {
  readonly model: ModelFile;
  readonly history: readonly EpochReport[];
  readonly bestEpoch: number;
  readonly seconds: number;
}

export interface TrainCallbacks {
  /** Progress within an epoch, 0..1. */
  onProgress?(epoch: number, fraction: number): void;
  onEpoch?(report: EpochReport): void;
}

interface Prepared {
  readonly input: Float64Array;
  readonly labels: Int32Array;
  readonly length: number;
}

function normalizeSequences(seqs: readonly Sequence[], mean: number[], std: number[]): Prepared[] {
  const I = mean.length;
  return seqs.map((s) => {
    const input = new Float64Array(s.features.length);
    for (let t = 0; t < s.length; t++) for (let i = 0; i < I; i++) input[t * I + i] = (s.features[t * I + i]! - mean[i]!) / std[i]!;
    return { input, labels: s.labels, length: s.length };
  });
}

/** Adam (Kingma & Ba) on one flat parameter vector. */
class Adam {
  private readonly m: Float64Array;
  private readonly v: Float64Array;
  private t = 0;
  constructor(
    size: number,
    public lr: number,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    private readonly eps = 1e-8,
  ) {
    this.m = new Float64Array(size);
    this.v = new Float64Array(size);
  }

  step(theta: Float64Array, grad: Float64Array): void {
    this.t++;
    const { m, v, beta1, beta2, eps } = this;
    const a = (this.lr * Math.sqrt(1 - beta2 ** this.t)) / (1 - beta1 ** this.t);
    for (let i = 0; i < theta.length; i++) {
      const g = grad[i]!;
      m[i] = beta1 * m[i]! + (1 - beta1) * g;
      v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
      theta[i]! -= (a * m[i]!) / (Math.sqrt(v[i]!) + eps);
    }
  }
}

/** Scales `grad` so its L2 norm is at most `max`; returns the norm before clipping. */
export function clipGradient(grad: Float64Array, max: number): number {
  let n2 = 0;
  for (let i = 0; i < grad.length; i++) n2 += grad[i]! * grad[i]!;
  const norm = Math.sqrt(n2);
  if (norm > max) {
    const s = max / norm;
    for (let i = 0; i < grad.length; i++) grad[i]! *= s;
  }
  return norm;
}

export function evaluate(net: TrainableNetwork, data: readonly Prepared[]): { loss: number; accuracy: number } {
  let loss = 0;
  let correct = 0;
  let count = 0;
  for (const s of data) {
    const r = net.window(s.input, s.labels, 0, s.length, net.zeroState(), { backward: false });
    loss += r.loss;
    correct += r.correct;
    count += r.count;
  }
  return { loss: loss / Math.max(1, count), accuracy: correct / Math.max(1, count) };
}

/** The initial model file: the pipeline's architecture (or the overrides), seeded weights. */
export function initialModel(pipeline: PipelineDefinition, data: Dataset, opts: z.output<typeof trainOptionsSchema>): ModelFile {
  const base = pipeline.randomModel;
  const cell: CellKind = opts.cell ?? base.layers[0]!.cell;
  const hiddenSize = opts.hiddenSize ?? base.layers[0]!.hiddenSize;
  const count = opts.layers ?? base.layers.length;
  const doc = randomModelFile({
    ...base,
    features: pipeline.featureNames,
    layers: Array.from({ length: count }, () => ({ cell, hiddenSize })),
    head: { kind: 'softmax', labels: [...data.classes] },
    seed: opts.seed,
  });
  const stats = featureStats(data);
  if (cell === 'lstm') {
    // Forget-gate bias 1 (Jozefowicz et al. 2015): the cell starts out remembering, which is
    // what lets gradients reach far back early in training. The forget gate is block 1 of
    // PyTorch's i, f, g, o.
    for (const layer of doc.layers) for (let j = 0; j < hiddenSize; j++) layer.biasIh[hiddenSize + j] = 1;
  }
  return { ...doc, normalization: stats };
}

export function train(pipeline: PipelineDefinition, trainData: Dataset, valData: Dataset, options: TrainOptions, callbacks: TrainCallbacks = {}): TrainResult {
  const parsed = trainOptionsSchema.safeParse(options);
  if (!parsed.success) throw new UsageError(`train options: ${formatZodIssues(parsed.error).join('; ')}`);
  const opts = parsed.data;
  const started = performance.now();
  const init = initialModel(pipeline, trainData, opts);
  const net = TrainableNetwork.fromModelFile(init);
  const { mean, std } = init.normalization;
  const trainSet = normalizeSequences(trainData.sequences, mean, std);
  const valSet = normalizeSequences(valData.sequences, mean, std);
  const rng = createRng(opts.seed ^ 0x5eed);
  const adam = new Adam(net.theta.length, opts.learningRate);
  const history: EpochReport[] = [];
  let best = { loss: Infinity, epoch: 0, theta: net.theta.slice() };
  const order = trainSet.map((_, i) => i);
  let sinceDecay = 0;

  for (let epoch = 1; epoch <= opts.epochs; epoch++) {
    const epochStart = performance.now();
    // Fisher-Yates with the seeded generator: the same seed, the same order.
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    let loss = 0;
    let correct = 0;
    let count = 0;
    let normSum = 0;
    let updates = 0;
    for (let b = 0; b < order.length; b += opts.batchSize) {
      const batch = order.slice(b, b + opts.batchSize).map((i) => trainSet[i]!);
      const states = batch.map(() => net.zeroState());
      const longest = Math.max(...batch.map((s) => s.length));
      for (let w = 0; w < longest; w += opts.window) {
        net.grad.fill(0);
        let windowCount = 0;
        batch.forEach((s, k) => {
          if (s.length <= w) return;
          const r = net.window(s.input, s.labels, w, Math.min(w + opts.window, s.length), states[k]!, { backward: true });
          loss += r.loss;
          correct += r.correct;
          count += r.count;
          windowCount += r.count;
        });
        if (windowCount === 0) continue;
        for (let i = 0; i < net.grad.length; i++) net.grad[i]! /= windowCount;
        normSum += clipGradient(net.grad, opts.clipNorm);
        updates++;
        adam.step(net.theta, net.grad);
      }
      callbacks.onProgress?.(epoch, Math.min(1, (b + opts.batchSize) / order.length));
    }
    const val = evaluate(net, valSet);
    const report: EpochReport = {
      epoch,
      trainLoss: loss / Math.max(1, count),
      trainAccuracy: correct / Math.max(1, count),
      valLoss: val.loss,
      valAccuracy: val.accuracy,
      gradNorm: normSum / Math.max(1, updates),
      learningRate: adam.lr,
      seconds: (performance.now() - epochStart) / 1000,
    };
    history.push(report);
    callbacks.onEpoch?.(report);
    if (val.loss < best.loss) {
      best = { loss: val.loss, epoch, theta: net.theta.slice() };
      sinceDecay = 0;
    } else if (epoch - best.epoch >= opts.patience) {
      break;
    } else if (++sinceDecay >= opts.decayPatience) {
      // Reduce on plateau: the fine structure of the task needs smaller steps late in training.
      adam.lr /= 2;
      sinceDecay = 0;
    }
  }
  net.theta.set(best.theta);
  const seconds = (performance.now() - started) / 1000;
  const model = net.toModelFile(init);
  return {
    model: {
      ...model,
      description: `${pipeline.description}; trained by rnnstream train (truncated BPTT, Adam)`,
      training: {
        kind: 'bptt',
        seed: opts.seed,
        epochs: history.length,
        bestEpoch: best.epoch,
        window: opts.window,
        batchSize: opts.batchSize,
        learningRate: opts.learningRate,
        clipNorm: opts.clipNorm,
        trainSequences: trainData.sequences.length,
        trainEvents: trainData.events,
        validationLoss: best.loss,
        validationAccuracy: history[best.epoch - 1]?.valAccuracy,
        seconds,
      },
    },
    history,
    bestEpoch: best.epoch,
    seconds,
  };
}

/**
 * |dL/dh_{T-k}| of the top layer for k = 0..T-1, where L is the loss at the last of T steps,
 * averaged over sequences: how far back a gradient reaches. A vanilla RNN's norm decays
 * geometrically with k; LSTM and GRU keep it up. That is the vanishing-gradient problem.
 */
export function hiddenGradientByDistance(model: ModelFile, data: Dataset, steps: number, maxSequences = 64): number[] {
  const net = TrainableNetwork.fromModelFile(model);
  const { mean, std } = model.normalization;
  const seqs = normalizeSequences(
    data.sequences.filter((s) => s.length >= steps && s.labels[steps - 1]! >= 0),
    mean,
    std,
  ).slice(0, maxSequences);
  const sums = new Float64Array(steps);
  for (const s of seqs) {
    net.grad.fill(0);
    net.window(s.input, s.labels, 0, steps, net.zeroState(), {
      backward: true,
      lossAt: steps - 1,
      onHiddenGradient: (t, norm) => {
        sums[steps - 1 - t]! += norm;
      },
    });
  }
  return Array.from(sums, (v) => v / Math.max(1, seqs.length));
}
