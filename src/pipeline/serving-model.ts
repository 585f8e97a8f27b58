/**
 * The model a running chain serves, and what depends on it besides the backend: how an event
 * becomes the model's input (a word model carries its own table), and the out-of-scope rule its
 * file sets. A hot swap replaces all three between micro-batches (service/model-swap.ts); the
 * chain reads them through this holder, never from a model it captured when it was built.
 */
import type { RnnModel } from '../core/model.js';
import type { PipelineDefinition } from './define.js';
import { inputOf, type InputOf } from './inputs.js';
import { outOfScopeRule, type OutOfScopeRule } from './out-of-scope.js';

export class ServingModel {
  private served: { readonly model: RnnModel; readonly input: InputOf; readonly outOfScope: OutOfScopeRule | undefined };

  constructor(
    private readonly pipeline: PipelineDefinition,
    model: RnnModel,
    /** The `--oos-threshold` flag, which overrides every served model's own threshold. */
    private readonly oosThreshold?: number,
  ) {
    this.served = this.partsOf(model);
  }

  get model(): RnnModel {
    return this.served.model;
  }

  get outOfScope(): OutOfScopeRule | undefined {
    return this.served.outOfScope;
  }

  /** The served model's input for an event (see inputOf). */
  readonly input: InputOf = (event, prev, out) => this.served.input(event, prev, out);

  /** Serves `model` from now on; throws (and keeps the current one) when the pipeline cannot use it. */
  replace(model: RnnModel): void {
    this.served = this.partsOf(model);
  }

  private partsOf(model: RnnModel): ServingModel['served'] {
    return { model, input: inputOf(this.pipeline, model), outOfScope: outOfScopeRule(this.pipeline, model, this.oosThreshold) };
  }
}
