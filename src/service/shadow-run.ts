/**
 * Shadow runs (hot swap): a candidate model runs beside the served one, on every key or a share
 * of them, stepping the same events after the served model has answered them. Its predictions
 * go to the shadow topic (each names its model, as the served ones do); /metrics gives live
 * prequential accuracy on the shadowed keys for both, `rnnstream_shadow_prequential_accuracy`
 * {model="shadow"} and {model="serving"}, counted over the same events from the shadow's start.
 *
 * A shadow comes from a models-topic record with role "shadow" (key `<pipeline>/shadow`), is
 * checked as a model to serve is (model-check.ts), and stops when it is promoted (a serve record
 * names it: `rnnstream promote` writes one) or a shadow record has share 0.
 *
 * It never holds up serving: it steps on its own backend after the served outputs are made, a
 * few micro-batches' worth of events at most wait for it (past that its events are skipped and
 * counted, and their keys start again in the shadow), and its predictions are written outside
 * the service's transactions, by a producer of its own. Its keys' state is
 * its own, in memory, not in the changelog: after a restart or a rebalance its keys start from
 * zero state (what a promotion then serves is built by the swap's policy).
 */
import { loadModelFile } from '../adapters/model-file.js';
import type { StepBackend } from '../backends/types.js';
import type { RnnModel } from '../core/model.js';
import { fnv1a } from '../core/words.js';
import type { Logger } from '../observability/logger.js';
import type { Decoded, EventRecord } from '../operators/records.js';
import type { PipelineDefinition } from '../pipeline/define.js';
import { inputOf } from '../pipeline/inputs.js';
import { checkCandidate } from '../pipeline/model-check.js';
import { outOfScopeRule, type OutOfScopeRule } from '../pipeline/out-of-scope.js';
import { statePositionOf, stateStoreFor, toPredictionRecord, type PredictionRecord } from '../pipeline/predict.js';
import { prequentialFor, PrequentialTracker } from '../pipeline/prequential.js';
import { predictionJson } from '../pipeline/serialize.js';
import type { ServingModel } from '../pipeline/serving-model.js';
import type { KeyStateStore } from '../state/key-state-store.js';
import { KeyedStepper } from '../state/keyed-stepper.js';
import type { ServiceMetrics } from './metrics.js';

/** Micro-batches' worth of events that may wait for the shadow before it skips events: it never holds up serving. */
const MAX_PENDING_BATCHES = 16;
/** Shadow predictions that may wait to be acknowledged; past it they are not written (counted). */
const MAX_UNWRITTEN = 100_000;

/** A shadow prediction for the shadow topic, in the input partition of the event it answers. */
export interface ShadowMessage {
  readonly key: string;
  readonly value: string;
  readonly partition: number;
}

export interface ShadowParts {
  readonly pipeline: PipelineDefinition;
  readonly serving: ServingModel;
  /** Builds the candidate's backend, of the kind in use. */
  readonly createBackend: (model: RnnModel) => Promise<StepBackend>;
  /**
   * Writes shadow predictions; resolves when they are acknowledged. The service's producer
   * (InProcessProducer) queues writes and merges those that wait into requests below the topic's
   * max.message.bytes.
   */
  readonly send: (messages: readonly ShadowMessage[]) => Promise<void>;
  readonly keyCapacity: number;
  readonly maxBatchSize: number;
  readonly oosThreshold?: number;
  readonly logger: Logger;
  readonly metrics: ServiceMetrics;
}

export interface ShadowOffer {
  readonly path: string;
  readonly sha256?: string;
  /** The share of keys to run on (keyShare(key) < share); 0 stops the shadow. */
  readonly share: number;
  readonly from: string;
}

export type ShadowOutcome = 'started' | 'stopped' | 'refused' | 'unchanged';

interface Running {
  readonly model: RnnModel;
  readonly backend: StepBackend;
  readonly store: KeyStateStore;
  readonly stepper: KeyedStepper<Decoded<unknown>, unknown>;
  readonly share: number;
  readonly outOfScope: OutOfScopeRule | undefined;
  /** The shadow's prequential scores, and the served model's on the same events. */
  readonly shadow: PrequentialTracker | undefined;
  readonly serving: PrequentialTracker;
  /** Input partitions of the events it stepped (to drop their keys when they go elsewhere). */
  readonly partitions: Set<number>;
  /** Events waiting to be stepped. */
  pending: number;
}

/** Where a key falls in [0, 1): its FNV-1a hash (core/words.ts) scaled. A shadow with share s runs on the keys below s. */
export function keyShare(key: string): number {
  return fnv1a(key) / 2 ** 32;
}

export class ShadowRunner {
  private running: Running | undefined;
  private buffer: EventRecord<unknown>[] = [];
  private flushScheduled = false;
  /** The shadow's micro-batches, stepped one after another. */
  private steps: Promise<void> = Promise.resolve();
  /** Offers, one at a time, in order. */
  private offers: Promise<unknown> = Promise.resolve();
  private sendFailureLogged = false;
  /** Predictions sent and not yet acknowledged. */
  private unwritten = 0;

  constructor(private readonly parts: ShadowParts) {}

  /** The shadow model running, if any. */
  get model(): RnnModel | undefined {
    return this.running?.model;
  }

  /** Checks the offered model and runs it as the shadow; resolves with what happened, never rejects. */
  offer(offer: ShadowOffer): Promise<ShadowOutcome> {
    if (offer.share === 0) return this.withdraw(`a shadow record with share 0 (${offer.from})`);
    return this.inTurn(() => this.handle(offer), (err) => {
      this.parts.logger.error({ model: offer.path, from: offer.from, err: err.message }, 'shadow model could not start');
      return 'refused';
    });
  }

  /** Stops the shadow, in turn with the offers before it. */
  withdraw(reason: string): Promise<ShadowOutcome> {
    return this.inTurn(
      () => {
        this.stop(reason);
        return 'stopped';
      },
      () => 'stopped',
    );
  }

  /** Runs `work` after the offers before it; never rejects. */
  private inTurn(work: () => ShadowOutcome | Promise<ShadowOutcome>, failed: (err: Error) => ShadowOutcome): Promise<ShadowOutcome> {
    const next = this.offers.then(work).catch((err: unknown) => failed(err as Error));
    this.offers = next;
    return next;
  }

  private async handle(offer: ShadowOffer): Promise<ShadowOutcome> {
    const { serving, logger, metrics, pipeline } = this.parts;
    const refuse = (reason: string): ShadowOutcome => {
      metrics.modelRefusals.inc();
      logger.warn({ model: offer.path, from: offer.from, reason }, 'shadow model refused; the served model goes on alone');
      return 'refused';
    };
    let candidate: RnnModel;
    try {
      candidate = loadModelFile(offer.path, offer.sha256 !== undefined ? { sha256: offer.sha256 } : {});
    } catch (err) {
      return refuse((err as Error).message);
    }
    if (candidate.hash === serving.model.hash) return refuse('it is the served model');
    if (this.running?.model.hash === candidate.hash && this.running.share === offer.share) return 'unchanged';
    const verdict = await checkCandidate({ pipeline, served: serving.model, candidate, policy: 'reset', createBackend: this.parts.createBackend, ...(this.parts.oosThreshold !== undefined ? { oosThreshold: this.parts.oosThreshold } : {}) });
    if (!verdict.ok) return refuse(`${offer.path}: ${verdict.reason}`);
    // The previous shadow's waiting micro-batches finish first.
    await this.steps;
    this.stop(undefined);
    this.running = this.start(candidate, verdict.backend, offer.share);
    metrics.shadowInfo.set({ model: candidate.name, hash: candidate.hash, share: String(offer.share) }, 1);
    logger.info({ model: candidate.name, hash: candidate.hash.slice(0, 12), share: offer.share, from: offer.from }, 'shadow model started');
    return 'started';
  }

  private start(model: RnnModel, backend: StepBackend, share: number): Running {
    const { pipeline } = this.parts;
    const store = stateStoreFor(pipeline, model, { capacity: this.parts.keyCapacity });
    const shadow = prequentialFor(pipeline, model);
    const stepper = new KeyedStepper<Decoded<unknown>, unknown>(
      {
        backend,
        store,
        keyOf: (r) => (r.kind === 'event' ? pipeline.key(r.event) : undefined),
        eventOf: (r) => (r as EventRecord<unknown>).event,
        positionOf: (r) => statePositionOf((r as EventRecord<unknown>).source),
        features: inputOf(pipeline, model),
        ...(pipeline.carry ? { carry: pipeline.carry } : {}),
        ...(pipeline.frames ? { frames: pipeline.frames(model) } : {}),
        ...(pipeline.ends ? { ends: pipeline.ends } : {}),
        ...(pipeline.sequence ? { sequence: pipeline.sequence } : {}),
        classify: shadow !== undefined,
      },
      this.parts.maxBatchSize,
      () => Date.now(),
    );
    return { model, backend, store, stepper, share, outOfScope: outOfScopeRule(pipeline, model, this.parts.oosThreshold), shadow, serving: new PrequentialTracker(), partitions: new Set(), pending: 0 };
  }

  /** Told of each served prediction with its event: a shadowed key's event is stepped by the shadow too. */
  observe(event: EventRecord<unknown>, served: PredictionRecord): void {
    const r = this.running;
    // Every key at share 1: no hash per event.
    if (!r || (r.share < 1 && keyShare(served.key) >= r.share)) return;
    if (served.prequential) r.serving.add(served.prequential);
    this.buffer.push(event);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // The events of one served micro-batch arrive together: they are one shadow micro-batch.
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const r = this.running;
    const events = this.buffer;
    this.buffer = [];
    if (!r || events.length === 0) return;
    if (r.pending + events.length > MAX_PENDING_BATCHES * this.parts.maxBatchSize) {
      // Fallen behind: these events are skipped, and their keys start again in the shadow (a key
      // stepped on with a gap in its events would be scored on a sequence it never saw).
      for (const e of events) r.store.delete(this.parts.pipeline.key(e.event));
      this.parts.metrics.shadowDropped.inc(events.length);
      return;
    }
    r.pending += events.length;
    this.steps = this.steps
      .then(() => this.step(r, events))
      .catch((err: unknown) => {
        this.parts.metrics.shadowDropped.inc(events.length);
        this.parts.logger.warn({ err: (err as Error).message, events: events.length }, 'shadow micro-batch failed; its events skipped');
      })
      .finally(() => (r.pending -= events.length));
  }

  private async step(r: Running, events: EventRecord<unknown>[]): Promise<void> {
    const { pipeline, metrics } = this.parts;
    for (let i = 0; i < events.length && this.running === r; i += this.parts.maxBatchSize) {
      const results = await r.stepper.run(events.slice(i, i + this.parts.maxBatchSize));
      const messages: ShadowMessage[] = [];
      for (const s of results) {
        if (s.kind !== 'step') continue;
        const record = toPredictionRecord(pipeline, r.model, s, { prequential: r.shadow, outOfScope: r.outOfScope, modelHash: r.model.hash });
        const partition = record.source.kind === 'kafka' ? record.source.partition : 0;
        r.partitions.add(partition);
        messages.push({ key: record.key, value: predictionJson(record), partition });
      }
      for (const [model, tracker] of [['shadow', r.shadow], ['serving', r.serving]] as const) {
        if (!tracker) continue;
        metrics.shadowPrequentialAccuracy.set({ model }, tracker.accuracy);
        metrics.shadowPrequentialScored.set({ model }, tracker.scored);
      }
      this.write(messages);
    }
  }

  /** Writes shadow predictions without waiting for them: the next micro-batch steps meanwhile. */
  private write(messages: ShadowMessage[]): void {
    const { metrics } = this.parts;
    if (messages.length === 0) return;
    if (this.unwritten + messages.length > MAX_UNWRITTEN) {
      metrics.shadowDropped.inc(messages.length);
      return;
    }
    this.unwritten += messages.length;
    void this.parts
      .send(messages)
      .then(
        () => metrics.shadowPredictions.inc(messages.length),
        (err: unknown) => {
          metrics.shadowDropped.inc(messages.length);
          if (!this.sendFailureLogged) this.parts.logger.warn({ err: (err as Error).message }, 'shadow predictions could not be written (counted in rnnstream_shadow_dropped_total from now on)');
          this.sendFailureLogged = true;
        },
      )
      .finally(() => (this.unwritten -= messages.length));
  }

  /** The served model changed: a shadow of that model was promoted, and stops. */
  servingChanged(model: RnnModel): void {
    if (this.running?.model.hash === model.hash) this.stop('promoted: it is the served model now');
  }

  /** The input partitions owned now: the shadow's keys of the others are dropped (their events go elsewhere). */
  assigned(owned: ReadonlySet<number>): void {
    const r = this.running;
    if (!r) return;
    for (const p of [...r.partitions]) {
      if (owned.has(p)) continue;
      r.store.dropPartition(p);
      r.partitions.delete(p);
    }
  }

  /** Stops the shadow (undefined reason: replaced, not logged). */
  stop(reason: string | undefined): void {
    const r = this.running;
    if (!r) return;
    this.running = undefined;
    this.buffer = [];
    this.parts.metrics.shadowInfo.reset();
    if (reason !== undefined) this.parts.logger.info({ model: r.model.name, hash: r.model.hash.slice(0, 12), reason }, 'shadow model stopped');
    // Its micro-batch under way finishes on the backend first.
    void this.steps.finally(() => r.backend.dispose());
  }
}
