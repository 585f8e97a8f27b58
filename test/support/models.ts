import type { CellKind } from '../../src/core/model.js';
import { randomModel } from '../../src/core/random-model.js';

export interface ModelCase {
  readonly label: string;
  readonly layers: { cell: CellKind; hiddenSize: number }[];
}

/** Every cell type, single and stacked (mixed stacks too), as the tests cover them. */
export const MODEL_CASES: readonly ModelCase[] = [
  { label: 'rnn', layers: [{ cell: 'rnn', hiddenSize: 16 }] },
  { label: 'lstm', layers: [{ cell: 'lstm', hiddenSize: 16 }] },
  { label: 'gru', layers: [{ cell: 'gru', hiddenSize: 16 }] },
  { label: 'rnn x2', layers: [{ cell: 'rnn', hiddenSize: 12 }, { cell: 'rnn', hiddenSize: 8 }] },
  { label: 'lstm x2', layers: [{ cell: 'lstm', hiddenSize: 12 }, { cell: 'lstm', hiddenSize: 8 }] },
  { label: 'gru x2', layers: [{ cell: 'gru', hiddenSize: 12 }, { cell: 'gru', hiddenSize: 8 }] },
];

export const caseModel = (c: ModelCase, seed = 7) =>
  randomModel({
    features: 5,
    layers: c.layers,
    head: { kind: 'softmax', labels: ['a', 'b', 'c', 'd'] },
    seed,
    // Larger than PyTorch's default so gates saturate sometimes and errors would compound.
    scale: 2,
  });
