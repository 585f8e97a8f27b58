/**
 * A backend whose model a hot swap replaces between micro-batches: every call goes to the
 * backend of the model served now. It offers no state table, so keys' state stays on the host
 * (a device's slot table would hold it in the old model's backend, which a swap disposes of).
 */
import { RnnStreamError } from '../core/errors.js';
import type { MicroBatch, StepBackend, TransferCounts } from './types.js';

export class SwappableBackend implements StepBackend {
  private current: StepBackend;
  readonly stepMicroBatch?: (batch: MicroBatch) => void | Promise<void>;

  constructor(initial: StepBackend) {
    this.current = initial;
    // Present exactly when the backend has the path: the stepper chooses its path by it.
    if (initial.stepMicroBatch) this.stepMicroBatch = (batch) => this.current.stepMicroBatch!(batch);
  }

  get name(): StepBackend['name'] {
    return this.current.name;
  }

  get detail(): string {
    return this.current.detail;
  }

  get device(): boolean | undefined {
    return this.current.device;
  }

  get sequenceMicroBatch(): boolean | undefined {
    return this.current.sequenceMicroBatch;
  }

  get transfers(): TransferCounts | undefined {
    return this.current.transfers;
  }

  step(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): void | Promise<void> {
    return this.current.step(batch, input, state, next, output);
  }

  /**
   * Serves `next` from the next call on; returns the backend it replaces (its owner disposes of
   * it). `next` must be the same kind of backend (the stepper chose its path by this one).
   */
  replace(next: StepBackend): StepBackend {
    if (next.name !== this.current.name || Boolean(next.stepMicroBatch) !== Boolean(this.current.stepMicroBatch)) {
      throw new RnnStreamError(`a ${next.name} backend cannot replace the ${this.current.name} backend in service`);
    }
    const previous = this.current;
    this.current = next;
    return previous;
  }

  dispose(): void {
    this.current.dispose();
  }
}
