/**
 * The runner: one Source, the shared operator chain, one Sink. Replay (a fixture file into JSON
 * Lines) and the Kafka service (a consumer group into producers, at least once or exactly once)
 * are this same runner with different Source/Sink pairs; see docs/architecture.md.
 *
 * ```
 * source.start(host) ─▶ count in ─▶ predict() ─▶ count out ─▶ writeTo(sink)
 * ```
 *
 * Besides the flow, the runner owns what joins state to partitions:
 * - revoked: once none of its events is still being stepped, the partition's keys leave the store;
 * - newly assigned (`prepare`): once none of its earlier events is still being stepped, its keys
 *   leave the store, the sink fences the partition's earlier writers and says where its committed
 *   outputs end, and the restorer reads its state back; only then do its records flow;
 * - lost (the sink could not make its outputs durable: a fenced transaction): the source rejoins,
 *   and the partition is prepared again from what is committed.
 */
import { lastValueFrom, Observable, tap, type OperatorFunction } from 'rxjs';
import type { RnnModel } from '../core/model.js';
import { RnnStreamError } from '../core/errors.js';
import { silentLogger, type Logger } from '../observability/logger.js';
import type { SourcePosition } from '../operators/records.js';
import type { PipelineDefinition } from '../pipeline/define.js';
import { predict, type PipelineOutput, type PredictOptions } from '../pipeline/predict.js';
import type { KeyStateStore } from '../state/key-state-store.js';
import type { PartitionHost, Rejoin, Sink, Source, StateRestorer } from './types.js';

export interface RunnerParts {
  readonly source: Source;
  readonly sink: Sink;
  readonly restorer?: StateRestorer;
  readonly pipeline: PipelineDefinition;
  readonly model: RnnModel;
  readonly store: KeyStateStore;
  /** The operator chain's options (the store is the one above). */
  readonly predict: Omit<PredictOptions, 'store'>;
  readonly logger?: Logger;
  /**
   * How long a rejoin after lost partitions may take to drain what is in flight (see
   * Source.restart); past it the run fails. Unset: no deadline.
   */
  readonly rejoinDrainTimeoutMs?: number;
  /** Partitions whose outputs the sink dropped (see Sink.onLost), for metrics. */
  readonly onLost?: (partitions: readonly number[]) => void;
}

export interface PipelineRun {
  /**
   * Resolves once the source has completed and the sink has made every output durable; rejects
   * with the first failure (the source's, the chain's, or one the sink cannot retry).
   */
  readonly done: Promise<void>;
  /** Stops the source; `done` then settles once what was handed on is flushed. */
  stop(): Promise<void>;
  /**
   * Fails the run from outside (the service saw its topics change under it): `done` rejects with
   * `err` at once, and the caller stops without committing what is in flight.
   */
  fail(err: Error): void;
  /** Events handed on by the source and not yet out of the operator chain (all partitions). */
  readonly stepping: number;
}

/** The input partition of a record: Kafka's, or 0 for a file or memory. */
export const partitionOf = (source: SourcePosition): number => (source.kind === 'kafka' ? source.partition : 0);

/** Per partition, events between the source and the end of the operator chain; waits for none. */
class InFlight {
  /** Indexed by partition (a dense array: two updates per event). */
  private readonly counts: number[] = [];
  private readonly waiters = new Map<number, (() => void)[]>();
  private total = 0;

  get size(): number {
    return this.total;
  }

  add(partition: number): void {
    this.counts[partition] = (this.counts[partition] ?? 0) + 1;
    this.total++;
  }

  remove(partition: number): void {
    const n = --this.counts[partition]!;
    this.total--;
    if (n > 0 || this.waiters.size === 0) return;
    const waiting = this.waiters.get(partition);
    if (waiting) {
      this.waiters.delete(partition);
      for (const w of waiting) w();
    }
    if (this.total === 0) for (const w of this.waiters.get(-1)?.splice(0) ?? []) w();
  }

  /** Resolves when none of `partition`'s events (all partitions' with -1) is in flight. */
  idle(partition: number): Promise<void> {
    if (partition === -1 ? this.total === 0 : !this.counts[partition]) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.waiters.get(partition) ?? [];
      list.push(resolve);
      this.waiters.set(partition, list);
    });
  }
}

export function runPipeline(parts: RunnerParts): PipelineRun {
  const { source, sink, restorer, store } = parts;
  const logger = parts.logger ?? silentLogger;
  const inFlight = new InFlight();
  let owned = new Set<number>();
  let failed: ((err: Error) => void) | undefined;
  const failure = new Promise<never>((_, reject) => (failed = reject));
  failure.catch(() => undefined);

  const host: PartitionHost = {
    assigned(partitions) {
      const now = new Set(partitions);
      const revoked = [...owned].filter((p) => !now.has(p));
      if (revoked.length) logger.info({ revoked }, 'partitions revoked');
      for (const p of revoked) {
        // Its events still being stepped would put keys back; drop them once those are out.
        void inFlight.idle(p).then(() => {
          if (!owned.has(p)) {
            const dropped = store.dropPartition(p);
            if (dropped) logger.info({ partition: p, keys: dropped }, 'state of a revoked partition dropped');
          }
        });
      }
      owned = now;
      sink.assigned?.(partitions);
      restorer?.assigned?.(partitions);
    },
    async prepare(partition) {
      // Earlier events of this partition (from before it was revoked, or lost) must be out of
      // the chain first: stepped later, they would write over the restored state.
      await inFlight.idle(partition);
      store.dropPartition(partition);
      const from = await sink.prepare?.(partition);
      await restorer?.restore(partition);
      return from;
    },
  };

  sink.onLost = (lost, reason) => {
    logger.warn({ partitions: lost, reason }, 'outputs of partitions dropped; rejoining to restore them from what is committed');
    parts.onLost?.(lost);
    for (const p of lost) owned.delete(p);
    if (!source.restart) {
      failed?.(new RnnStreamError(`outputs of partitions ${lost.join(', ')} were dropped (${reason}) and this source cannot rejoin`));
      return;
    }
    const rejoin: Rejoin = {
      drain: async () => {
        await inFlight.idle(-1);
        await sink.flush();
      },
      forget: (partitions) => {
        for (const p of partitions) store.dropPartition(p);
      },
      drainTimeoutMs: parts.rejoinDrainTimeoutMs ?? Number.POSITIVE_INFINITY,
    };
    source.restart(lost, rejoin).catch((err: Error) => failed?.(err));
  };

  const chain = predict(parts.pipeline, parts.model, { ...parts.predict, store });
  const outputs = source.fixedAssignment
    ? source.start(host).pipe(chain, writeTo(sink))
    : source.start(host).pipe(
        tap((r) => inFlight.add(partitionOf(r.source))),
        chain,
        tap((o) => inFlight.remove(partitionOf(o.source))),
        writeTo(sink),
      );
  const done = Promise.race([lastValueFrom(outputs, { defaultValue: undefined }), failure]).then(() => undefined);
  return {
    done,
    stop: () => source.stop(),
    fail: (err) => failed?.(err),
    get stepping() {
      return inFlight.size;
    },
  };
}

/**
 * Hands every output to `sink` as it arrives and completes once the sink has made all of them
 * durable; errors if the source errors or the sink fails. Emits nothing: the outputs leave
 * through the sink.
 *
 * ```
 * outputs:  -a-b-c----|
 * sink:      a b c       (written on arrival)
 * failure:  ------#     (a failure no retry cures: the stream errors at once)
 * writeTo:  ----------(flush)|
 * ```
 */
export function writeTo(sink: Sink): OperatorFunction<PipelineOutput, never> {
  return (source) =>
    new Observable<never>((subscriber) => {
      // A failed sink ends the stream at once, with its error (outputs after it would be lost).
      sink.failure.catch((err: unknown) => subscriber.error(err));
      return source.subscribe({
        next: (r) => sink.write(r),
        error: (err: unknown) => subscriber.error(err),
        complete: () =>
          void sink.flush().then(
            () => subscriber.complete(),
            (err: unknown) => subscriber.error(err),
          ),
      });
    });
}
