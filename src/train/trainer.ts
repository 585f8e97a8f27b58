/**
 * Training: truncated backpropagation through time, Adam, gradient-norm clipping and early
 * stopping on the validation loss, on the CPU in TypeScript. Reproducible: the seed fixes the
 * initial weights and the order of sequences.
 *
 * Each update sees a batch of sequences over one window of `window` steps; the recurrent state
 * carries across windows (forward), the gradient does not (the truncation).
 */
import { z } from 'zod';
import { wordTableRows, type CellKind, type ModelFile, type WordInputFile } from '../core/model.js';
import { createRng } from '../core/prng.js';
import { randomModelFile } from '../core/random-model.js';
import { formatZodIssues } from '../core/validation.js';
import { normaliseWord, rowsOfWord } from '../core/words.js';
import { UsageError } from '../core/errors.js';
import type { PipelineDefinition } from '../pipeline/define.js';
import { featureStats, type Dataset, type Sequence } from './dataset.js';
import { TrainableNetwork, type WordSteps } from './network.js';

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
    /** Inverted dropout on the first layer's input and on the top layer's output (0: none). */
    dropout: z.number().min(0).max(0.9).default(0),
    /** Label smoothing of the cross-entropy target (0: none). */
    labelSmoothing: z.number().min(0).max(0.5).default(0),
    /** A pipeline of words: floats per word vector. */
    embeddingDim: z.int().positive().default(64),
    /** A pipeline of words: rows of hashed character n-grams (0: vocabulary only). */
    buckets: z.int().nonnegative().default(20_000),
    /** A pipeline of words: the shortest and longest character n-grams. */
    minN: z.int().positive().default(3),
    maxN: z.int().positive().default(5),
    /** A pipeline of words: a word needs this many uses in the training data to get a row of its own. */
    minCount: z.int().positive().default(1),
    /** A pipeline of words: train the embedding table (false keeps its random initial rows, for comparison). */
    trainEmbedding: z.boolean().default(true),
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
  /** The word table, for a model with word input (writeModelFile puts it beside the JSON). */
  readonly table?: Float32Array;
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
  readonly input: Float64Array | WordSteps;
  readonly labels: Int32Array;
  readonly length: number;
}

/** Sequences of words as the embedding rows each step averages (the same rows inference sums). */
function wordSequences(seqs: readonly Sequence[], input: WordInputFile): Prepared[] {
  const lookup = { index: new Map(input.vocabulary.map((w, i) => [w, i])), buckets: input.buckets, minN: input.minN, maxN: input.maxN };
  return seqs.map((s) => {
    const starts = new Int32Array(s.length + 1);
    const rows: number[] = [];
    s.words!.forEach((word, t) => {
      rows.push(...rowsOfWord(lookup, word));
      starts[t + 1] = rows.length;
    });
    return { input: { starts, rows: Int32Array.from(rows) }, labels: s.labels, length: s.length };
  });
}

/** The first layer's inputs for `seqs`: normalized features, or word rows. */
const prepare = (seqs: readonly Sequence[], model: ModelFile): Prepared[] =>
  model.input ? wordSequences(seqs, model.input) : normalizeSequences(seqs, model.normalization.mean, model.normalization.std);

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
/**
 * A pipeline of words: the vocabulary (the training data's normalised words used at least
 * minCount times, most used first) and a seeded table, N(0, 1) as PyTorch's nn.Embedding.
 */
function initialWordInput(data: Dataset, opts: z.output<typeof trainOptionsSchema>): { input: WordInputFile; table: Float32Array } {
  const counts = new Map<string, number>();
  for (const s of data.sequences) {
    for (const w of s.words ?? []) {
      const form = normaliseWord(w);
      counts.set(form, (counts.get(form) ?? 0) + 1);
    }
  }
  const vocabulary = [...counts.entries()]
    .filter(([, n]) => n >= opts.minCount)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([w]) => w);
  const input: WordInputFile = { kind: 'words', dim: opts.embeddingDim, vocabulary, buckets: opts.buckets, minN: opts.minN, maxN: opts.maxN, table: { file: 'initial.words.f32', sha256: '0'.repeat(64) } };
  const rng = createRng(opts.seed ^ 0xe5bed);
  const table = Float32Array.from({ length: wordTableRows(input) * input.dim }, () => rng.normal());
  return { input, table };
}

export function initialModel(pipeline: PipelineDefinition, data: Dataset, opts: z.output<typeof trainOptionsSchema>): ModelFile {
  return initialModelAndTable(pipeline, data, opts).model;
}

function initialModelAndTable(pipeline: PipelineDefinition, data: Dataset, opts: z.output<typeof trainOptionsSchema>): { model: ModelFile; table?: Float32Array } {
  const base = pipeline.randomModel;
  const cell: CellKind = opts.cell ?? base.layers[0]!.cell;
  const hiddenSize = opts.hiddenSize ?? base.layers[0]!.hiddenSize;
  const count = opts.layers ?? base.layers.length;
  const words = pipeline.word ? initialWordInput(data, opts) : undefined;
  const doc = randomModelFile({
    ...base,
    features: words ? words.input.dim : pipeline.featureNames,
    layers: Array.from({ length: count }, () => ({ cell, hiddenSize })),
    head: { kind: 'softmax', labels: [...data.classes] },
    seed: opts.seed,
  });
  forgetBiasOne(doc, cell, hiddenSize);
  if (words) return { model: { ...doc, features: [...pipeline.featureNames], input: words.input }, table: words.table };
  return { model: { ...doc, normalization: featureStats(data) } };
}

function forgetBiasOne(doc: ModelFile, cell: CellKind, hiddenSize: number): void {
  if (cell === 'lstm') {
    // Forget-gate bias 1 (Jozefowicz et al. 2015): the cell starts out remembering, which is
    // what lets gradients reach far back early in training. The forget gate is block 1 of
    // PyTorch's i, f, g, o.
    for (const layer of doc.layers) for (let j = 0; j < hiddenSize; j++) layer.biasIh[hiddenSize + j] = 1;
  }
}

export function train(pipeline: PipelineDefinition, trainData: Dataset, valData: Dataset, options: TrainOptions, callbacks: TrainCallbacks = {}): TrainResult {
  const parsed = trainOptionsSchema.safeParse(options);
  if (!parsed.success) throw new UsageError(`train options: ${formatZodIssues(parsed.error).join('; ')}`);
  const opts = parsed.data;
  const started = performance.now();
  const { model: init, table } = initialModelAndTable(pipeline, trainData, opts);
  const net = TrainableNetwork.fromModelFile(init, table);
  const trainSet = prepare(trainData.sequences, init);
  const valSet = prepare(valData.sequences, init);
  const rng = createRng(opts.seed ^ 0x5eed);
  const dropoutRng = createRng(opts.seed ^ 0xd409);
  const windowOptions = {
    backward: true,
    labelSmoothing: opts.labelSmoothing,
    ...(opts.dropout > 0 ? { dropout: { p: opts.dropout, random: () => dropoutRng.next() } } : {}),
  };
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
          const r = net.window(s.input, s.labels, w, Math.min(w + opts.window, s.length), states[k]!, windowOptions);
          loss += r.loss;
          correct += r.correct;
          count += r.count;
          windowCount += r.count;
        });
        if (windowCount === 0) continue;
        if (!opts.trainEmbedding && net.embedding) net.grad.fill(0, net.embedding.offset);
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
  const trainedTable = net.embeddingTable();
  return {
    ...(trainedTable ? { table: trainedTable } : {}),
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
        ...(opts.dropout > 0 ? { dropout: opts.dropout } : {}),
        ...(opts.labelSmoothing > 0 ? { labelSmoothing: opts.labelSmoothing } : {}),
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
  if (model.input) return []; // words: utterances are shorter than the distances it measures
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
