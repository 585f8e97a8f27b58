/**
 * Seeded random models: PyTorch's default initialisation, U(-1/sqrt(H), 1/sqrt(H)) for every
 * weight and bias, so a random model behaves like an untrained nn.RNN/LSTM/GRU. Used by tests,
 * benchmarks and as a pipeline's model until a trained one exists.
 */
import { GATE_COUNT, MODEL_FORMAT, parseModel, type CellKind, type ModelFile, type RnnModel } from './model.js';
import { createRng, type Rng } from './prng.js';

export interface RandomModelSpec {
  readonly name?: string;
  readonly features: readonly string[] | number;
  readonly layers: readonly { readonly cell: CellKind; readonly hiddenSize: number }[];
  readonly head:
    | { readonly kind: 'softmax'; readonly labels: readonly string[] }
    | { readonly kind: 'linear'; readonly outputs: readonly string[] };
  readonly seed: number;
  /** Weight scale multiplier over PyTorch's default bound (default 1). */
  readonly scale?: number;
}

const matrix = (rng: Rng, rows: number, cols: number, bound: number): number[][] =>
  Array.from({ length: rows }, () => Array.from({ length: cols }, () => rng.uniform(-bound, bound)));
const vector = (rng: Rng, n: number, bound: number): number[] => Array.from({ length: n }, () => rng.uniform(-bound, bound));

export function randomModelFile(spec: RandomModelSpec): ModelFile {
  const rng = createRng(spec.seed);
  const features =
    typeof spec.features === 'number' ? Array.from({ length: spec.features }, (_, i) => `f${i}`) : [...spec.features];
  const scale = spec.scale ?? 1;
  let inputSize = features.length;
  const layers = spec.layers.map(({ cell, hiddenSize }) => {
    const rows = GATE_COUNT[cell] * hiddenSize;
    const bound = scale / Math.sqrt(hiddenSize);
    const layer = {
      cell,
      inputSize,
      hiddenSize,
      weightIh: matrix(rng, rows, inputSize, bound),
      weightHh: matrix(rng, rows, hiddenSize, bound),
      biasIh: vector(rng, rows, bound),
      biasHh: vector(rng, rows, bound),
    };
    inputSize = hiddenSize;
    return layer;
  });
  const names = spec.head.kind === 'softmax' ? spec.head.labels : spec.head.outputs;
  const bound = scale / Math.sqrt(inputSize);
  const weight = matrix(rng, names.length, inputSize, bound);
  const bias = vector(rng, names.length, bound);
  const head =
    spec.head.kind === 'softmax'
      ? { kind: 'softmax' as const, labels: [...spec.head.labels], weight, bias }
      : { kind: 'linear' as const, outputs: [...spec.head.outputs], weight, bias };
  return {
    format: MODEL_FORMAT,
    version: 1,
    name: spec.name ?? `random-${spec.layers.map((l) => l.cell).join('-')}`,
    description: `seeded random model (seed ${spec.seed}), PyTorch default initialisation; untrained`,
    features,
    normalization: { mean: features.map(() => 0), std: features.map(() => 1) },
    layers,
    head,
    training: { kind: 'random', seed: spec.seed },
  };
}

export function randomModel(spec: RandomModelSpec): RnnModel {
  return parseModel(randomModelFile(spec), `random model (seed ${spec.seed})`);
}
