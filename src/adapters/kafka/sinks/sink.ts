/**
 * The at-least-once Sink: writes pipeline outputs to Kafka and only then commits their input
 * offsets:
 *
 *   1. predictions (output topic) and dead letters (DLQ topic), keyed like the input; await acks
 *   2. each touched key's state after its last acknowledged event (changelog topic, the input's
 *      partition); await acks
 *   3. commit, per input partition, the offset after the last acknowledged event
 *
 * Outputs are packed into the next produce request as they arrive (`add`): predictions as JSON
 * bytes, so an event waiting for its request holds a few hundred bytes outside V8's heap rather
 * than a graph of objects that every young-generation GC would copy (at 16k events in flight
 * that copying cost more than the model's step). One request is in flight at a time, in order;
 * outputs arriving meanwhile form the next one, up to `produceBatchSize` records.
 *
 * Steps 2 and 3 run beside step 1 of the next requests, at most once per `commitIntervalMs`,
 * merged over every request acknowledged meanwhile (one changelog record per key per interval:
 * Kafka Streams' commit.interval.ms and Quix's commit_interval do the same). A snapshot in the
 * changelog never runs ahead of acknowledged outputs, and a commit never runs ahead of either: a
 * crash at any point loses nothing, and redelivered events that the restored state already
 * reflects are recognised and not applied twice. A longer interval means fewer changelog records
 * and more redelivered (and skipped) events after a crash. A failing produce is retried with
 * exponential backoff until it succeeds or the service is stopped; it never skips.
 */
import type { Consumer, Message } from 'kafkajs';
import type { Logger } from '../../../observability/logger.js';
import type { PipelineOutput } from '../../../pipeline/predict.js';
import type { Sink, WrittenCounts } from '../../../runner/types.js';
import { InputTimes } from './input-times.js';
import { writePredictionJson, type DeadLetterLimits } from '../../../pipeline/serialize.js';
import { dropCapture } from '../../../state/deferred-captures.js';
import type { KeySnapshot, KeyStateStore } from '../../../state/key-state-store.js';
import { offsetAtLeast } from '../consumer/offsets.js';
import { changelogMessage, deadLetterMessage, readChangelogStates } from './output-records.js';
import type { RecordProducer } from '../producer/producer-thread.js';
import { packMessages, RecordPacker, type WireTopicMessages } from '../producer/record-packer.js';
import { wakeableSleep } from '../../sleep.js';

export interface SinkTopics {
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly changelogTopic: string;
}

export interface SinkHooks {
  /** Called when a request's outputs are acknowledged by the broker (its events may leave the queue). */
  onWritten?(counts: WrittenCounts): void;
  /** Called when acknowledged events' state is in the changelog and their offsets are committed. */
  onCommitted?(events: number): void;
}

export interface SinkOptions {
  /** Least time between changelog-and-commit writes (0: after every acknowledged request). */
  readonly commitIntervalMs: number;
  /** Most prediction records per produce request. */
  readonly produceBatchSize: number;
  /** The size of a dead letter (below the DLQ topic's max.message.bytes) and of its kept input. */
  readonly deadLetterLimits?: DeadLetterLimits;
  /** The dead-letter topic's partitions (dead letters of input partition p go to p modulo this). */
  readonly dlqPartitions: number;
}


type Commit = { topic: string; partition: number; offset: string };

/**
 * Keeps, per input partition, the highest offset seen. Keyed by partition alone: the service
 * consumes one input topic (a second topic's partition would need the topic in the key).
 */
function raiseCommit(commits: Map<number, Commit>, topic: string, partition: number, offset: string): void {
  const seen = commits.get(partition);
  // Raised in place: this runs once per output record.
  if (!seen) commits.set(partition, { topic, partition, offset });
  else if (!offsetAtLeast(seen.offset, offset)) seen.offset = offset;
}

/** The input partition a captured state belongs to: that of the event it reflects (its position). */
const partitionOfState = (s: KeySnapshot): number | undefined => s.position?.partition;

/** A produce request being filled (predictions in the packer) or waiting to be sent. */
interface Request {
  outputs: WireTopicMessages[];
  deadLetters: Message[];
  /** The latest state capture per key (each names its source position). */
  states: Map<string, KeySnapshot>;
  /** Keys whose latest event was their last (`ends`): the changelog forgets them (a tombstone). */
  ended: Set<string>;
  commits: Map<number, Commit>;
  predictions: number;
  sequenceGaps: number;
  deadLetterCount: number;
  skipped: number;
  inputTimes: InputTimes;
}

const newRequest = (): Request => ({
  outputs: [],
  deadLetters: [],
  states: new Map(),
  ended: new Set(),
  commits: new Map(),
  predictions: 0,
  sequenceGaps: 0,
  deadLetterCount: 0,
  skipped: 0,
  inputTimes: new InputTimes(),
});
const eventsIn = (r: Request): number => r.predictions + r.deadLetterCount + r.skipped;

export class KafkaSink implements Sink {
  private failed: Error | undefined;
  private aborted = false;
  private onFailure: ((err: Error) => void) | undefined;
  /** Rejects with the first failure (a send no retry cures): the stream must stop, not go on uncommitted. */
  readonly failure: Promise<never> = new Promise<never>((_, reject) => (this.onFailure = reject));
  /** The request outputs are added to; its predictions are in `packer`. */
  private open = newRequest();
  private readonly packer = new RecordPacker();
  /** A post of the open request is scheduled for the next microtask. */
  private postScheduled = false;
  /** Every posted request's acknowledgement, handled in posting order. */
  private tail: Promise<void> = Promise.resolve();
  /** Changelog and commit work not yet started, merged across requests (latest state per key). */
  private pendingState = new Map<string, KeySnapshot>();
  private pendingEnded = new Set<string>();
  private pendingCommits = new Map<number, Commit>();
  private pendingEvents = 0;
  private flushing: Promise<void> | undefined;
  private lastFlushAt = -Infinity;
  /** Cuts the wait for the next interval short (flush on shutdown). */
  private wake: (() => void) | undefined;
  private hurry = false;
  /** The input partitions this member owns (undefined until the first assignment: all). */
  private owned: Set<number> | undefined;

  constructor(
    private readonly producer: RecordProducer,
    private readonly consumer: Consumer,
    private readonly topics: SinkTopics,
    private readonly store: KeyStateStore,
    private readonly logger: Logger,
    private readonly hooks: SinkHooks = {},
    private readonly options: SinkOptions = { commitIntervalMs: 0, produceBatchSize: 5000, dlqPartitions: 1 },
  ) {
    // Observed here, so that a sink nobody watches (a test's) raises no unhandled rejection.
    this.failure.catch(() => undefined);
  }

  /**
   * The input partitions this member owns now (after each rebalance). State and offsets of a
   * partition it no longer owns are dropped, not written: its new owner restores from the
   * changelog and writes that partition's keys from then on, and a late write of this member's
   * (older) state after the new owner's would be the record log compaction keeps. Outputs already
   * posted still go out (duplicates carry their source offset).
   */
  assigned(partitions: readonly number[]): void {
    this.owned = new Set(partitions);
    let dropped = 0;
    for (const [key, s] of this.pendingState) {
      if (this.owns(partitionOfState(s))) continue;
      dropCapture(s);
      this.pendingState.delete(key);
      this.pendingEnded.delete(key);
      dropped++;
    }
    for (const p of this.pendingCommits.keys()) if (!this.owns(p)) this.pendingCommits.delete(p);
    if (dropped > 0) this.logger.info({ keys: dropped, partitions }, 'state of revoked partitions not written to the changelog');
  }

  private owns(partition: number | undefined): boolean {
    return partition === undefined || this.owned === undefined || this.owned.has(partition);
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.onFailure?.(err);
  }

  /**
   * Stops retrying (a hard stop); outputs not yet acknowledged are then left uncommitted, and no
   * changelog record or offset is written from now on (a stop after a fault commits nothing past it).
   */
  abort(): void {
    this.aborted = true;
    this.producer.abort();
  }

  /**
   * Adds one output to the next produce request. Each prediction carries its key's state right
   * after it (rnnByKey's captureState); the latest acknowledged one per key is what goes to the
   * changelog. The request is posted on the next microtask (or when it holds produceBatchSize
   * predictions), so outputs emitted together (a stepped micro-batch) go as one; the producer
   * queues posted requests and sends them in order, merging those that wait.
   */
  write(r: PipelineOutput): void {
    if (this.failed) return; // nothing more is committed; the stream is failing already
    const o = this.open;
    if (r.source.kind === 'kafka') {
      raiseCommit(o.commits, r.source.topic, r.source.partition, r.source.offset);
      o.inputTimes.add(r.source.timestamp);
    }
    if (r.kind === 'prediction') {
      const { packer } = this;
      packer.key(r.key);
      writePredictionJson(r, packer.writer);
      packer.end();
      o.predictions++;
      if (r.sequenceGap) o.sequenceGaps += r.sequenceGap;
      if (r.state) {
        // A newer capture of the key replaces this request's: the older one is never read.
        dropCapture(o.states.get(r.key));
        o.states.set(r.key, r.state);
      }
      if (r.ended) o.ended.add(r.key);
      else if (o.ended.size > 0) o.ended.delete(r.key);
      if (packer.count >= this.options.produceBatchSize) this.post();
    } else if (r.kind === 'dead-letter') {
      o.deadLetters.push(deadLetterMessage(r, this.options.deadLetterLimits, this.options.dlqPartitions));
      o.deadLetterCount++;
    } else {
      o.skipped++;
    }
    if (!this.postScheduled) {
      this.postScheduled = true;
      queueMicrotask(() => {
        this.postScheduled = false;
        this.post();
      });
    }
  }

  /** Resolves once every output added so far is acknowledged; rejects if the sink failed. */
  async drain(): Promise<void> {
    this.post();
    for (let tail = this.tail; ; tail = this.tail) {
      await tail;
      if (tail === this.tail) break;
    }
    if (this.failed) throw this.failed;
  }

  /** Resolves once every output added so far is acknowledged and committed; rejects if one failed. */
  async flush(): Promise<void> {
    await this.drain();
    this.hurry = true;
    this.wake?.();
    try {
      while (this.flushing) await this.flushing;
    } finally {
      this.hurry = false;
    }
    if (this.failed) throw this.failed;
  }

  /** Closes the open request (if it holds anything) and hands it to the producer. */
  private post(): void {
    const o = this.open;
    if (eventsIn(o) === 0 || this.failed) return;
    if (this.packer.count > 0) o.outputs.push(this.packer.finish(this.topics.outputTopic));
    if (o.deadLetters.length > 0) o.outputs.push(packMessages(this.topics.dlqTopic, o.deadLetters));
    o.deadLetters = [];
    this.open = newRequest();
    const sent = o.outputs.length > 0 ? this.producer.sendPacked(o.outputs) : Promise.resolve();
    // Observed now (a rejection waits for the chain below; it must not count as unhandled).
    sent.catch(() => undefined);
    this.tail = this.tail
      .then(() => sent)
      .then(
        // Nothing posted after a failed request is acknowledged (its commit would pass the failure).
        () => (this.failed ? undefined : this.acknowledged(o)),
        (err: unknown) => {
          this.fail(err as Error);
        },
      );
  }

  /** Only now, with the outputs acknowledged, may their state reach the changelog and their offsets be committed. */
  private acknowledged(request: Request): void {
    for (const [key, s] of request.states) {
      if (!this.owns(partitionOfState(s))) {
        dropCapture(s);
        continue;
      }
      dropCapture(this.pendingState.get(key));
      this.pendingState.set(key, s);
      if (request.ended.has(key)) this.pendingEnded.add(key);
      else this.pendingEnded.delete(key);
    }
    for (const c of request.commits.values()) if (this.owns(c.partition)) raiseCommit(this.pendingCommits, c.topic, c.partition, c.offset);
    this.pendingEvents += eventsIn(request);
    this.hooks.onWritten?.({ predictions: request.predictions, sequenceGaps: request.sequenceGaps, deadLetters: request.deadLetterCount, skipped: request.skipped, inputTimes: request.inputTimes.view() });
    this.flushing ??= this.flushPending().finally(() => (this.flushing = undefined));
  }

  private async flushPending(): Promise<void> {
    try {
      while (this.pendingEvents > 0 && !this.failed && !this.aborted) {
        const wait = this.lastFlushAt + this.options.commitIntervalMs - performance.now();
        if (wait > 0 && !this.hurry) {
          const sleep = wakeableSleep(wait);
          this.wake = sleep.wake;
          await sleep.done;
          this.wake = undefined;
        }
        this.lastFlushAt = performance.now();
        const states = this.pendingState;
        const ended = this.pendingEnded;
        const commits = this.pendingCommits;
        const events = this.pendingEvents;
        this.pendingState = new Map();
        this.pendingEnded = new Set();
        this.pendingCommits = new Map();
        this.pendingEvents = 0;
        await this.changelogAndCommit(states, ended, commits);
        this.hooks.onCommitted?.(events);
      }
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private async changelogAndCommit(lastState: Map<string, KeySnapshot>, ended: Set<string>, commits: Map<number, Commit>): Promise<void> {
    const messages: Message[] = [];
    // A rebalance may have come while this flush waited for its interval.
    const owned: [string, KeySnapshot][] = [];
    for (const [key, s] of lastState) {
      if (this.owns(partitionOfState(s))) owned.push([key, s]);
      else dropCapture(s);
    }
    await readChangelogStates(owned, ended);
    // The changelog is partitioned like the input: the key's state goes to its input partition.
    for (const [key, s] of owned) messages.push(changelogMessage(this.store, key, s, ended.has(key)));
    // Queued behind the outputs posted so far, retried until acknowledged (the producer's OrderedSender).
    if (messages.length > 0 && !this.aborted) await this.producer.sendPacked([packMessages(this.topics.changelogTopic, messages)]);
    for (const p of commits.keys()) if (!this.owns(p)) commits.delete(p);
    if (commits.size && !this.aborted) {
      const offsets = [...commits.values()].map((c) => ({ topic: c.topic, partition: c.partition, offset: (BigInt(c.offset) + 1n).toString() }));
      try {
        await this.consumer.commitOffsets(offsets);
      } catch (err) {
        // After a rebalance the partition may belong to another member now: its next owner
        // resumes from the last commit and skips what the changelog shows as applied.
        this.logger.warn({ err: (err as Error).message, offsets }, 'offset commit failed; the partition will be resumed from its last commit');
      }
    }
  }
}
