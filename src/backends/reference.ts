/**
 * The float64 reference as a backend: one key at a time through the pure cells of core/cells.ts.
 * Slow and exact; the ground truth in tests and a backend that can never fail to load.
 */
import { stepNetwork } from '../core/cells.js';
import type { RnnModel } from '../core/model.js';
import type { BackendProvider, StepBackend } from './types.js';

export class ReferenceBackend implements StepBackend {
  readonly name = 'reference' as const;
  readonly detail = 'float64 TypeScript, one key at a time';
  private readonly keyState: Float64Array;
  private readonly keyInput: Float64Array;

  constructor(private readonly model: RnnModel) {
    this.keyState = new Float64Array(model.stateSize);
    this.keyInput = new Float64Array(model.inputSize);
  }

  step(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): void {
    const { model, keyState, keyInput } = this;
    const I = model.inputSize;
    for (let b = 0; b < batch; b++) {
      for (const seg of model.stateSegments) {
        const block = batch * seg.offset + b * seg.size;
        for (let j = 0; j < seg.size; j++) keyState[seg.offset + j] = state[block + j]!;
      }
      for (let i = 0; i < I; i++) keyInput[i] = input[b * I + i]!;
      const y = stepNetwork(model, keyInput, keyState);
      for (const seg of model.stateSegments) {
        const block = batch * seg.offset + b * seg.size;
        for (let j = 0; j < seg.size; j++) next[block + j] = keyState[seg.offset + j]!;
      }
      output.set(y, b * model.outputSize);
    }
  }

  dispose(): void {}
}

export const referenceProvider: BackendProvider = {
  name: 'reference',
  priority: 0,
  placement: 'host',
  summary: 'float64 TypeScript reference, one key at a time (exact, slow)',
  create: async (model) => new ReferenceBackend(model),
};
