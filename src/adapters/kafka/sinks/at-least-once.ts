/**
 * At least once: outputs are written to Kafka and only then their input offsets committed.
 *
 *   1. predictions (output topic) and dead letters (DLQ topic), keyed like the input; await acks
 *   2. each touched key's state after its last acknowledged event (changelog topic, the input's
 *      partition); await acks
 *   3. commit, per input partition, the offset after the last acknowledged event
 *
 * Outputs go into the open request as they arrive. One request is in flight at a time, in order;
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
import type { Consumer } from 'kafkajs';
import type { Logger } from '../../../observability/logger.js';
import type { PipelineOutput } from '../../../pipeline/predict.js';
import type { WrittenCounts } from '../../../runner/types.js';
import type { ChangelogBatch, ChangelogRecord } from '../../../state/changelog-batch.js';
import { wakeableSleep } from '../../sleep.js';
import { offsetAtLeast } from '../consumer/offsets.js';
import type { RecordProducer } from '../producer/producer-thread.js';
import { RecordPacker } from '../producer/record-packer.js';
import type { CommitStrategy, SinkControl } from './kafka-sink.js';
import { changelogMessages, OutputBatch, type DeadLetterSettings, type SinkTopics } from './output-batch.js';
import { ModelMarks, type MarkerRequest } from './model-marks.js';

export interface AtLeastOnceHooks {
  /** Called when a request's outputs are acknowledged by the broker (its events may leave the queue). */
  onWritten?(counts: WrittenCounts): void;
  /** Called when acknowledged events' state is in the changelog and their offsets are committed. */
  onCommitted?(events: number): void;
}

export interface AtLeastOnceParts {
  readonly producer: RecordProducer;
  /** Commits the offsets (the group's consumer). */
  readonly consumer: Consumer;
  readonly topics: SinkTopics;
  /** A new, empty batch of changelog captures (the state store's changelogBatch). */
  readonly changelog: () => ChangelogBatch;
  readonly logger: Logger;
  readonly hooks?: AtLeastOnceHooks;
  /** Least time between changelog-and-commit writes (0: after every acknowledged request). */
  readonly commitIntervalMs: number;
  /** Most prediction records per produce request. */
  readonly produceBatchSize: number;
  readonly deadLetters: DeadLetterSettings;
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

/** A produce request being filled, or waiting to be sent: its outputs and the offsets they complete. */
class Request extends OutputBatch {
  readonly commits = new Map<number, Commit>();
}

export const atLeastOnce =
  (parts: AtLeastOnceParts) =>
  (control: SinkControl): CommitStrategy =>
    new AtLeastOnceCommits(parts, control);

class AtLeastOnceCommits implements CommitStrategy {
  private readonly packer = new RecordPacker();
  /** The request outputs are added to. */
  private open: Request;
  /** A post of the open request is scheduled for the next microtask. */
  private postScheduled = false;
  /** Every posted request's acknowledgement, handled in posting order. */
  private tail: Promise<void> = Promise.resolve();
  /** Changelog and commit work not yet started, merged across acknowledged requests (latest state per key). */
  private pendingState: ChangelogBatch;
  private pendingCommits = new Map<number, Commit>();
  /** Model markers of acknowledged outputs, for the next changelog write. */
  private pendingMarkers: ChangelogRecord[] = [];
  private readonly marks = new ModelMarks();
  private pendingEvents = 0;
  private flushing: Promise<void> | undefined;
  private lastFlushAt = -Infinity;
  /** Cuts the wait for the next interval short (flush on shutdown). */
  private wake: (() => void) | undefined;
  private hurry = false;
  /** The input partitions this member owns (undefined until the first assignment: all). */
  private owned: ReadonlySet<number> | undefined;
  private readonly owns = (partition: number | undefined): boolean => partition === undefined || this.owned === undefined || this.owned.has(partition);

  constructor(
    private readonly parts: AtLeastOnceParts,
    private readonly control: SinkControl,
  ) {
    this.open = this.newRequest();
    this.pendingState = parts.changelog();
  }

  private newRequest(): Request {
    // One packer for every request: a request is packed before the next one takes outputs.
    return new Request(this.parts.changelog(), this.parts.deadLetters, this.packer);
  }

  /**
   * Into the open request, which is posted on the next microtask (or when it holds
   * produceBatchSize predictions), so outputs emitted together (a stepped micro-batch) go as one;
   * the producer queues posted requests and sends them in order, merging those that wait.
   */
  take(r: PipelineOutput): void {
    const o = this.open;
    if (r.source.kind === 'kafka') {
      raiseCommit(o.commits, r.source.topic, r.source.partition, r.source.offset);
      const marker = this.marks.take(r.source.partition, r.source.offset);
      if (marker) o.markers.push(marker);
    }
    o.add(r);
    if (o.packer.count >= this.parts.produceBatchSize) this.post();
    if (!this.postScheduled) {
      this.postScheduled = true;
      queueMicrotask(() => {
        this.postScheduled = false;
        this.post();
      });
    }
  }

  /**
   * State and offsets of a partition this member no longer owns are dropped, not written: its new
   * owner restores from the changelog and writes that partition's keys from then on, and a late
   * write of this member's (older) state after the new owner's would be the record log compaction
   * keeps. Outputs already posted still go out (duplicates carry their source offset).
   */
  markModel(partition: number, marker: MarkerRequest): void {
    if (this.owns(partition)) this.marks.request(partition, marker);
  }

  assigned(owned: ReadonlySet<number>): void {
    this.owned = owned;
    this.marks.retain(this.owns);
    this.pendingMarkers = this.pendingMarkers.filter((m) => this.owns(m.partition));
    const dropped = this.pendingState.release(this.owns);
    for (const p of this.pendingCommits.keys()) if (!this.owns(p)) this.pendingCommits.delete(p);
    if (dropped > 0) this.parts.logger.info({ keys: dropped, partitions: [...owned] }, 'state of revoked partitions not written to the changelog');
  }

  async drain(): Promise<void> {
    this.post();
    for (let tail = this.tail; ; tail = this.tail) {
      await tail;
      if (tail === this.tail) break;
    }
  }

  async flush(): Promise<void> {
    await this.drain();
    if (this.control.failed) return;
    this.hurry = true;
    this.wake?.();
    try {
      while (this.flushing) await this.flushing;
    } finally {
      this.hurry = false;
    }
  }

  abort(): void {
    this.parts.producer.abort();
  }

  disconnect(): Promise<void> {
    return this.parts.producer.disconnect();
  }

  /** Closes the open request (if it holds anything) and hands it to the producer. */
  private post(): void {
    const o = this.open;
    if (o.events === 0 || this.control.failed) return;
    const outputs = o.pack(this.parts.topics);
    this.open = this.newRequest();
    const sent = outputs.length > 0 ? this.parts.producer.sendPacked(outputs) : Promise.resolve();
    // Observed now (a rejection waits for the chain below; it must not count as unhandled).
    sent.catch(() => undefined);
    this.tail = this.tail
      .then(() => sent)
      .then(
        // Nothing posted after a failed request is acknowledged (its commit would pass the failure).
        () => (this.control.failed ? undefined : this.acknowledged(o)),
        (err: unknown) => {
          this.control.fail(err as Error);
        },
      );
  }

  /** Only now, with the outputs acknowledged, may their state reach the changelog and their offsets be committed. */
  private acknowledged(request: Request): void {
    this.pendingState.absorb(request.changelog, this.owns);
    for (const m of request.markers) if (this.owns(m.partition)) this.pendingMarkers.push(m);
    for (const c of request.commits.values()) if (this.owns(c.partition)) raiseCommit(this.pendingCommits, c.topic, c.partition, c.offset);
    this.pendingEvents += request.events;
    this.parts.hooks?.onWritten?.(request.counts());
    this.flushing ??= this.flushPending().finally(() => (this.flushing = undefined));
  }

  private async flushPending(): Promise<void> {
    try {
      while (this.pendingEvents > 0 && !this.control.failed && !this.control.aborted) {
        const wait = this.lastFlushAt + this.parts.commitIntervalMs - performance.now();
        if (wait > 0 && !this.hurry) {
          const sleep = wakeableSleep(wait);
          this.wake = sleep.wake;
          await sleep.done;
          this.wake = undefined;
        }
        this.lastFlushAt = performance.now();
        const states = this.pendingState;
        const markers = this.pendingMarkers;
        const commits = this.pendingCommits;
        const events = this.pendingEvents;
        this.pendingState = this.parts.changelog();
        this.pendingCommits = new Map();
        this.pendingMarkers = [];
        this.pendingEvents = 0;
        await this.changelogAndCommit(states, commits, markers);
        this.parts.hooks?.onCommitted?.(events);
      }
    } catch (err) {
      this.control.fail(err as Error);
    }
  }

  private async changelogAndCommit(states: ChangelogBatch, commits: Map<number, Commit>, markers: readonly ChangelogRecord[]): Promise<void> {
    // A rebalance may have come while this flush waited for its interval: only owned partitions' states.
    const records = [...(await states.records(this.owns)), ...markers.filter((m) => this.owns(m.partition))];
    // Queued behind the outputs posted so far, retried until acknowledged (the producer's OrderedSender).
    if (records.length > 0 && !this.control.aborted) await this.parts.producer.sendPacked(changelogMessages(this.parts.topics, records));
    for (const p of commits.keys()) if (!this.owns(p)) commits.delete(p);
    if (commits.size && !this.control.aborted) {
      const offsets = [...commits.values()].map((c) => ({ topic: c.topic, partition: c.partition, offset: (BigInt(c.offset) + 1n).toString() }));
      try {
        await this.parts.consumer.commitOffsets(offsets);
      } catch (err) {
        // After a rebalance the partition may belong to another member now: its next owner
        // resumes from the last commit and skips what the changelog shows as applied.
        this.parts.logger.warn({ err: (err as Error).message, offsets }, 'offset commit failed; the partition will be resumed from its last commit');
      }
    }
  }
}
