/**
 * What a pipeline declares: its input schema, its key, the features the model sees (from the
 * event and the key's previous event), its model file, how a model output becomes a prediction,
 * and optionally the ground-truth label carried by fixture events. Pipelines under pipelines/
 * only declare; the operators and adapters do the work.
 */
import type { z } from 'zod';
import type { RandomModelSpec } from '../core/random-model.js';
import type { RnnModel } from '../core/model.js';
import type { FrameSteps } from '../state/frame-stepper.js';
import type { SequenceRule } from '../state/sequence-verdict.js';

/** Per-key order as a contract (see operators/sequence-verdict.ts). */
export type SequenceContract<E> = SequenceRule<E>;

/** What a key remembers of its last applied event: the numbers its pipeline's `carry` took, by name. */
export type Carried<C extends string = string> = { readonly [K in C]: number };

// C defaults to any: a pipeline with its own carry names stands in where any pipeline is expected
// (the registry, the operators), as S's default lets one with its own schema.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface PipelineDefinition<S extends z.ZodType = z.ZodType, C extends string = any> {
  readonly name: string;
  readonly description: string;
  readonly schema: S;
  /** Name of the key field, for messages and for Kafka message keys. */
  readonly keyField: string;
  readonly key: (event: z.output<S>) => string;
  /**
   * When the event happened, in ms since the epoch (realtime pacing of replay and produce). Word
   * events carry no time: without it, `--pace realtime` sends as fast as `max` does.
   */
  readonly eventTime?: (event: z.output<S>) => number;
  /**
   * Per-key order, as a contract: a number that grows from each event of a key to the next. An
   * event whose number is not greater than its key's last applied one is a dead letter
   * (duplicate or out of order), not a step. With `consecutive`, numbers are meant to go up by
   * one, and a larger jump is counted as a gap (missing events), the event still applied.
   */
  readonly sequence?: SequenceContract<z.output<S>>;
  /**
   * What a key remembers of its last applied event, for features computed from it (a delta
   * since the previous tick) and for prequential outcomes: named numbers, which the state store
   * keeps in typed columns, so a key costs its hidden state plus about a hundred bytes rather
   * than a copy of its last event.
   */
  readonly carry?: { readonly [K in C]: (event: z.output<S>) => number };
  /**
   * Feature names, in the order `features` writes them; for a pipeline of words, the one field
   * they come from. The model's `features` must match.
   */
  readonly featureNames: readonly string[];
  /**
   * Writes the model's raw features for `event` into `out`, given what its key remembers of its
   * last event. A pipeline declares either `features` (numbers) or `word` (text).
   */
  readonly features?: (event: z.output<S>, prev: Carried<C> | undefined, out: Float64Array) => void;
  /**
   * The word an event adds, exactly as written: the model's word input (core/words.ts) turns it
   * into the first layer's input vector.
   */
  readonly word?: (event: z.output<S>) => string;
  /**
   * Events that are several model steps each, with per-key state of the pipeline's own (an audio
   * front end's leftover samples, a CTC decoder's partial transcript): given the model, its
   * front end and decoder (operators/frame-stepper.ts). A pipeline declares exactly one of
   * `features`, `word` and `frames`.
   */
  readonly frames?: (model: RnnModel) => PipelineFrames<z.output<S>>;
  /**
   * True for a key's last event (an utterance's last word): its state is freed as soon as its
   * prediction is made, and the changelog forgets the key.
   */
  readonly ends?: (event: z.output<S>) => boolean;
  /** The true label in a fixture event, if it has one (for accuracy). */
  readonly label?: (event: z.output<S>) => string | undefined;
  /**
   * What a key's next event reveals about the prediction made at its previous event (where the
   * ball went, whether the price rose): prequential, live accuracy needs no labels in the data.
   */
  readonly outcome?: (prev: Carried<C>, next: z.output<S>) => string | undefined;
  /**
   * What a key's last event (`ends`) reveals about the prediction made at it: for an utterance,
   * its intent where the event carries one. Prequential accuracy is then the accuracy of each
   * key's final prediction.
   */
  readonly outcomeAtEnd?: (event: z.output<S>) => string | undefined;
  /**
   * Predictions list only the `topK` most probable classes, most probable first, instead of every
   * class: a 151-intent head would write 151 probabilities per word.
   */
  readonly topK?: number;
  /**
   * The class for inputs none of the others covers (CLINC150's `oos`). Evaluation reports it as
   * a class of its own and as a confidence threshold: below the threshold chosen on the
   * validation set (by `rnnstream train`, stored in the model file), a prediction counts as it.
   */
  readonly outOfScope?: string;
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
  readonly trainingFixtures?: { readonly train: string; readonly validation: string; readonly test?: string };
  /** Absolute path of the model file. */
  readonly modelFile: string;
  /** Absolute path of the fixture `npm start` and `replay` use by default. */
  readonly defaultFixture: string;
  /** The architecture, and the seeded random model used where no trained model exists yet. */
  readonly randomModel: Omit<RandomModelSpec, 'features'>;
  /** Training options that suit this pipeline (rnnstream train's defaults for it). */
  readonly training?: Readonly<Record<string, number | string>>;
}

/** A frames pipeline's front end and decoder, with the size of its state per key. */
export interface PipelineFrames<E> extends FrameSteps<E> {
  /** Floats of pipeline state per key (the store's carry columns): the front end's, then the decoder's. */
  readonly stateSize: number;
}

export function definePipeline<S extends z.ZodType, C extends string = string>(definition: PipelineDefinition<S, C>): PipelineDefinition<S, C> {
  const inputs = [definition.features, definition.word, definition.frames].filter((f) => f !== undefined).length;
  if (inputs !== 1) {
    throw new Error(`pipeline "${definition.name}" must declare exactly one of features (numbers), word (text) and frames (several steps per event), not ${inputs}`);
  }
  if (definition.word && definition.featureNames.length !== 1) throw new Error(`pipeline "${definition.name}": a pipeline of words names one feature, the field its words come from`);
  return Object.freeze(definition);
}

/** The names of a pipeline's carry fields, in the order the state store keeps them. */
export const carryNames = (pipeline: Pick<PipelineDefinition, 'carry'>): readonly string[] => Object.keys(pipeline.carry ?? {});

/** What a key would remember of `event` (training and evaluation compute it as the store does). */
export function carriedOf(pipeline: Pick<PipelineDefinition, 'carry'>, event: unknown): Carried {
  const carried: Record<string, number> = {};
  for (const [name, of] of Object.entries(pipeline.carry ?? {})) carried[name] = of(event);
  return carried;
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
