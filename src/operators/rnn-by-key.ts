import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import { z } from 'zod';
import { formatZodIssues } from '../core/validation.js';
import { RnnStreamError } from '../core/errors.js';
import { KeyedStepper, type KeyedStep, type KeyedStepConfig } from '../state/keyed-stepper.js';
import type { BoundedQueue } from './bounded-queue.js';

export type { KeyedStep, KeyedStepConfig } from '../state/keyed-stepper.js';

export const rnnByKeyOptionsSchema = z
  .object({
    /** Most events in one micro-batch. */
    maxBatchSize: z.int().positive().default(1024),
    /** Longest an event waits for its batch to fill, in scheduler ms (0: cut at once). */
    maxWaitMs: z.number().nonnegative().default(2),
  })
  .strict();
export type RnnByKeyOptions = z.input<typeof rnnByKeyOptionsSchema>;

/** rnnByKey's configuration: the stepper's, and how events are batched and admitted. */
export interface RnnByKeyConfig<In, E> extends KeyedStepConfig<In, E>, RnnByKeyOptions {
  /** Time source for batching deadlines and the store's idle TTL (virtual time in tests). */
  readonly scheduler?: SchedulerLike;
  /** Admission control shared with the source; events are released as their results leave. */
  readonly queue?: BoundedQueue;
}

/**
 * Carries each key's recurrent state from one event to the next and emits one model output per
 * event. Events are micro-batched (up to `maxBatchSize`, or whatever arrived within `maxWaitMs`),
 * and a batch is stepped in waves: wave w holds the w-th event of every key in the batch, and one
 * backend call steps all of a wave's keys together. So each key's events are applied strictly in
 * arrival order, and results leave in exactly the order items came in.
 *
 * ```
 * source:    --a1-b1-a2-----b2--|       (a, b: keys; maxBatchSize 3)
 * waves:     [a1 b1] [a2]  [b2]
 * rnnByKey:  --------(A1 B1 A2)-B2|     (each A/B carries its key's output)
 * ```
 *
 * On a device backend (`microBatch`), the same waves go to the backend in one call
 * (`stepMicroBatch`) after the host has done every wave's part (slots, checks, features, what
 * keys remember): results are those of the wave-by-wave calls, bit for bit.
 *
 * Items `keyOf` returns undefined for (dead letters) pass through in order without a step.
 * An event whose features are not finite is `rejected` and does not advance its key's state.
 * A backend error errors the stream. With a synchronous backend and a virtual-time scheduler the
 * operator is fully deterministic, which is how its marble tests run.
 *
 * @example
 * ```ts
 * events$.pipe(
 *   rnnByKey({ backend, store, keyOf: (e) => e.id, eventOf: (e) => e, features: (e, _p, out) => { out[0] = e.x; } }),
 * ).subscribe((r) => r.kind === 'step' && console.log(r.key, r.seq, [...r.output]));
 * ```
 */
export function rnnByKey<In, E>(config: RnnByKeyConfig<In, E>): OperatorFunction<In, KeyedStep<In>> {
  const parsed = rnnByKeyOptionsSchema.safeParse({ maxBatchSize: config.maxBatchSize, maxWaitMs: config.maxWaitMs });
  if (!parsed.success) throw new RnnStreamError(`rnnByKey options: ${formatZodIssues(parsed.error).join('; ')}`);
  const { maxBatchSize, maxWaitMs } = parsed.data;
  const scheduler = config.scheduler ?? asyncScheduler;
  if (config.store.capacity < maxBatchSize) {
    // Otherwise a wave could evict a key it is about to step.
    throw new RnnStreamError(`rnnByKey: the state store's capacity (${config.store.capacity}) must be >= maxBatchSize (${maxBatchSize})`);
  }

  return (source) =>
    new Observable<KeyedStep<In>>((subscriber) => {
      const stepper = new KeyedStepper(config, maxBatchSize, () => scheduler.now());
      const queue = config.queue;
      let buffer: In[] = [];
      const ready: In[][] = [];
      let timer: Subscription | undefined;
      let running = false;
      let sourceDone = false;
      let closed = false;
      let admitted = 0;

      const finishIfDone = (): void => {
        if (sourceDone && !running && ready.length === 0 && buffer.length === 0 && !closed) subscriber.complete();
      };
      const emit = (results: KeyedStep<In>[]): void => {
        // The whole batch leaves the queue at once: one release (and one waiter check) per
        // batch rather than per event.
        admitted -= results.length;
        queue?.release(results.length);
        for (const r of results) {
          if (closed) return;
          subscriber.next(r);
        }
      };
      const fail = (err: unknown): void => {
        if (!closed) subscriber.error(err);
      };
      const drain = (): void => {
        while (!running && ready.length > 0 && !closed) {
          const batch = ready.shift()!;
          let result: KeyedStep<In>[] | Promise<KeyedStep<In>[]>;
          try {
            result = stepper.run(batch);
          } catch (err) {
            fail(err);
            return;
          }
          if (result instanceof Promise) {
            running = true;
            result.then(
              (results) => {
                running = false;
                emit(results);
                drain();
              },
              (err: unknown) => {
                running = false;
                fail(err);
              },
            );
            return;
          }
          emit(result);
        }
        finishIfDone();
      };
      const cut = (): void => {
        timer?.unsubscribe();
        timer = undefined;
        if (buffer.length === 0) return;
        ready.push(buffer);
        buffer = [];
        drain();
      };

      const subscription = source.subscribe({
        next: (item) => {
          try {
            queue?.admit(1);
          } catch (err) {
            fail(err);
            return;
          }
          admitted++;
          buffer.push(item);
          if (buffer.length >= maxBatchSize || maxWaitMs === 0) cut();
          else timer ??= scheduler.schedule(cut, maxWaitMs);
        },
        error: fail,
        complete: () => {
          sourceDone = true;
          cut();
          finishIfDone();
        },
      });

      return () => {
        closed = true;
        subscription.unsubscribe();
        timer?.unsubscribe();
        // Items that never left still hold queue room; give it back so the source is not stuck.
        if (admitted > 0) queue?.release(admitted);
        admitted = 0;
        buffer = [];
        ready.length = 0;
      };
    });
}

