/**
 * The one operator chain every mode runs (fixture replay, the Kafka service, tests):
 * raw records -> decodeEvents -> rnnByKey -> prediction records and dead letters, in input order.
 */
import { map, pipe, type OperatorFunction, type SchedulerLike } from 'rxjs';
import type { StepBackend } from '../backends/types.js';
import { RnnStreamError, UsageError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { utf8LengthOver } from '../core/validation.js';
import type { BoundedQueue } from '../operators/bounded-queue.js';
import { decodeEvents, type DecodeOptions } from '../operators/decode-events.js';
import type { DeadLetter, Decoded, EventRecord, RawRecord, SourcePosition } from '../operators/records.js';
import { rnnByKey, type KeyedStep } from '../operators/rnn-by-key.js';
import { KeyStateStore, type KeySnapshot, type StatePosition } from '../state/key-state-store.js';
import { WarmHistory } from '../state/warm-history.js';
import { carryNames, type PipelineDefinition } from './define.js';
import { inputOf } from './inputs.js';
import type { OutOfScopeRule } from './out-of-scope.js';
import type { PrequentialScore, PrequentialTracker } from './prequential.js';
import type { ServingModel } from './serving-model.js';

export interface PredictionRecord {
  readonly kind: 'prediction';
  readonly key: string;
  /** 1-based index of the event in its key's state history. */
  readonly seq: number;
  /** The most probable label (softmax head), the first output value (linear head), or the transcript so far (a CTC pipeline). */
  readonly prediction: string | number;
  /** `ctc`: a frames pipeline's decoder made the prediction (a transcript) from the event's rows. */
  readonly head: 'softmax' | 'linear' | 'ctc';
  /** Label (softmax) or output (linear) names, in `output` order. */
  readonly names: readonly string[];
  /** Probabilities (softmax) or values (linear), float32 as the backend computed them. */
  readonly output: Float32Array;
  /**
   * Under an out-of-scope rule (out-of-scope.ts): the most probable class, which `prediction`
   * replaces by the out-of-scope class when its probability is under the threshold.
   */
  readonly topClass?: string;
  /** The pipeline's `topK`: the indices of the classes written, most probable first (else all, in order). */
  readonly top?: readonly number[];
  /** Ground truth carried by the event, when it has one (fixtures). */
  readonly label?: string;
  /**
   * The content hash of the model that made it, where a hot swap may change the model (the
   * service): written as its first 16 hex digits, `"model"`.
   */
  readonly model?: string;
  /**
   * With hot swap policy `warm`: false while the key has seen fewer events under the model that
   * made this than its warm-up history holds (`"warm": false`); undefined (not written) otherwise.
   */
  readonly warm?: boolean | undefined;
  /** The key's previous prediction, scored by what this event revealed (prequential). */
  readonly prequential?: PrequentialScore;
  /** The key's state right after this event (only with `captureState`). */
  readonly state?: KeySnapshot;
  /** This was its key's last event (the pipeline's `ends`): the key's state is freed. */
  readonly ended: boolean;
  readonly source: SourcePosition;
  /** Sequence numbers missing right before this event (the pipeline's `sequence`, when consecutive). */
  readonly sequenceGap?: number;
  /** A CTC pipeline: this event ended its stream, and `prediction` is the final transcript. */
  readonly final?: boolean;
}

/**
 * An event not applied because the key's (restored) state already reflects it: a redelivery
 * after a crash or a rebalance. It has no output, but its offset is done.
 */
export interface SkippedRecord {
  readonly kind: 'skipped';
  readonly key: string;
  readonly source: SourcePosition;
}

/** `{label: probability}` or `{output: value}` of a prediction. */
export function namedOutputs(p: PredictionRecord): Record<string, number> {
  const named: Record<string, number> = {};
  p.names.forEach((n, k) => (named[n] = p.output[k]!));
  return named;
}

export type PipelineOutput = PredictionRecord | DeadLetter | SkippedRecord;

export interface PredictOptions extends DecodeOptions {
  readonly backend: StepBackend;
  readonly store: KeyStateStore;
  readonly maxBatchSize?: number;
  readonly maxWaitMs?: number;
  /** Events with a longer key (UTF-8 bytes) are dead-lettered (default DEFAULT_MAX_KEY_BYTES). */
  readonly maxKeyBytes?: number;
  readonly scheduler?: SchedulerLike;
  readonly queue?: BoundedQueue;
  /** Scores each prediction when its key's next event arrives (softmax heads). */
  readonly prequential?: PrequentialTracker;
  /** The out-of-scope rule predictions are served with (outOfScopeRule), if any. */
  readonly outOfScope?: OutOfScopeRule;
  /** Attach each key's state after each step to its prediction (see rnnByKey). */
  readonly captureState?: boolean;
  /** Whole micro-batches per backend call (see rnnByKey's microBatch; default: device backends). */
  readonly microBatch?: boolean;
  /** Keys' state in the device backend's slot table (see rnnByKey's stateOnDevice; default: where it fits). */
  readonly stateOnDevice?: boolean;
  /** See rnnByKey's onKeptStatesSpilled. */
  readonly onKeptStatesSpilled?: (bytes: number) => void;
  /**
   * The model served, when a hot swap may replace it while the chain runs (the service): the
   * chain reads the model, its input and its out-of-scope rule from here (outOfScope is then
   * ignored). The backend and the store are replaced with it by whoever swaps.
   */
  readonly serving?: ServingModel;
  /** Called once per micro-batch with its events and waves. */
  readonly onBatch?: (events: number, waves: number) => void;
  /** True for an event the key's state already reflects (it becomes a SkippedRecord). */
  readonly alreadyApplied?: (key: string, source: SourcePosition) => boolean;
  /** Each key's recent inputs for a warm-up after a hot swap (see warmHistoryFor); the store must have room for it. */
  readonly history?: WarmHistory;
  /** See rnnByKey's onWarmUp. */
  readonly onWarmUp?: (keys: number, events: number, ms: number) => void;
  /** Told of each prediction with the event it answers (a shadow run steps the same events: service/shadow-run.ts). */
  readonly onPrediction?: (event: EventRecord<unknown>, prediction: PredictionRecord) => void;
}

/**
 * The position the state store keeps for an event: its Kafka partition and offset; a fixture's
 * line (and an in-memory record's index) as offsets in partition 0.
 */
export function statePositionOf(source: SourcePosition): StatePosition {
  switch (source.kind) {
    case 'kafka':
      return { partition: source.partition, offset: Number(source.offset) };
    case 'file':
      return { partition: 0, offset: source.line };
    case 'memory':
      return { partition: 0, offset: source.index };
  }
}

/**
 * The state store for a pipeline's model: columns for the pipeline's carry fields (and a warm-up
 * history after them), or a frames pipeline's state.
 */
export function stateStoreFor(pipeline: PipelineDefinition, model: RnnModel, options: { capacity?: number; idleTtlMs?: number | undefined; history?: WarmHistory | undefined } = {}): KeyStateStore {
  const { history, ...bounds } = options;
  const carrySize = pipeline.frames ? pipeline.frames(model).stateSize : carryNames(pipeline).length + (history?.size ?? 0);
  return new KeyStateStore(model, { ...bounds, carrySize, warmForeign: history !== undefined });
}

/**
 * The history of each key's last `length` events that a warm-up replays (hot swap policy
 * `warm`): raw features, which every model of the pipeline reads. A pipeline of words or of
 * audio frames has none; the service refuses `warm` for it.
 */
export function warmHistoryFor(pipeline: PipelineDefinition, length: number): WarmHistory {
  if (pipeline.frames || pipeline.word || !pipeline.features) {
    throw new UsageError(`--swap-policy warm: pipeline "${pipeline.name}" reads ${pipeline.frames ? 'audio frames' : 'words'}, not numeric features, so it keeps no history to warm a new model on; use reset or keep`);
  }
  return new WarmHistory({ length, width: pipeline.featureNames.length, offset: carryNames(pipeline).length });
}

export function checkModelFitsPipeline(pipeline: PipelineDefinition, model: RnnModel): void {
  if (model.features.join(',') !== pipeline.featureNames.join(',')) {
    throw new RnnStreamError(
      `model "${model.name}" expects features [${model.features.join(', ')}] but pipeline "${pipeline.name}" computes [${pipeline.featureNames.join(', ')}]`,
    );
  }
}

export function toPredictionRecord(
  pipeline: PipelineDefinition,
  model: RnnModel,
  step: Extract<KeyedStep<Decoded<unknown>>, { kind: 'step' }>,
  serving: { readonly prequential?: PrequentialTracker; readonly outOfScope?: OutOfScopeRule; readonly modelHash?: string } = {},
): PredictionRecord {
  const { prequential, outOfScope, modelHash } = serving;
  const { names } = model.head;
  const item = step.item as Extract<Decoded<unknown>, { kind: 'event' }>;
  const out = step.output;
  if (step.decoded !== undefined) return transcriptRecord(pipeline, step, item, { prequential, modelHash });
  let prediction: string | number;
  let topClass: string | undefined;
  if (model.head.kind === 'softmax') {
    const { best } = step;
    prediction = names[best]!;
    if (outOfScope) {
      topClass = prediction;
      if (out[best]! < outOfScope.threshold) prediction = outOfScope.label;
    }
  } else {
    prediction = out[0]!;
  }
  const score = prequential?.score(
    step.previousClass >= 0 ? names[step.previousClass] : undefined,
    step.prev !== undefined && pipeline.outcome ? pipeline.outcome(step.prev, item.event) : undefined,
  ) ?? (step.ended && pipeline.outcomeAtEnd && typeof prediction === 'string' ? prequential?.score(prediction, pipeline.outcomeAtEnd(item.event)) : undefined);
  const top = pipeline.topK !== undefined && model.head.kind === 'softmax' ? topIndices(out, pipeline.topK) : undefined;
  return recordOf(pipeline, step, item, { prediction, topClass, top, head: model.head.kind, names, score, final: undefined, model: modelHash });
}

/**
 * The record both kinds of prediction share: every field always present (undefined where it does
 * not apply), so that every record has one shape, and no spread per event.
 */
function recordOf(
  pipeline: PipelineDefinition,
  step: Extract<KeyedStep<Decoded<unknown>>, { kind: 'step' }>,
  item: Extract<Decoded<unknown>, { kind: 'event' }>,
  made: Pick<PredictionRecord, 'prediction' | 'topClass' | 'top' | 'head' | 'names' | 'final' | 'model'> & { readonly score: PrequentialScore | undefined },
): PredictionRecord {
  return {
    kind: 'prediction',
    key: step.key,
    seq: step.seq,
    prediction: made.prediction,
    topClass: made.topClass,
    top: made.top,
    head: made.head,
    names: made.names,
    output: step.output,
    label: pipeline.label?.(item.event),
    model: made.model,
    prequential: made.score,
    state: step.captured,
    ended: step.ended,
    source: item.source,
    sequenceGap: step.gap,
    final: made.final,
    warm: step.warm,
  };
}

/** A frames pipeline's prediction: its decoder's transcript so far, final on the stream's last event. */
function transcriptRecord(
  pipeline: PipelineDefinition,
  step: Extract<KeyedStep<Decoded<unknown>>, { kind: 'step' }>,
  item: Extract<Decoded<unknown>, { kind: 'event' }>,
  serving: { readonly prequential: PrequentialTracker | undefined; readonly modelHash: string | undefined },
): PredictionRecord {
  const { prequential, modelHash } = serving;
  const { text, final } = step.decoded as { text: string; final: boolean };
  const score = step.ended && pipeline.outcomeAtEnd ? prequential?.score(text, pipeline.outcomeAtEnd(item.event)) : undefined;
  return recordOf(pipeline, step, item, { prediction: text, topClass: undefined, top: undefined, head: 'ctc', names: [], score, final, model: modelHash });
}

/** The indices of the k largest values, largest first (ties: the lower index first). */
export function topIndices(values: ArrayLike<number>, k: number): number[] {
  const top: number[] = [];
  for (let i = 0; i < values.length; i++) {
    let at = top.length;
    while (at > 0 && values[top[at - 1]!]! < values[i]!) at--;
    if (at < k) {
      top.splice(at, 0, i);
      if (top.length > k) top.pop();
    }
  }
  return top;
}

/** Longest key, in UTF-8 bytes, by default: a key is an id, and every prediction repeats it. */
export const DEFAULT_MAX_KEY_BYTES = 256;

/**
 * Why an event's key is refused, if it is: a 1 MB key would be held in memory as state and
 * repeated in every prediction of its key.
 */
export const keyTooLong =
  (pipeline: PipelineDefinition, maxKeyBytes: number) =>
  (event: unknown): string | undefined => {
    const bytes = utf8LengthOver(pipeline.key(event), maxKeyBytes);
    return bytes === undefined ? undefined : `key too long: ${bytes} bytes (${pipeline.keyField}), the limit is ${maxKeyBytes}`;
  };

export function predict(pipeline: PipelineDefinition, model: RnnModel, options: PredictOptions): OperatorFunction<RawRecord, PipelineOutput> {
  checkModelFitsPipeline(pipeline, model);
  const { serving } = options;
  // What each prediction is made with, read per event from the served model (made once: an
  // object per event here would be one more allocation on every event's path).
  const served = serving
    ? {
        prequential: options.prequential,
        get outOfScope() {
          return serving.outOfScope;
        },
        get modelHash() {
          return serving.model.hash;
        },
      }
    : options;
  return pipe(
    decodeEvents(pipeline.schema, options, keyTooLong(pipeline, options.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES)),
    rnnByKey<Decoded<unknown>, unknown>({
      backend: options.backend,
      store: options.store,
      keyOf: (r) => {
        if (r.kind !== 'event') return undefined;
        const key = pipeline.key(r.event);
        return options.alreadyApplied?.(key, r.source) ? undefined : key;
      },
      eventOf: (r) => (r as EventRecord<unknown>).event,
      // Positions are read by restores, the changelog and partition drops; replay has none of
      // them and does not pay for an object per event.
      positionOf: options.captureState || options.alreadyApplied ? (r) => statePositionOf(r.source) : undefined,
      features: serving ? serving.input : inputOf(pipeline, model),
      carry: pipeline.carry,
      frames: pipeline.frames?.(model),
      ends: pipeline.ends,
      classify: options.prequential !== undefined,
      maxBatchSize: options.maxBatchSize,
      maxWaitMs: options.maxWaitMs,
      scheduler: options.scheduler,
      queue: options.queue,
      captureState: options.captureState,
      sequence: pipeline.sequence,
      microBatch: options.microBatch,
      stateOnDevice: options.stateOnDevice,
      onKeptStatesSpilled: options.onKeptStatesSpilled,
      onBatch: options.onBatch,
      history: options.history,
      onWarmUp: options.onWarmUp,
    }),
    map((step): PipelineOutput => {
      switch (step.kind) {
        case 'step': {
          const record = toPredictionRecord(pipeline, serving ? serving.model : model, step, served);
          options.onPrediction?.(step.item as EventRecord<unknown>, record);
          return record;
        }
        case 'passthrough':
          return step.item.kind === 'event' ? { kind: 'skipped', key: pipeline.key(step.item.event), source: step.item.source } : step.item;
        case 'rejected': {
          const item = step.item as EventRecord<unknown>;
          return { kind: 'dead-letter', reason: step.reason, source: item.source, raw: item.raw, messageKey: item.messageKey };
        }
      }
    }),
  );
}
