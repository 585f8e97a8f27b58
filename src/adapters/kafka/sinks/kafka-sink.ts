/**
 * The service's Sink: pipeline outputs to Kafka, with one of two commit strategies.
 *
 * - at least once (at-least-once.ts): outputs first, then the changelog, then the offsets;
 * - exactly once (exactly-once.ts): per input partition, outputs, changelog and offset in one
 *   transaction.
 *
 * What both share lives here and in OutputBatch: how an output is taken (packed as record bytes
 * into its batch, its key's state into the batch's changelog captures), how a failure no retry
 * cures stops the stream, how a hard stop ends retries, and how a revoked partition is let go.
 * A strategy decides which batch an output goes to and when a batch is sent and committed.
 * Neither holds the state store nor manages device memory: a batch's ChangelogBatch (the state
 * engine's) does.
 */
import type { PipelineOutput } from '../../../pipeline/predict.js';
import type { Sink } from '../../../runner/types.js';
import type { MarkerRequest } from './model-marks.js';

/** What a commit strategy shares with the sink around it. */
export interface SinkControl {
  /** The first failure no retry cures; nothing is committed after it. */
  readonly failed: Error | undefined;
  /** A hard stop: no more retries, nothing more committed. */
  readonly aborted: boolean;
  /** Fails the sink (once): the stream stops with `err`. */
  fail(err: Error): void;
}

/** When outputs are sent and committed: the part in which at least once and exactly once differ. */
export interface CommitStrategy {
  /**
   * Takes one output: into the batch it belongs to (OutputBatch.add, the same for both), its
   * offset noted for the commit, its sending scheduled; or dropped, when its partition's outputs are.
   */
  take(r: PipelineOutput): void;
  /** The input partitions owned now: what the others gathered is dropped, their state not written. */
  assigned(owned: ReadonlySet<number>): void;
  /** See Sink.prepare. */
  prepare?(partition: number): Promise<number | undefined>;
  /** Resolves once every output added so far is acknowledged by the broker. */
  drain(): Promise<void>;
  /** Resolves once every output added so far is durable: acknowledged, its state logged, its offset committed. */
  flush(): Promise<void>;
  /** See KafkaSink.markModel. */
  markModel(partition: number, marker: MarkerRequest): void;
  /** Cuts retries and waits short (the sink's abort). */
  abort(): void;
  disconnect(): Promise<void>;
  /** Set by the sink: see Sink.onLost. */
  onLost?: (partitions: readonly number[], reason: string) => void;
}

export class KafkaSink implements Sink, SinkControl {
  failed: Error | undefined;
  aborted = false;
  private onFailure: ((err: Error) => void) | undefined;
  /** Rejects with the first failure (a send no retry cures): the stream must stop, not go on uncommitted. */
  readonly failure: Promise<never> = new Promise<never>((_, reject) => (this.onFailure = reject));
  private readonly commits: CommitStrategy;

  /** `strategy` makes the commit strategy, given the control it shares with this sink. */
  constructor(strategy: (control: SinkControl) => CommitStrategy) {
    // Observed here, so that a sink nobody watches (a test's) raises no unhandled rejection.
    this.failure.catch(() => undefined);
    this.commits = strategy(this);
  }

  set onLost(handler: ((partitions: readonly number[], reason: string) => void) | undefined) {
    this.commits.onLost = handler;
  }

  get onLost(): ((partitions: readonly number[], reason: string) => void) | undefined {
    return this.commits.onLost;
  }

  /**
   * Records in the changelog, with `partition`'s next output, that `marker`'s model serves the
   * partition from that output's input offset on (a hot swap; state/model-marker.ts).
   */
  markModel(partition: number, marker: MarkerRequest): void {
    this.commits.markModel(partition, marker);
  }

  fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.onFailure?.(err);
  }

  /**
   * Adds one output to its batch: a prediction as its record's bytes (an event waiting for its
   * request holds a few hundred bytes outside V8's heap rather than a graph of objects every
   * young-generation GC would copy), with its key's state right after it (the latest acknowledged
   * one per key is what goes to the changelog).
   */
  write(r: PipelineOutput): void {
    if (this.failed) return; // nothing more is committed; the stream is failing already
    this.commits.take(r);
  }

  assigned(partitions: readonly number[]): void {
    this.commits.assigned(new Set(partitions));
  }

  prepare(partition: number): Promise<number | undefined> {
    return this.commits.prepare ? this.commits.prepare(partition) : Promise.resolve(undefined);
  }

  /** Resolves once every output added so far is acknowledged; rejects if the sink failed. */
  async drain(): Promise<void> {
    await this.commits.drain();
    if (this.failed) throw this.failed;
  }

  /** Resolves once every output added so far is durable; rejects if the sink failed. After abort() it resolves at once. */
  async flush(): Promise<void> {
    await this.commits.flush();
    if (this.failed) throw this.failed;
  }

  /**
   * Stops retrying (a hard stop); outputs not yet durable are then left uncommitted, and no
   * changelog record or offset is written from now on (a stop after a fault commits nothing past it).
   */
  abort(): void {
    this.aborted = true;
    this.commits.abort();
  }

  disconnect(): Promise<void> {
    return this.commits.disconnect();
  }
}
