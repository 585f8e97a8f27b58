/**
 * The exactly-once Sink. Each input partition has at most one Kafka transaction open
 * (transactions.ts). Its predictions and dead letters are sent in it as they come, packed per
 * stepped micro-batch; every `commitIntervalMs` the transaction ends with the changelog records
 * of the keys it touched, the partition's next input offset, and the commit. A read_committed
 * consumer of the outputs then sees each input event's output exactly once, and a restore
 * (read_committed) finds the state that matches the committed offset.
 *
 * ```
 * write:    -a1-b1-a2-----a3-b2-|          (a: partition 0, b: partition 1)
 * sent:      a1 b1 a2     a3 b2            (in each partition's open transaction)
 * interval: ---------|---------|
 * commits:           T0 T1     T0 T1       (changelog, offset, commit; the next one begins with the next send)
 * ```
 *
 * Sending as outputs come keeps the broker busy while the next micro-batch is stepped rather
 * than all at once at commit time (whatever queued meanwhile goes in one request). Events stay
 * in flight until their transaction commits, which is why exactly once has a larger default
 * queue (QUEUE_CAPACITY in config.ts).
 *
 * A transaction that fails retriably has been aborted: it is sent again from its first records.
 * One that is fenced (the partition's producer was superseded: a new owner, or the broker
 * expired a transaction left open) loses the partition: what was gathered for it is dropped, and
 * the runner rejoins so that the partition is prepared again from what is committed. One that
 * can never succeed (a record the broker refuses) fails the sink: the service stops with the
 * reason.
 */
import type { Message } from 'kafkajs';
import type { Logger } from '../../../observability/logger.js';
import type { PipelineOutput } from '../../../pipeline/predict.js';
import { writePredictionJson, type DeadLetterLimits } from '../../../pipeline/serialize.js';
import type { Sink, WrittenCounts } from '../../../runner/types.js';
import { InputTimes } from './input-times.js';
import { dropCapture } from '../../../state/deferred-captures.js';
import type { KeySnapshot, KeyStateStore } from '../../../state/key-state-store.js';
import { changelogMessage, deadLetterMessage, readChangelogStates } from './output-records.js';
import { packMessages, RecordPacker, type WireTopicMessages } from '../producer/record-packer.js';
import type { SinkTopics } from './sink.js';
import { wakeableSleep } from '../../sleep.js';
import { TransactionError, type PartitionTransactions } from '../producer/transactions.js';

export interface TransactionalSinkHooks {
  /** A transaction committed: its events' outputs are durable and visible. */
  onWritten?(counts: WrittenCounts, partition: number, seconds: number): void;
  /** Events whose outputs were dropped (their partition was revoked or lost): they leave the queue uncommitted. */
  onDropped?(events: number): void;
  /** A transaction failed and is retried. */
  onRetry?(err: Error): void;
  /** Transactions now open (begun and not yet committed, aborted or dropped). */
  onOpen?(open: number): void;
}

export interface TransactionalSinkOptions {
  /** How often each partition commits (Kafka Streams' commit.interval.ms; 100 ms in its exactly-once mode). */
  readonly commitIntervalMs: number;
  readonly deadLetterLimits?: DeadLetterLimits;
  /** The dead-letter topic's partitions (dead letters of input partition p go to p modulo this). */
  readonly dlqPartitions: number;
  /** The first offset of `partition` not yet committed by the consumer group (undefined: none committed). */
  readonly committedOffset: (partition: number) => Promise<number | undefined>;
  /** Longest wait between tries of a failing transaction. */
  readonly maxRetryMs?: number;
}

/** One transaction of one input partition: what it has sent or will send, and what it ends with. */
class Transaction {
  /** Packed outputs, in order; `sent` of them are in the open transaction. */
  readonly chunks: WireTopicMessages[][] = [];
  sent = 0;
  readonly packer = new RecordPacker();
  deadLetters: Message[] = [];
  readonly states = new Map<string, KeySnapshot>();
  readonly ended = new Set<string>();
  firstOffset: string | undefined;
  lastOffset: string | undefined;
  predictions = 0;
  sequenceGaps = 0;
  deadLetterCount = 0;
  skipped = 0;
  readonly inputTimes = new InputTimes();
  /** Cut at the interval: no more outputs; it ends with the changelog and the offset. */
  cut = false;
  startedAt = 0;

  get events(): number {
    return this.predictions + this.deadLetterCount + this.skipped;
  }

  /** Packs what was written since the last chunk as one more chunk (undefined when nothing was). */
  chunk(topics: SinkTopics): WireTopicMessages[] | undefined {
    const records: WireTopicMessages[] = [];
    if (this.packer.count > 0) records.push(this.packer.finish(topics.outputTopic));
    if (this.deadLetters.length > 0) records.push(packMessages(topics.dlqTopic, this.deadLetters));
    this.deadLetters = [];
    if (records.length > 0) this.chunks.push(records);
    return records.length > 0 ? records : undefined;
  }
}

/** An input partition's transactions: the one being sent and committed, and the one gathering behind it. */
class PartitionTransactionsState {
  current = new Transaction();
  /** Outputs that came after `current` was cut, for the transaction after it. */
  next: Transaction | undefined;
  /** The loop that sends and commits, while it runs. */
  pumping: Promise<void> | undefined;
  /** A post of the gathered outputs is scheduled for the next microtask. */
  postScheduled = false;

  /** The transaction new outputs go to. */
  get gathering(): Transaction {
    return this.current.cut ? (this.next ??= new Transaction()) : this.current;
  }
}

export class TransactionalSink implements Sink {
  onLost?: (partitions: readonly number[], reason: string) => void;
  private failed: Error | undefined;
  private onFailure: ((err: Error) => void) | undefined;
  readonly failure: Promise<never> = new Promise<never>((_, reject) => (this.onFailure = reject));
  /** Per owned and prepared input partition; a partition absent here has its outputs dropped. */
  private readonly partitions = new Map<number, PartitionTransactionsState>();
  private timer: NodeJS.Timeout | undefined;
  private aborted = false;
  private readonly wakes = new Set<() => void>();
  private openCount = 0;

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
    const partition = r.source.partition;
    const p = this.partitions.get(partition);
    if (!p) {
      // Revoked or lost since it was handed on: its new owner (or this member, prepared again) redoes it.
      this.hooks.onDropped?.(1);
      return;
    }
    const t = p.gathering;
    t.firstOffset ??= r.source.offset;
    t.lastOffset = r.source.offset;
    t.inputTimes.add(r.source.timestamp);
    if (r.kind === 'prediction') {
      t.packer.key(r.key);
      writePredictionJson(r, t.packer.writer);
      t.packer.end();
      t.predictions++;
      if (r.sequenceGap) t.sequenceGaps += r.sequenceGap;
      if (r.state) {
        // A newer capture of the key replaces this transaction's: the older one is never read.
        dropCapture(t.states.get(r.key));
        t.states.set(r.key, r.state);
      }
      if (r.ended) t.ended.add(r.key);
      else if (t.ended.size > 0) t.ended.delete(r.key);
    } else if (r.kind === 'dead-letter') {
      t.deadLetters.push(deadLetterMessage(r, this.options.deadLetterLimits, this.options.dlqPartitions));
      t.deadLetterCount++;
    } else {
      t.skipped++;
    }
    // Outputs written together (a stepped micro-batch) go as one chunk, on the next microtask.
    if (!p.postScheduled) {
      p.postScheduled = true;
      queueMicrotask(() => {
        p.postScheduled = false;
        if (p.gathering.chunk(this.topics)) this.pump(partition, p);
      });
    }
    this.timer ??= setTimeout(() => this.cutAll(), this.options.commitIntervalMs);
  }

  /** Fences the partition's earlier producers, then says where its committed outputs end. */
  async prepare(partition: number): Promise<number | undefined> {
    this.drop(partition);
    await this.transactions.init(partition);
    this.partitions.set(partition, new PartitionTransactionsState());
    return this.options.committedOffset(partition);
  }

  assigned(partitions: readonly number[]): void {
    const now = new Set(partitions);
    for (const [partition, p] of [...this.partitions]) {
      if (now.has(partition)) continue;
      this.drop(partition);
      // A transaction under way may still commit (before the new owner fences it) or be fenced.
      void (p.pumping ?? Promise.resolve()).finally(() => {
        if (!this.partitions.has(partition)) void this.transactions.close(partition);
      });
    }
  }

  /** Forgets what `partition` has gathered (revoked or lost): those events leave uncommitted. */
  private drop(partition: number): void {
    const p = this.partitions.get(partition);
    if (!p) return;
    this.partitions.delete(partition);
    const events = p.current.events + (p.next?.events ?? 0);
    if (events > 0) this.hooks.onDropped?.(events);
  }

  /** The interval: every partition's transaction with outputs ends (changelog, offset, commit). */
  private cutAll(): void {
    this.timer = undefined;
    const cut: [number, PartitionTransactionsState][] = [];
    for (const [partition, p] of this.partitions) {
      const t = p.current;
      if (t.cut || t.events === 0) continue;
      t.chunk(this.topics);
      t.cut = true;
      cut.push([partition, p]);
    }
    // Every cut transaction's changelog states in one read from the device, not one per
    // partition; each commit then finds its states read (or its read under way). A failure here
    // is the commit's to meet again and report.
    if (cut.length > 1) readChangelogStates(cut.flatMap(([, p]) => [...p.current.states].filter(([key]) => !p.current.ended.has(key))), new Set()).catch(() => undefined);
    for (const [partition, p] of cut) this.pump(partition, p);
  }

  private pump(partition: number, p: PartitionTransactionsState): void {
    p.pumping ??= this.sendAndCommit(partition, p).finally(() => {
      p.pumping = undefined;
      // What came meanwhile: chunks to send, or a cut to commit.
      // Not after a hard stop or a failure: sendAndCommit returns at once then, and pumping again
      // from here would be a loop of microtasks that starves every timer (a soak found a
      // process spinning at 100 % CPU, deaf to SIGTERM, after its abort).
      if (this.partitions.get(partition) === p && !this.failed && !this.aborted && (p.current.sent < p.current.chunks.length || p.current.cut)) this.pump(partition, p);
    });
  }

  /**
   * Sends the current transaction's chunks in order, and once it is cut, commits it; then the next
   * one becomes current. A retriable failure (the transaction was aborted) sends it again from its
   * first chunk.
   */
  private async sendAndCommit(partition: number, p: PartitionTransactionsState): Promise<void> {
    let delay = 100;
    for (;;) {
      const t = p.current;
      if (this.partitions.get(partition) !== p || this.aborted || this.failed) return;
      try {
        // Whatever queued meanwhile goes in one request (kafkajs merges a topic's records; a
        // request over maxRequestBytes is split): one produce round trip per chunk was slower
        // than the whole transaction sent at commit time.
        const unsent = t.chunks.length;
        const records = t.chunks.slice(t.sent).flat();
        if (t.sent === 0 && (records.length > 0 || t.cut)) this.opened(t);
        if (!t.cut) {
          if (records.length === 0) return;
          await this.transactions.send(partition, records);
          t.sent = unsent;
          continue;
        }
        // The last chunks ride with the changelog, the offset and the commit.
        await readChangelogStates(t.states, t.ended);
        await this.transactions.commit(partition, { records: [...records, ...this.changelog(t)], nextOffset: (BigInt(t.lastOffset!) + 1n).toString() });
        t.sent = unsent;
        this.closed();
        const seconds = (performance.now() - t.startedAt) / 1000;
        const counts: WrittenCounts = { predictions: t.predictions, sequenceGaps: t.sequenceGaps, deadLetters: t.deadLetterCount, skipped: t.skipped, inputTimes: t.inputTimes.view() };
        this.logger.debug({ partition, offsets: `${t.firstOffset}..${t.lastOffset}`, predictions: t.predictions, sequenceGaps: t.sequenceGaps, deadLetters: t.deadLetterCount, skipped: t.skipped, seconds }, 'transaction committed');
        p.current = p.next ?? new Transaction();
        p.next = undefined;
        // What gathered behind the commit is cut at the next interval: no write may come to set one.
        if (p.current.events > 0) this.timer ??= setTimeout(() => this.cutAll(), this.options.commitIntervalMs);
        this.hooks.onWritten?.(counts, partition, seconds);
        delay = 100;
      } catch (err) {
        this.closed();
        const e = err instanceof TransactionError ? err : new TransactionError((err as Error).message, partition, false, false, { cause: err });
        if (this.partitions.get(partition) !== p || this.aborted) return; // revoked meanwhile, or a hard stop
        if (e.retriable) {
          this.logger.warn({ partition, err: e.message, retryInMs: delay }, 'transaction failed and was aborted; sending it again');
          this.hooks.onRetry?.(e);
          t.sent = 0;
          t.startedAt = 0;
          await this.sleep(delay);
          delay = Math.min(delay * 2, this.options.maxRetryMs ?? 5000);
          continue;
        }
        if (e.producerGone) {
          // Fenced, or a producer that can neither commit nor abort: the partition is lost to
          // this member until the group gives it again (and it is prepared from what is committed).
          this.drop(partition);
          this.onLost?.([partition], e.message);
        } else {
          // The content itself cannot be written (a record the broker refuses, no authorisation).
          this.drop(partition);
          this.fail(e);
        }
        return;
      }
    }
  }

  /** The changelog records a transaction ends with: each touched key's state after its last event. */
  private changelog(t: Transaction): WireTopicMessages[] {
    if (t.states.size === 0) return [];
    return [packMessages(this.topics.changelogTopic, [...t.states].map(([key, s]) => changelogMessage(this.store, key, s, t.ended.has(key))))];
  }

  private opened(t: Transaction): void {
    t.startedAt ||= performance.now();
    this.hooks.onOpen?.(++this.openCount);
  }

  private closed(): void {
    if (this.openCount > 0) this.hooks.onOpen?.(--this.openCount);
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

  /**
   * Commits everything gathered so far, now; resolves when every partition's transactions are
   * done; rejects if the sink failed. After abort() it resolves at once, as the at-least-once
   * sink does: the stop that aborted knows what it left uncommitted.
   */
  async flush(): Promise<void> {
    while (!this.failed && !this.aborted) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      for (const p of this.partitions.values()) p.gathering.chunk(this.topics);
      this.cutAll();
      const pumping = [...this.partitions.values()].map((p) => p.pumping).filter((x): x is Promise<void> => x !== undefined);
      if (pumping.length === 0) break;
      await Promise.all(pumping);
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
