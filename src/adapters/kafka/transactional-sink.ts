/**
 * The exactly-once Sink. Outputs are buffered per input partition; every `commitIntervalMs`
 * each partition with outputs commits one Kafka transaction (transactions.ts) holding its
 * predictions, dead letters, the changelog records of the keys it touched, and its next input
 * offset. A read_committed consumer of the outputs then sees each input event's output exactly
 * once, and a restore (read_committed) finds the state that matches the committed offset.
 *
 * ```
 * write:    -a1-b1-a2-----a3-b2-|        (a: partition 0, b: partition 1)
 * interval: ---------|---------|---
 * commits:           T0[a1 a2] T0[a3]    (one transaction per partition and interval)
 *                    T1[b1]    T1[b2]
 * ```
 *
 * A transaction that fails retriably is aborted and sent again as it was. One that is fenced
 * (the partition's producer was superseded: a new owner, or the broker expired a transaction
 * left open) loses the partition: what was buffered for it is dropped, and the runner rejoins so
 * that the partition is prepared again from what is committed. One that can never succeed (a
 * record the broker refuses) fails the sink: the service stops with the reason.
 */
import type { Message } from 'kafkajs';
import type { Logger } from '../../observability/logger.js';
import type { PipelineOutput } from '../../pipeline/predict.js';
import { writePredictionJson, type DeadLetterLimits } from '../../pipeline/serialize.js';
import type { Sink, WrittenCounts } from '../../runner/types.js';
import type { KeySnapshot, KeyStateStore } from '../../state/key-state-store.js';
import { changelogMessage, deadLetterMessage } from './output-records.js';
import { packMessages, RecordPacker, type WireTopicMessages } from './record-packer.js';
import type { SinkTopics } from './sink.js';
import { wakeableSleep } from './sleep.js';
import { TransactionError, type PartitionTransactions, type TransactionContent } from './transactions.js';

export interface TransactionalSinkHooks {
  /** A transaction committed: its events' outputs are durable and visible. */
  onWritten?(counts: WrittenCounts, partition: number, seconds: number): void;
  /** Events whose outputs were dropped (their partition was revoked or lost): they leave the queue uncommitted. */
  onDropped?(events: number): void;
  /** A transaction failed and is retried. */
  onRetry?(err: Error): void;
  /** Transactions now being committed (begun and not yet committed, aborted or dropped). */
  onOpen?(open: number): void;
}

export interface TransactionalSinkOptions {
  /** How often each partition commits what it has (Kafka Streams' commit.interval.ms; 100 ms in its exactly-once mode). */
  readonly commitIntervalMs: number;
  readonly deadLetterLimits?: DeadLetterLimits;
  /** The dead-letter topic's partitions (dead letters of input partition p go to p modulo this). */
  readonly dlqPartitions: number;
  /** The first offset of `partition` not yet committed by the consumer group (undefined: none committed). */
  readonly committedOffset: (partition: number) => Promise<number | undefined>;
  /** Longest wait between tries of a failing transaction. */
  readonly maxRetryMs?: number;
}

/** What one input partition has gathered for its next transaction. */
class PartitionOutputs {
  readonly packer = new RecordPacker();
  deadLetters: Message[] = [];
  states = new Map<string, KeySnapshot>();
  ended = new Set<string>();
  /** The first and last input offset in what is gathered. */
  firstOffset: string | undefined;
  nextOffset: string | undefined;
  predictions = 0;
  sequenceGaps = 0;
  deadLetterCount = 0;
  skipped = 0;
  /** The transaction being committed, if one is. */
  committing: Promise<void> | undefined;

  get events(): number {
    return this.predictions + this.deadLetterCount + this.skipped;
  }
}

export class TransactionalSink implements Sink {
  onLost?: (partitions: readonly number[], reason: string) => void;
  private failed: Error | undefined;
  private onFailure: ((err: Error) => void) | undefined;
  readonly failure: Promise<never> = new Promise<never>((_, reject) => (this.onFailure = reject));
  /** Per owned and prepared input partition; a partition absent here has its outputs dropped. */
  private readonly partitions = new Map<number, PartitionOutputs>();
  private timer: NodeJS.Timeout | undefined;
  private aborted = false;
  private readonly wakes = new Set<() => void>();
  private open = 0;

  constructor(
    private readonly transactions: PartitionTransactions,
    private readonly topics: SinkTopics,
    private readonly store: KeyStateStore,
    private readonly logger: Logger,
    private readonly hooks: TransactionalSinkHooks,
    private readonly options: TransactionalSinkOptions,
  ) {
    this.failure.catch(() => undefined);
  }

  write(r: PipelineOutput): void {
    if (this.failed) return;
    if (r.source.kind !== 'kafka') throw new TransactionError(`exactly-once needs Kafka input; got a ${r.source.kind} record`, -1, false, false);
    const out = this.partitions.get(r.source.partition);
    if (!out) {
      // Revoked or lost since it was handed on: its new owner (or this member, prepared again) redoes it.
      this.hooks.onDropped?.(1);
      return;
    }
    out.firstOffset ??= r.source.offset;
    out.nextOffset = r.source.offset;
    if (r.kind === 'prediction') {
      out.packer.key(r.key);
      writePredictionJson(r, out.packer.writer);
      out.packer.end();
      out.predictions++;
      if (r.sequenceGap) out.sequenceGaps += r.sequenceGap;
      if (r.state) out.states.set(r.key, r.state);
      if (r.ended) out.ended.add(r.key);
      else if (out.ended.size > 0) out.ended.delete(r.key);
    } else if (r.kind === 'dead-letter') {
      out.deadLetters.push(deadLetterMessage(r, this.options.deadLetterLimits, this.options.dlqPartitions));
      out.deadLetterCount++;
    } else {
      out.skipped++;
    }
    this.timer ??= setTimeout(() => this.commitAll(), this.options.commitIntervalMs);
  }

  /** Fences the partition's earlier producers, then says where its committed outputs end. */
  async prepare(partition: number): Promise<number | undefined> {
    this.drop(partition);
    await this.transactions.init(partition);
    this.partitions.set(partition, new PartitionOutputs());
    return this.options.committedOffset(partition);
  }

  assigned(partitions: readonly number[]): void {
    const now = new Set(partitions);
    for (const p of [...this.partitions.keys()]) {
      if (now.has(p)) continue;
      const committing = this.partitions.get(p)?.committing;
      this.drop(p);
      // A transaction under way may still commit (before the new owner fences it) or be fenced.
      void (committing ?? Promise.resolve()).finally(() => {
        if (!this.partitions.has(p)) void this.transactions.close(p);
      });
    }
  }

  /** Forgets what `partition` has gathered (revoked or lost): those events leave uncommitted. */
  private drop(partition: number): void {
    const out = this.partitions.get(partition);
    if (!out) return;
    this.partitions.delete(partition);
    if (out.events > 0) this.hooks.onDropped?.(out.events);
  }

  /** Commits every partition's gathered outputs (one transaction each, side by side). */
  private commitAll(): void {
    this.timer = undefined;
    for (const [p, out] of this.partitions) if (out.events > 0 && !out.committing) this.startCommit(p, out);
  }

  private startCommit(partition: number, out: PartitionOutputs): void {
    const counts: WrittenCounts = { predictions: out.predictions, sequenceGaps: out.sequenceGaps, deadLetters: out.deadLetterCount, skipped: out.skipped };
    const content = this.cut(out);
    const events = counts.predictions + counts.deadLetters + counts.skipped;
    this.hooks.onOpen?.(++this.open);
    out.committing = this.commitUntilDone(partition, content, counts, events).finally(() => {
      this.hooks.onOpen?.(--this.open);
      out.committing = undefined;
      // What gathered meanwhile waits for the next interval.
      if (out.events > 0 && this.partitions.get(partition) === out) this.timer ??= setTimeout(() => this.commitAll(), this.options.commitIntervalMs);
    });
  }

  /** Takes what `out` has gathered as one transaction's content, and starts it afresh. */
  private cut(out: PartitionOutputs): TransactionContent & { readonly firstOffset: string } {
    const records: WireTopicMessages[] = [];
    if (out.packer.count > 0) records.push(out.packer.finish(this.topics.outputTopic));
    if (out.deadLetters.length > 0) records.push(packMessages(this.topics.dlqTopic, out.deadLetters));
    if (out.states.size > 0) records.push(packMessages(this.topics.changelogTopic, [...out.states].map(([key, s]) => changelogMessage(this.store, key, s, out.ended.has(key)))));
    const nextOffset = (BigInt(out.nextOffset!) + 1n).toString();
    const firstOffset = out.firstOffset!;
    out.firstOffset = undefined;
    out.deadLetters = [];
    out.states = new Map();
    out.ended = new Set();
    out.predictions = out.sequenceGaps = out.deadLetterCount = out.skipped = 0;
    return { records, nextOffset, firstOffset };
  }

  private async commitUntilDone(partition: number, content: TransactionContent & { readonly firstOffset: string }, counts: WrittenCounts, events: number): Promise<void> {
    const started = performance.now();
    let delay = 100;
    for (;;) {
      try {
        await this.transactions.commit(partition, content);
        const seconds = (performance.now() - started) / 1000;
        this.logger.debug({ partition, offsets: `${content.firstOffset}..${content.nextOffset}`, ...counts, seconds }, 'transaction committed');
        this.hooks.onWritten?.(counts, partition, seconds);
        return;
      } catch (err) {
        const e = err instanceof TransactionError ? err : new TransactionError((err as Error).message, partition, false, false, { producerGone: false, cause: err });
        if (!this.partitions.has(partition) || this.aborted) {
          // Revoked meanwhile (its new owner redoes these events), or a hard stop.
          this.hooks.onDropped?.(events);
          return;
        }
        if (e.retriable) {
          this.logger.warn({ partition, err: e.message, retryInMs: delay }, 'transaction failed and was aborted; sending it again');
          this.hooks.onRetry?.(e);
          await this.sleep(delay);
          delay = Math.min(delay * 2, this.options.maxRetryMs ?? 5000);
          continue;
        }
        this.hooks.onDropped?.(events);
        if (e.producerGone) {
          // Fenced, or a producer that can neither commit nor abort: the partition is lost to
          // this member until the group gives it again (and it is prepared from what is committed).
          this.drop(partition);
          this.onLost?.([partition], e.message);
        } else {
          // The content itself cannot be written (a record the broker refuses, no authorisation).
          this.fail(e);
        }
        return;
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    const s = wakeableSleep(ms);
    this.wakes.add(s.wake);
    return s.done.finally(() => this.wakes.delete(s.wake));
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.onFailure?.(err);
  }

  /** Commits everything gathered so far, now; resolves when every partition's transactions are done. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      this.commitAll();
      const committing = [...this.partitions.values()].map((o) => o.committing).filter((c): c is Promise<void> => c !== undefined);
      if (committing.length === 0) break;
      await Promise.all(committing);
    }
    if (this.failed) throw this.failed;
  }

  abort(): void {
    this.aborted = true;
    for (const wake of this.wakes) wake();
  }

  async disconnect(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    await this.transactions.disconnect();
  }
}
