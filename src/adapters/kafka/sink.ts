/**
 * Writes a chunk of pipeline outputs to Kafka and only then commits their input offsets:
 *
 *   1. predictions (output topic) and dead letters (DLQ topic), keyed like the input; await acks
 *   2. each touched key's state after its last event of the chunk (changelog topic, the input's
 *      partition); await acks
 *   3. commit, per input partition, the offset after the chunk's last event
 *
 * Steps 2 and 3 run beside step 1 of the next chunks, merged across the chunks acknowledged
 * meanwhile, so the producer is not idle while they complete. A snapshot in the changelog never runs ahead of acknowledged outputs, and a commit never runs
 * ahead of either: a crash at any point loses nothing, and redelivered events that the
 * restored state already reflects are recognised and not applied twice. A failing produce is
 * retried with exponential backoff until it succeeds or the service is stopped; it never skips.
 */
import type { Consumer, Message, TopicMessages } from 'kafkajs';
import { RnnStreamError } from '../../core/errors.js';
import type { Logger } from '../../observability/logger.js';
import type { PipelineOutput, PredictionRecord } from '../../pipeline/predict.js';
import { deadLetterJson, predictionJson } from '../../pipeline/serialize.js';
import type { KeyStateStore } from '../../state/key-state-store.js';
import type { RecordProducer } from './producer-thread.js';

export interface SinkTopics {
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly changelogTopic: string;
}

export interface SinkHooks {
  /** Called after a chunk is acknowledged and committed. */
  onAcked?(chunk: readonly PipelineOutput[]): void;
  onRetry?(attempt: number, err: Error): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Commit = { topic: string; partition: number; offset: bigint };

export class KafkaSink {
  private stopped = false;
  private failed: Error | undefined;
  /** Changelog and commit work not yet started, merged across chunks (latest state per key). */
  private pendingState = new Map<string, PredictionRecord>();
  private pendingCommits = new Map<string, Commit>();
  private pendingChunks: (readonly PipelineOutput[])[] = [];
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly producer: RecordProducer,
    private readonly consumer: Consumer,
    private readonly topics: SinkTopics,
    private readonly store: KeyStateStore<unknown>,
    private readonly logger: Logger,
    private readonly hooks: SinkHooks = {},
  ) {}

  /** Stops retrying (a hard stop); a chunk not yet acknowledged is then left uncommitted. */
  abort(): void {
    this.stopped = true;
  }

  /** Resolves once every chunk written so far is acknowledged and committed; rejects if one failed. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.failed) throw this.failed;
  }

  /**
   * Resolves when the chunk's outputs are acknowledged. Its state and offsets then join the
   * pending changelog-and-commit work: while one such write is in flight, later chunks merge into
   * the next (only each key's latest state is written), so the changelog costs one message per
   * key per write rather than per chunk, and never holds up the outputs.
   */
  async write(chunk: readonly PipelineOutput[]): Promise<void> {
    if (this.failed) throw this.failed;
    const predictions: Message[] = [];
    const deadLetters: Message[] = [];
    const commits: Commit[] = [];
    for (const r of chunk) {
      if (r.source.kind === 'kafka') commits.push({ topic: r.source.topic, partition: r.source.partition, offset: BigInt(r.source.offset) });
      if (r.kind === 'prediction') {
        predictions.push({ key: r.key, value: predictionJson(r) });
      } else if (r.kind === 'dead-letter') {
        deadLetters.push({ key: r.messageKey ?? null, value: deadLetterJson(r), headers: { 'rnnstream-reason': r.reason.slice(0, 200) } });
      }
    }
    const outputs: TopicMessages[] = [];
    if (predictions.length) outputs.push({ topic: this.topics.outputTopic, messages: predictions });
    if (deadLetters.length) outputs.push({ topic: this.topics.dlqTopic, messages: deadLetters });
    if (outputs.length) await this.retrying('produce outputs', () => this.producer.sendBatch({ topicMessages: outputs, acks: -1 }));
    // Only now, with the outputs acknowledged, may the chunk's state reach the changelog and its
    // offsets be committed.
    for (const r of chunk) if (r.kind === 'prediction' && r.state) this.pendingState.set(r.key, r);
    for (const c of commits) {
      const id = `${c.topic}\u0000${c.partition}`;
      const seen = this.pendingCommits.get(id);
      if (!seen || c.offset > seen.offset) this.pendingCommits.set(id, c);
    }
    this.pendingChunks.push(chunk);
    this.flushing ??= this.flushPending().finally(() => (this.flushing = undefined));
  }

  private async flushPending(): Promise<void> {
    try {
      while (this.pendingChunks.length > 0 && !this.failed) {
        const states = this.pendingState;
        const commits = this.pendingCommits;
        const chunks = this.pendingChunks;
        this.pendingState = new Map();
        this.pendingCommits = new Map();
        this.pendingChunks = [];
        await this.changelogAndCommit(states, commits);
        for (const c of chunks) this.hooks.onAcked?.(c);
      }
    } catch (err) {
      this.failed ??= err as Error;
    }
  }

  private async changelogAndCommit(lastState: Map<string, PredictionRecord>, commits: Map<string, Commit>): Promise<void> {
    if (lastState.size) {
      const messages: Message[] = [];
      for (const [key, p] of lastState) {
        const s = p.state!;
        const partition = p.source.kind === 'kafka' ? p.source.partition : undefined;
        const value = Buffer.from(this.store.encode([{ key, state: s.state, steps: s.steps, prev: s.prev, position: s.position, lastSeen: s.lastSeen }]));
        messages.push(partition === undefined ? { key, value } : { key, value, partition });
      }
      await this.retrying('produce state changelog', () => this.producer.send({ topic: this.topics.changelogTopic, messages, acks: -1 }));
    }
    if (commits.size) {
      const offsets = [...commits.values()].map((c) => ({ topic: c.topic, partition: c.partition, offset: (c.offset + 1n).toString() }));
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
