/**
 * What the runner joins (run-pipeline.ts): a Source of positioned raw records, the operator chain
 * (decodeEvents, rnnByKey, prediction records), and a Sink that makes outputs durable.
 *
 * ```
 *   Source ──records──▶ predict() ──outputs──▶ Sink
 *     │                                          │
 *     └─ partitions assigned / revoked ──▶ runner ◀─ partitions lost (fenced)
 * ```
 *
 * A fixture file is one partition (0), assigned once; a Kafka consumer's partitions come and go
 * with the group's rebalances. Per partition, records come in order and each record is handed on
 * at most once per assignment.
 */
import type { Observable } from 'rxjs';
import type { RawRecord } from '../operators/records.js';
import type { PipelineOutput } from '../pipeline/predict.js';

/** What a Source asks of the runner about its partitions. */
export interface PartitionHost {
  /** The partitions this member owns now (after each rebalance); any it owned before and not now are revoked. */
  assigned(partitions: readonly number[]): void;
  /**
   * Resolves when a newly assigned partition's records may flow (its earlier writers fenced and
   * its state restored), with the first offset to hand on: records below it are already in the
   * partition's committed outputs and state (undefined: the source's own position holds).
   */
  prepare(partition: number): Promise<number | undefined>;
}

export interface Source {
  /** For logs and the replay summary. */
  readonly name: string;
  /**
   * Its assignment never changes after the first record (a file: partition 0, prepared once
   * before it is read), so the runner need not count events in flight per partition.
   */
  readonly fixedAssignment?: boolean;
  /**
   * The records, in order per partition. Tells `host` of assignments and waits on its
   * `prepare` before a newly assigned partition's first record. Completes after `stop`.
   */
  start(host: PartitionHost): Observable<RawRecord>;
  /** Stops handing on records and completes the Observable (what was handed on stays in flight). */
  stop(): Promise<void>;
  /**
   * Leaves and rejoins (a Kafka consumer group): every partition is assigned anew, and the
   * partitions in `lost` (whose outputs were dropped) are prepared again from their committed
   * position. Resolves when the source is consuming again; rejects if the drain outlasts its
   * deadline. Partitions lost while a restart is under way join it.
   */
  restart?(lost: readonly number[], rejoin: Rejoin): Promise<void>;
}

/** What a source's restart asks of the runner. */
export interface Rejoin {
  /** Resolves once what is in flight has been stepped and made durable (or dropped). */
  drain(): Promise<void>;
  /** After the drain: forgets the state of every partition lost up to then (also those lost while draining). */
  forget(partitions: readonly number[]): void;
  /** The drain's deadline (ms); past it the restart rejects rather than stay paused, owning partitions it does not serve. */
  readonly drainTimeoutMs: number;
}

/** Counts of one batch of outputs made durable, by kind (each is one input event). */
export interface WrittenCounts {
  readonly predictions: number;
  /** Events missing by the pipeline's sequence, right before these predictions' events. */
  readonly sequenceGaps: number;
  readonly deadLetters: number;
  readonly skipped: number;
  /** The input records' timestamps (ms since the epoch) of these outputs' events, where the source has them. */
  readonly inputTimes?: Float64Array;
}

export interface Sink {
  /** Takes one output; outputs arrive in input order per partition. */
  write(output: PipelineOutput): void;
  /** Resolves once every output written so far is durable (outputs, state and position); rejects if the sink failed. */
  flush(): Promise<void>;
  /** Rejects with the first failure no retry cures: the stream must stop, not go on uncommitted. */
  readonly failure: Promise<never>;
  /** A hard stop: no more retries; what is not durable stays uncommitted (and is redelivered). */
  abort(): void;
  /** The partitions this member owns now: state and positions of others are dropped, not written. */
  assigned?(partitions: readonly number[]): void;
  /**
   * Before a newly assigned partition's records flow: fence its earlier writers (a zombie's open
   * transaction is aborted) and return the first offset not yet committed; undefined when the
   * sink does not know one.
   */
  prepare?(partition: number): Promise<number | undefined>;
  /**
   * Called by the sink when a partition's outputs could not be made durable and were dropped
   * (exactly-once: the partition's producer was fenced): the runner restores the partition from
   * what is committed. Set by the runner.
   */
  onLost?: (partitions: readonly number[], reason: string) => void;
}

/** Restores a partition's keys from where state is kept durably (a changelog). */
export interface StateRestorer {
  /** Reads the partition's state into the store; resolves when done. */
  restore(partition: number): Promise<void>;
  /** The partitions owned now (a restorer may drop what it remembers of the others). */
  assigned?(partitions: readonly number[]): void;
  stop?(): Promise<void>;
}
