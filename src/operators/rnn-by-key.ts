import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import { z } from 'zod';
import type { StepBackend } from '../backends/types.js';
import type { StateSegment } from '../core/model.js';
import { formatZodIssues } from '../core/validation.js';
import { RnnStreamError } from '../core/errors.js';
import type { KeyState, KeyStateStore } from '../state/key-state-store.js';
import type { BoundedQueue } from './bounded-queue.js';

export const rnnByKeyOptionsSchema = z
  .object({
    /** Most events in one micro-batch. */
    maxBatchSize: z.int().positive().default(1024),
    /** Longest an event waits for its batch to fill, in scheduler ms (0: cut at once). */
    maxWaitMs: z.number().nonnegative().default(2),
  })
  .strict();
export type RnnByKeyOptions = z.input<typeof rnnByKeyOptionsSchema>;


export interface RnnByKeyConfig<In, E> extends RnnByKeyOptions {
  readonly backend: StepBackend;
  readonly store: KeyStateStore<E>;
  /** The item's key, or undefined to pass the item through unstepped (e.g. a dead letter). */
  readonly keyOf: (item: In) => string | undefined;
  /** The event in a keyed item (the input of `features`, remembered as the key's `prev`). */
  readonly eventOf: (item: In) => E;
  /** Stored with the key's state after the step (e.g. the Kafka offset), for restores. */
  readonly positionOf?: (item: In) => unknown;
  /** Writes the model's raw features for `event`, given the key's previous event, into `out`. */
  readonly features: (event: E, prev: E | undefined, out: Float64Array) => void;
  /** Time source for batching deadlines and the store's idle TTL (virtual time in tests). */
  readonly scheduler?: SchedulerLike;
  /** Admission control shared with the source; events are released as their results leave. */
  readonly queue?: BoundedQueue;
  /**
   * Attach to each step a copy of the key's state right after it (for a changelog that must
   * match the outputs it is written with). Off by default: replay does not need it.
   */
  readonly captureState?: boolean;
  /**
   * Per-key order: an event whose sequence number is not greater than that of the key's previous
   * event (`prev`, which snapshots and the changelog keep, so the check holds across restores)
   * is rejected, not stepped. With `consecutive`, a jump of more than one counts as a gap.
   */
  readonly sequence?: { readonly field: string; readonly of: (event: E) => number; readonly consecutive?: boolean };
}

/** A key's state as it was right after one step. */
export interface StateCapture<E> {
  readonly state: Float32Array;
  readonly steps: number;
  readonly prev: E;
  readonly position: unknown;
  readonly lastSeen: number;
}

/**
 * A capture that shares one copy of its wave's next-state buffer with the wave's other keys and
 * gathers its own key's state only when read. A changelog reads one capture per key per interval
 * out of thousands made, and a 256-byte typed array per event lives off V8's heap: allocating and
 * sweeping one per event cost more than the step itself.
 */
class WaveStateCapture<E> implements StateCapture<E> {
  constructor(
    /** The wave's next states, laid out as the backend wrote them (segment-major, see stepWave). */
    private readonly wave: Float32Array,
    private readonly batch: number,
    private readonly index: number,
    private readonly segments: readonly StateSegment[],
    private readonly size: number,
    readonly steps: number,
    readonly prev: E,
    readonly position: unknown,
    readonly lastSeen: number,
  ) {}

  get state(): Float32Array {
    const out = new Float32Array(this.size);
    for (const seg of this.segments) {
      const from = this.batch * seg.offset + this.index * seg.size;
      for (let j = 0; j < seg.size; j++) out[seg.offset + j] = this.wave[from + j]!;
    }
    return out;
  }
}

/** The result for one input item, emitted in input order. */
export type KeyedStep<In> =
  | {
      readonly kind: 'step';
      readonly item: In;
      readonly key: string;
      /** 1-based index of this event in the key's state history (restarts after eviction). */
      readonly seq: number;
      /** Head output: probabilities (softmax) or values (linear). */
      readonly output: Float32Array;
      /** The key's previous event (before this one), if its state remembers one. */
      readonly prev: unknown;
      /** The key's state after this step, when `captureState` is on. */
      readonly captured?: StateCapture<unknown>;
      /** Sequence numbers skipped right before this event (a consecutive `sequence` only; else 0). */
      readonly gap: number;
    }
  | { readonly kind: 'rejected'; readonly item: In; readonly key: string; readonly reason: string }
  | { readonly kind: 'passthrough'; readonly item: In };

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
      const stepper = new WaveStepper(config, maxBatchSize, scheduler);
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

/** Steps one micro-batch in waves. Holds the batch buffers, sized once for maxBatchSize keys. */
class WaveStepper<In, E> {
  private readonly input: Float32Array;
  private readonly state: Float32Array;
  private readonly next: Float32Array;
  private readonly output: Float32Array;
  private readonly raw: Float64Array;

  constructor(
    private readonly config: RnnByKeyConfig<In, E>,
    maxBatchSize: number,
    private readonly scheduler: SchedulerLike,
  ) {
    const { model } = config.store;
    this.input = new Float32Array(maxBatchSize * model.inputSize);
    this.state = new Float32Array(maxBatchSize * model.stateSize);
    this.next = new Float32Array(maxBatchSize * model.stateSize);
    this.output = new Float32Array(maxBatchSize * model.outputSize);
    this.raw = new Float64Array(model.inputSize);
  }

  run(items: In[]): KeyedStep<In>[] | Promise<KeyedStep<In>[]> {
    const { keyOf } = this.config;
    const results = new Array<KeyedStep<In>>(items.length);
    const keys = new Array<string | undefined>(items.length);
    const occurrences = new Map<string, number>();
    const waves: number[][] = [];
    for (let i = 0; i < items.length; i++) {
      const key = keyOf(items[i]!);
      keys[i] = key;
      if (key === undefined) {
        results[i] = { kind: 'passthrough', item: items[i]! };
        continue;
      }
      const w = occurrences.get(key) ?? 0;
      occurrences.set(key, w + 1);
      (waves[w] ??= []).push(i);
    }
    const now = this.scheduler.now();
    this.config.store.evictIdle(now);
    const next = (w: number): KeyedStep<In>[] | Promise<KeyedStep<In>[]> => {
      for (; w < waves.length; w++) {
        const pending = this.stepWave(waves[w]!, items, keys, results, now);
        if (pending) return pending.then(() => next(w + 1));
      }
      return results;
    };
    return next(0);
  }

  private stepWave(
    indices: number[],
    items: In[],
    keys: (string | undefined)[],
    results: KeyedStep<In>[],
    now: number,
  ): Promise<void> | undefined {
    const { store, features, backend, eventOf, positionOf, captureState, sequence } = this.config;
    const { model } = store;
    const { input, state, next, output, raw } = this;
    const { mean, std } = model.normalization;
    const I = model.inputSize;
    const O = model.outputSize;
    const segments = model.stateSegments;
    const stepping: number[] = [];
    const entries: KeyState<E>[] = [];
    const gaps: number[] = [];
    for (const i of indices) {
      const key = keys[i]!;
      const entry = store.acquire(key, now);
      const event = eventOf(items[i]!);
      let gap = 0;
      if (sequence && entry.prev !== undefined) {
        const seq = sequence.of(event);
        const last = sequence.of(entry.prev);
        if (!(seq > last)) {
          const what = seq === last ? 'duplicate' : 'out of order';
          results[i] = { kind: 'rejected', item: items[i]!, key, reason: `${what}: ${sequence.field} ${seq} is not after the key's last applied ${sequence.field} ${last}` };
          continue;
        }
        if (sequence.consecutive && seq > last + 1) gap = seq - last - 1;
      }
      raw.fill(Number.NaN);
      features(event, entry.prev, raw);
      const b = stepping.length;
      let bad = -1;
      for (let f = 0; f < I; f++) {
        const v = (raw[f]! - mean[f]!) / std[f]!;
        if (!Number.isFinite(v)) bad = f;
        input[b * I + f] = v;
      }
      if (bad >= 0) {
        results[i] = { kind: 'rejected', item: items[i]!, key, reason: `feature "${model.features[bad]}" is not finite (${raw[bad]})` };
        continue;
      }
      stepping.push(i);
      entries.push(entry);
      gaps.push(gap);
    }
    const B = stepping.length;
    if (B === 0) return undefined;
    // Gather and scatter with plain loops: a subarray view per key and segment costs more than
    // copying a few dozen floats.
    for (let b = 0; b < B; b++) {
      const keyState = entries[b]!.state;
      for (const seg of segments) {
        const to = B * seg.offset + b * seg.size;
        for (let j = 0; j < seg.size; j++) state[to + j] = keyState[seg.offset + j]!;
      }
    }
    const scatter = (): void => {
      // One copy of the wave's next states serves every capture in it (see WaveStateCapture).
      const wave = captureState ? next.slice(0, B * model.stateSize) : undefined;
      for (let b = 0; b < B; b++) {
        const i = stepping[b]!;
        const entry = entries[b]!;
        const item = items[i]!;
        for (const seg of segments) {
          const from = B * seg.offset + b * seg.size;
          for (let j = 0; j < seg.size; j++) entry.state[seg.offset + j] = next[from + j]!;
        }
        const prev = entry.prev;
        entry.prev = eventOf(item);
        entry.steps++;
        entry.position = positionOf?.(item);
        // A small typed array of its own lives on V8's heap and is cheaper than a view.
        const out = new Float32Array(O);
        for (let k = 0; k < O; k++) out[k] = output[b * O + k]!;
        const captured = wave
          ? new WaveStateCapture(wave, B, b, segments, model.stateSize, entry.steps, entry.prev, entry.position, entry.lastSeen)
          : undefined;
        results[i] = { kind: 'step', item, key: entry.key, seq: entry.steps, output: out, prev, captured, gap: gaps[b]! };
      }
    };
    const pending = backend.step(B, input, state, next, output);
    if (pending) return pending.then(scatter);
    scatter();
    return undefined;
  }
}
