/**
 * Writes a chunk of pipeline outputs to Kafka and only then commits their input offsets:
 *
 *   1. predictions (output topic) and dead letters (DLQ topic), keyed like the input; await acks
 *   2. each touched key's state after its last acknowledged event (changelog topic, the input's
 *      partition); await acks
 *   3. commit, per input partition, the offset after the last acknowledged event
 *
 * Steps 2 and 3 run beside step 1 of the next chunks, at most once per `changelogIntervalMs`,
 * merged over every chunk acknowledged meanwhile (one changelog record per key per interval, not
 * per chunk: Kafka Streams' commit.interval.ms and Quix's commit_interval do the same). A
 * snapshot in the changelog never runs ahead of acknowledged outputs, and a commit never runs
 * ahead of either: a crash at any point loses nothing, and redelivered events that the restored
 * state already reflects are recognised and not applied twice. A longer interval means fewer
 * changelog records and more redelivered (and skipped) events after a crash. A failing produce
 * is retried with exponential backoff until it succeeds or the service is stopped; it never skips.
 */
import type { Consumer, Message } from 'kafkajs';
import { RnnStreamError } from '../../core/errors.js';
import type { Logger } from '../../observability/logger.js';
import type { PipelineOutput, PredictionRecord } from '../../pipeline/predict.js';
import { deadLetterJson, writePredictionJson } from '../../pipeline/serialize.js';
import type { KeyStateStore } from '../../state/key-state-store.js';
import { offsetAtLeast } from './offsets.js';
import type { RecordProducer } from './producer-thread.js';
import { packMessages, RecordPacker, type WireTopicMessages } from './record-packer.js';

export interface SinkTopics {
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly changelogTopic: string;
}

export interface SinkHooks {
  /** Called when a chunk's outputs are acknowledged by the broker (its events may leave the queue). */
  onWritten?(chunk: readonly PipelineOutput[]): void;
  /** Called when a chunk's state is in the changelog and its offsets are committed. */
  onCommitted?(chunk: readonly PipelineOutput[]): void;
  onRetry?(attempt: number, err: Error): void;
}

export interface SinkOptions {
  /** Least time between changelog-and-commit writes (0: after every acknowledged chunk). */
  readonly changelogIntervalMs: number;
  /** Most output records per produce request; a larger chunk is sent as several, in order. */
  readonly produceBatchSize: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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

export class KafkaSink {
  private stopped = false;
  private failed: Error | undefined;
  /** Changelog and commit work not yet started, merged across chunks (latest state per key). */
  private pendingState = new Map<string, PredictionRecord>();
  private pendingCommits = new Map<number, Commit>();
  /** Chunks acknowledged since the last flush; kept only for an onCommitted hook (they hold every event's objects). */
  private pendingChunks: (readonly PipelineOutput[])[] = [];
  private pendingWrites = 0;
  private flushing: Promise<void> | undefined;
  private lastFlushAt = -Infinity;
  /** Cuts the wait for the next interval short (flush on shutdown). */
  private wake: (() => void) | undefined;
  private hurry = false;
  private readonly packer = new RecordPacker();

  constructor(
    private readonly producer: RecordProducer,
    private readonly consumer: Consumer,
    private readonly topics: SinkTopics,
    private readonly store: KeyStateStore<unknown>,
    private readonly logger: Logger,
    private readonly hooks: SinkHooks = {},
    private readonly options: SinkOptions = { changelogIntervalMs: 0, produceBatchSize: 5000 },
  ) {}

  /** Stops retrying (a hard stop); a chunk not yet acknowledged is then left uncommitted. */
  abort(): void {
    this.stopped = true;
  }

  /** Resolves once every chunk written so far is acknowledged and committed; rejects if one failed. */
  async flush(): Promise<void> {
    this.hurry = true;
    this.wake?.();
    try {
      while (this.flushing) await this.flushing;
    } finally {
      this.hurry = false;
    }
    if (this.failed) throw this.failed;
  }

  /**
   * Resolves when the chunk's outputs are acknowledged. Its state and offsets then join the
   * pending changelog-and-commit work (see the interval above), which never holds up the outputs.
   * Each prediction carries its key's state right after it (rnnByKey's captureState); the latest
   * acknowledged one per key is what goes to the changelog.
   */
  async write(chunk: readonly PipelineOutput[]): Promise<void> {
    if (this.failed) throw this.failed;
    // Predictions are packed as JSON bytes (no string or Message per record), in requests of at
    // most produceBatchSize; dead letters, rare, ride with the first request. Each attempt packs
    // its request afresh: the producer takes the packed buffers (a ProducerThread transfers them).
    const predictions: PredictionRecord[] = [];
    const deadLetters: Message[] = [];
    const commits = new Map<number, Commit>();
    for (const r of chunk) {
      if (r.source.kind === 'kafka') raiseCommit(commits, r.source.topic, r.source.partition, r.source.offset);
      if (r.kind === 'prediction') predictions.push(r);
      else if (r.kind === 'dead-letter') deadLetters.push({ key: r.messageKey ?? null, value: deadLetterJson(r), headers: { 'rnnstream-reason': r.reason.slice(0, 200) } });
    }
    const max = this.options.produceBatchSize;
    for (let from = 0; from < predictions.length || (from === 0 && deadLetters.length > 0); from += max) {
      const pack = (): WireTopicMessages[] => {
        const request: WireTopicMessages[] = [];
        const to = Math.min(predictions.length, from + max);
        if (to > from) request.push(this.packPredictions(predictions, from, to));
        if (from === 0 && deadLetters.length > 0) request.push(packMessages(this.topics.dlqTopic, deadLetters));
        return request;
      };
      await this.retrying('produce outputs', () => this.producer.sendPacked(pack(), -1));
    }
    // Only now, with the outputs acknowledged, may the chunk's state reach the changelog and its
    // offsets be committed.
    for (const r of chunk) if (r.kind === 'prediction' && r.state) this.pendingState.set(r.key, r);
    for (const c of commits.values()) raiseCommit(this.pendingCommits, c.topic, c.partition, c.offset);
    this.pendingWrites++;
    if (this.hooks.onCommitted) this.pendingChunks.push(chunk);
    this.hooks.onWritten?.(chunk);
    this.flushing ??= this.flushPending().finally(() => (this.flushing = undefined));
  }

  private packPredictions(predictions: readonly PredictionRecord[], from: number, to: number): WireTopicMessages {
    const { packer } = this;
    for (let i = from; i < to; i++) {
      const p = predictions[i]!;
      packer.key(p.key);
      writePredictionJson(p, packer.writer);
      packer.end();
    }
    return packer.finish(this.topics.outputTopic);
  }

  private async flushPending(): Promise<void> {
    try {
      while (this.pendingWrites > 0 && !this.failed) {
        const wait = this.lastFlushAt + this.options.changelogIntervalMs - performance.now();
        if (wait > 0 && !this.hurry) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, wait);
            this.wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.wake = undefined;
        }
        this.lastFlushAt = performance.now();
        const states = this.pendingState;
        const commits = this.pendingCommits;
        const chunks = this.pendingChunks;
        this.pendingState = new Map();
        this.pendingCommits = new Map();
        this.pendingChunks = [];
        this.pendingWrites = 0;
        await this.changelogAndCommit(states, commits);
        for (const c of chunks) this.hooks.onCommitted?.(c);
      }
    } catch (err) {
      this.failed ??= err as Error;
    }
  }

  private async changelogAndCommit(lastState: Map<string, PredictionRecord>, commits: Map<number, Commit>): Promise<void> {
    if (lastState.size) {
      const messages: Message[] = [];
      for (const [key, p] of lastState) {
        // The changelog is partitioned like the input: the key's state goes to its input partition.
        const partition = p.source.kind === 'kafka' ? p.source.partition : undefined;
        const s = p.state!;
        const value = Buffer.from(this.store.encode([{ key, state: s.state, steps: s.steps, prev: s.prev, position: s.position, lastSeen: s.lastSeen }]));
        messages.push(partition === undefined ? { key, value } : { key, value, partition });
      }
      await this.retrying('produce state changelog', () => this.producer.sendPacked([packMessages(this.topics.changelogTopic, messages)], -1));
    }
    if (commits.size) {
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

  private async retrying(what: string, send: () => Promise<unknown>): Promise<void> {
    let delay = 100;
    for (let attempt = 1; ; attempt++) {
      try {
        await send();
        return;
      } catch (err) {
        if (this.stopped) throw new RnnStreamError(`${what} failed and the service is stopping: ${(err as Error).message}`, { cause: err });
        this.hooks.onRetry?.(attempt, err as Error);
        this.logger.warn({ attempt, err: (err as Error).message, retryInMs: delay }, `${what} failed; retrying`);
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }
}
