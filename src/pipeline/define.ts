/**
 * What a pipeline declares: its input schema, its key, the features the model sees (from the
 * event and the key's previous event), its model file, how a model output becomes a prediction,
 * and optionally the ground-truth label carried by fixture events. Pipelines under pipelines/
 * only declare; the operators and adapters do the work.
 */
import type { z } from 'zod';
import type { RandomModelSpec } from '../core/random-model.js';

export interface PipelineDefinition<S extends z.ZodType = z.ZodType> {
  readonly name: string;
  readonly description: string;
  readonly schema: S;
  /** Name of the key field, for messages and for Kafka message keys. */
  readonly keyField: string;
  readonly key: (event: z.output<S>) => string;
  /** Feature names, in the order `features` writes them; the model's `features` must match. */
  readonly featureNames: readonly string[];
  readonly features: (event: z.output<S>, prev: z.output<S> | undefined, out: Float64Array) => void;
  /** The true label in a fixture event, if it has one (for accuracy). */
  readonly label?: (event: z.output<S>) => string | undefined;
  /** Absolute path of the model file. */
  readonly modelFile: string;
  /** Absolute path of the fixture `npm start` and `replay` use by default. */
  readonly defaultFixture: string;
  /** The seeded random model used where no trained model exists yet. */
  readonly randomModel: Omit<RandomModelSpec, 'features'>;
}

export function definePipeline<S extends z.ZodType>(definition: PipelineDefinition<S>): PipelineDefinition<S> {
  return Object.freeze(definition);
}
