/**
 * Hot swap: a new model into the running service without a restart.
 *
 * An offer names a model file (and, from a control record, its sha256). It is read, validated
 * (the model file's schema), and checked against the pipeline and the served model, with a few
 * steps on the backend in use beside the float64 reference (pipeline/model-check.ts). A model
 * that fails is refused: a log line with the reason, `rnnstream_model_refusals_total`, and the
 * served model goes on.
 *
 * A model that passes is swapped in at a point where nothing is in flight: the queue admits no
 * new event, the events in flight are stepped and their outputs made durable (acknowledged and
 * their state in the changelog at least once; committed exactly once), then the backend, the
 * store's model and the chain's model are replaced together, and events flow again. So every
 * output before that point is the old model's and every one after it the new model's, and no
 * changelog record mixes them: the state a record carries is tagged with the model that made it.
 * The swap point is logged per input partition (the first offset the new model serves).
 *
 * Keys' state follows the policy: `reset` (keys start from zero under the new model), `keep`
 * (same cells; keys keep their state, and the old model's changelog records are still read) or
 * `warm` (every key is marked cold and rebuilt from its last events under the new model before
 * its next step, batched across the cold keys of each micro-batch: keyed-stepper.ts).
 */
import type { SwappableBackend } from '../backends/swappable.js';
import type { StepBackend } from '../backends/types.js';
import type { RnnModel } from '../core/model.js';
import { loadModelFile } from '../adapters/model-file.js';
import type { Logger } from '../observability/logger.js';
import type { BoundedQueue } from '../operators/bounded-queue.js';
import type { PipelineDefinition } from '../pipeline/define.js';
import { checkCandidate, type SwapPolicy } from '../pipeline/model-check.js';
import type { ServingModel } from '../pipeline/serving-model.js';
import type { KeyStateStore } from '../state/key-state-store.js';
import type { MarkerRequest } from '../adapters/kafka/sinks/model-marks.js';
import type { ServiceMetrics } from './metrics.js';

/** A model offered for serving: a file every instance can read, and the sha256 its bytes must have. */
export interface ModelOffer {
  readonly path: string;
  /** Hex sha256 of the file's bytes; unchecked when absent (a watched file). */
  readonly sha256?: string;
  /** Where the offer came from, for the log. */
  readonly from: string;
}

export type SwapOutcome =
  | {
      readonly kind: 'swapped';
      readonly from: string;
      readonly to: string;
      readonly seconds: number;
      /** Keys removed (policy reset). */
      readonly keysReset: number;
      /** Keys marked cold, to be warmed up before their next step (policy warm). */
      readonly keysCold: number;
      readonly offsets: Readonly<Record<number, number>>;
    }
  | { readonly kind: 'refused'; readonly reason: string }
  | { readonly kind: 'unchanged' }
  /** The swap itself failed (the sink could not make what was in flight durable): the service is failing already. */
  | { readonly kind: 'failed'; readonly reason: string };

export interface ModelSwapParts {
  readonly pipeline: PipelineDefinition;
  readonly serving: ServingModel;
  readonly backend: SwappableBackend;
  readonly store: KeyStateStore;
  readonly queue: BoundedQueue;
  /** Makes every output so far durable (the sink's flush). */
  readonly flush: () => Promise<void>;
  /** The next input offset of each owned partition (the source's position): the swap points. */
  readonly positions: () => ReadonlyMap<number, number>;
  /** Records in the changelog, with the partition's next output, that the model serves it from there on (KafkaSink.markModel). */
  readonly markModel?: (partition: number, marker: MarkerRequest) => void;
  /** Told of each model swapped in (a shadow of it stops: it was promoted). */
  readonly onSwapped?: (model: RnnModel) => void;
  readonly createBackend: (model: RnnModel) => Promise<StepBackend>;
  readonly policy: SwapPolicy;
  readonly oosThreshold?: number;
  readonly logger: Logger;
  readonly metrics: ServiceMetrics;
}

export class ModelSwapper {
  /** Offers are handled one at a time, in the order they came. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly parts: ModelSwapParts) {}

  /**
   * Checks the offered model and, when it passes, swaps it in; resolves with what happened, and
   * never rejects: its callers (a file watcher, a topic reader) have nobody to hand an error to.
   */
  offer(offer: ModelOffer): Promise<SwapOutcome> {
    const next = this.queue.then(() => this.handle(offer)).catch((err: unknown): SwapOutcome => {
      const reason = (err as Error).message;
      this.parts.logger.error({ model: offer.path, from: offer.from, err: reason }, 'model swap failed; the served model goes on');
      return { kind: 'failed', reason };
    });
    this.queue = next;
    return next;
  }

  private async handle(offer: ModelOffer): Promise<SwapOutcome> {
    const { serving, logger, metrics } = this.parts;
    const refuse = (reason: string): SwapOutcome => {
      metrics.modelRefusals.inc();
      logger.warn({ model: offer.path, from: offer.from, reason, serving: serving.model.hash.slice(0, 12) }, 'new model refused; the served model goes on');
      return { kind: 'refused', reason };
    };
    let candidate: RnnModel;
    try {
      candidate = loadModelFile(offer.path, offer.sha256 !== undefined ? { sha256: offer.sha256 } : {});
    } catch (err) {
      return refuse((err as Error).message);
    }
    if (candidate.hash === serving.model.hash) return { kind: 'unchanged' };
    const verdict = await checkCandidate({ pipeline: this.parts.pipeline, served: serving.model, candidate, policy: this.parts.policy, createBackend: this.parts.createBackend, ...(this.parts.oosThreshold !== undefined ? { oosThreshold: this.parts.oosThreshold } : {}) });
    if (!verdict.ok) return refuse(`${offer.path}: ${verdict.reason}`);
    return this.swap(candidate, verdict.backend);
  }

  /** Drains the chain, replaces the model everywhere at once, and lets events flow again. */
  private async swap(candidate: RnnModel, backend: StepBackend): Promise<SwapOutcome> {
    const { serving, store, queue, logger, metrics, policy } = this.parts;
    const started = performance.now();
    const from = serving.model;
    let swapped = false;
    try {
      await queue.hold();
      await this.parts.flush();
      // The chain's model first: it is the one part that can still refuse (checked already).
      serving.replace(candidate);
      const previous = this.parts.backend.replace(backend);
      const touched = store.serve(candidate, policy);
      const keysReset = policy === 'reset' ? touched : 0;
      const keysCold = policy === 'warm' ? touched : 0;
      swapped = true;
      previous.dispose();
      this.parts.onSwapped?.(candidate);
      const seconds = (performance.now() - started) / 1000;
      const positions = this.parts.positions();
      const offsets = Object.fromEntries(positions);
      for (const partition of positions.keys()) this.parts.markModel?.(partition, { model: candidate.hash, name: candidate.name, policy, at: Date.now() });
      metrics.modelSwaps.inc();
      metrics.modelSwapSeconds.set(seconds);
      metrics.modelInfo.reset();
      metrics.modelInfo.set({ pipeline: this.parts.pipeline.name, model: candidate.name, hash: candidate.hash }, 1);
      logger.info({ from: from.hash.slice(0, 12), to: candidate.hash.slice(0, 12), model: candidate.name, policy, keysReset, keysCold, seconds, offsets }, 'model swapped: the new model serves each partition from these offsets');
      return { kind: 'swapped', from: from.hash, to: candidate.hash, seconds, keysReset, keysCold, offsets };
    } finally {
      if (!swapped) backend.dispose();
      queue.unhold();
    }
  }
}
