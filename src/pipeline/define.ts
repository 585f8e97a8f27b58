/**
 * What a pipeline declares: its input schema, its key, the features the model sees (from the
 * event and the key's previous event), its model file, how a model output becomes a prediction,
 * and optionally the ground-truth label carried by fixture events. Pipelines under pipelines/
 * only declare; the operators and adapters do the work.
 */
import type { z } from 'zod';
import type { RandomModelSpec } from '../core/random-model.js';

export interface SequenceContract<E> {
  /** The field, for messages. */
  readonly field: string;
  readonly of: (event: E) => number;
  readonly consecutive?: boolean;
}

export interface PipelineDefinition<S extends z.ZodType = z.ZodType> {
  readonly name: string;
  readonly description: string;
  readonly schema: S;
  /** Name of the key field, for messages and for Kafka message keys. */
  readonly keyField: string;
  readonly key: (event: z.output<S>) => string;
  /** When the event happened, in ms since the epoch (realtime pacing of replay and produce). */
  readonly eventTime: (event: z.output<S>) => number;
  /**
   * Per-key order, as a contract: a number that grows from each event of a key to the next. An
   * event whose number is not greater than its key's last applied one is a dead letter
   * (duplicate or out of order), not a step. With `consecutive`, numbers are meant to go up by
   * one, and a larger jump is counted as a gap (missing events), the event still applied.
   */
  readonly sequence?: SequenceContract<z.output<S>>;
  /** Feature names, in the order `features` writes them; the model's `features` must match. */
  readonly featureNames: readonly string[];
  readonly features: (event: z.output<S>, prev: z.output<S> | undefined, out: Float64Array) => void;
  /** The true label in a fixture event, if it has one (for accuracy). */
  readonly label?: (event: z.output<S>) => string | undefined;
  /**
   * What a key's next event reveals about the prediction made at its previous event (where the
   * ball went, whether the price rose): prequential, live accuracy needs no labels in the data.
   */
  readonly outcome?: (prev: z.output<S>, next: z.output<S>) => string | undefined;
  /**
   * Honest baselines for evaluation: each predicts the label of the last event of `history`
   * (a key's events so far, oldest first) or returns undefined when it cannot (the evaluator
   * then falls back to the majority class).
   */
  readonly baselines?: Readonly<Record<string, (history: readonly z.output<S>[]) => string | undefined>>;
  /** How the evaluation report draws a key's events: a path in the plane, or a time series. */
  readonly plot?:
    | { readonly kind: 'path'; readonly point: (event: z.output<S>) => readonly [number, number] }
    | { readonly kind: 'series'; readonly value: (event: z.output<S>) => number };
  /** Seeded train / validation / test fixtures (absolute paths). */
  readonly trainingFixtures?: { readonly train: string; readonly validation: string; readonly test: string };
  /** Absolute path of the model file. */
  readonly modelFile: string;
  /** Absolute path of the fixture `npm start` and `replay` use by default. */
  readonly defaultFixture: string;
  /** The architecture, and the seeded random model used where no trained model exists yet. */
  readonly randomModel: Omit<RandomModelSpec, 'features'>;
  /** Training options that suit this pipeline (rnnstream train's defaults for it). */
  readonly training?: Readonly<Record<string, number | string>>;
}

export function definePipeline<S extends z.ZodType>(definition: PipelineDefinition<S>): PipelineDefinition<S> {
  return Object.freeze(definition);
}

/** The event in a raw line, when the line is JSON that passes the pipeline's schema; never throws. */
export function eventOfLine<S extends z.ZodType>(pipeline: PipelineDefinition<S>, text: string): z.output<S> | undefined {
  try {
    const parsed = pipeline.schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
