/**
 * Exactly once. Each input partition has at most one Kafka transaction open (transactions.ts).
 * Its predictions and dead letters are sent in it as they come, packed per stepped micro-batch;
 * every `commitIntervalMs` the transaction ends with the changelog records of the keys it
 * touched, the partition's next input offset, and the commit. A read_committed consumer of the
 * outputs then sees each input event's output exactly once, and a restore (read_committed) finds
 * the state that matches the committed offset.
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
import type { Logger } from '../../../observability/logger.js';
import type { PipelineOutput } from '../../../pipeline/predict.js';
import type { WrittenCounts } from '../../../runner/types.js';
import { ChangelogBatch } from '../../../state/changelog-batch.js';
import { wakeableSleep } from '../../sleep.js';
import { TransactionError, type PartitionTransactions } from '../producer/transactions.js';
import type { WireTopicMessages } from '../producer/record-packer.js';
import type { CommitStrategy, SinkControl } from './kafka-sink.js';
import { changelogMessages, OutputBatch, type DeadLetterSettings, type SinkTopics } from './output-batch.js';
import { ModelMarks, type MarkerRequest } from './model-marks.js';

export interface ExactlyOnceHooks {
  /** A transaction committed: its events' outputs are durable and visible. */
  onWritten?(counts: WrittenCounts, partition: number, seconds: number): void;
  /** Events whose outputs were dropped (their partition was revoked or lost): they leave the queue uncommitted. */
  onDropped?(events: number): void;
  /** A transaction failed and is retried. */
  onRetry?(err: Error): void;
  /** Transactions now open (begun and not yet committed, aborted or dropped). */
  onOpen?(open: number): void;
}

export interface ExactlyOnceParts {
  readonly transactions: PartitionTransactions;
  readonly topics: SinkTopics;
  /** A new, empty batch of changelog captures (the state store's changelogBatch). */
  readonly changelog: () => ChangelogBatch;
  readonly logger: Logger;
  readonly hooks?: ExactlyOnceHooks;
  /** How often each partition commits (Kafka Streams' commit.interval.ms; 100 ms in its exactly-once mode). */
  readonly commitIntervalMs: number;
  readonly deadLetters: DeadLetterSettings;
  /** The first offset of `partition` not yet committed by the consumer group (undefined: none committed). */
  readonly committedOffset: (partition: number) => Promise<number | undefined>;
  /** Longest wait between tries of a failing transaction. */
  readonly maxRetryMs?: number;
}

/** One transaction of one input partition: what it has sent or will send, and what it ends with. */
class Transaction extends OutputBatch {
  /** Packed outputs, in order; `sent` of them are in the open transaction. */
  readonly chunks: WireTopicMessages[][] = [];
  sent = 0;
  firstOffset: string | undefined;
  lastOffset: string | undefined;
  /** Cut at the interval: no more outputs; it ends with the changelog and the offset. */
  cut = false;
  startedAt = 0;

  /** Packs what was written since the last chunk as one more chunk (false when nothing was). */
  chunk(topics: SinkTopics): boolean {
    const records = this.pack(topics);
    if (records.length > 0) this.chunks.push(records);
    return records.length > 0;
  }
}

/** An input partition's transactions: the one being sent and committed, and the one gathering behind it. */
class PartitionTransactionsState {
  current: Transaction;
  /** Outputs that came after `current` was cut, for the transaction after it. */
  next: Transaction | undefined;
  /** The loop that sends and commits, while it runs. */
  pumping: Promise<void> | undefined;
  /** A post of the gathered outputs is scheduled for the next microtask. */
  postScheduled = false;

  constructor(private readonly newTransaction: () => Transaction) {
    this.current = newTransaction();
  }

  /** The transaction new outputs go to. */
  get gathering(): Transaction {
    return this.current.cut ? (this.next ??= this.newTransaction()) : this.current;
  }

  /** Commits are done with `current`: the one gathering behind it takes its place. */
  advance(): void {
    this.current = this.next ?? this.newTransaction();
    this.next = undefined;
  }
}

export const exactlyOnce =
  (parts: ExactlyOnceParts) =>
  (control: SinkControl): CommitStrategy =>
    new ExactlyOnceCommits(parts, control);

class ExactlyOnceCommits implements CommitStrategy {
  onLost?: (partitions: readonly number[], reason: string) => void;
  /** Per owned and prepared input partition; a partition absent here has its outputs dropped. */
  private readonly partitions = new Map<number, PartitionTransactionsState>();
  private timer: NodeJS.Timeout | undefined;
  private readonly wakes = new Set<() => void>();
  private openCount = 0;
  private readonly newTransaction = (): Transaction => new Transaction(this.parts.changelog(), this.parts.deadLetters);
  private readonly marks = new ModelMarks();

  constructor(
    private readonly parts: ExactlyOnceParts,
    private readonly control: SinkControl,
  ) {}

  /** Into its partition's gathering transaction, sent as a chunk on the next microtask; dropped when the partition is not (or no longer) this member's. */
  take(r: PipelineOutput): void {
    if (r.source.kind !== 'kafka') throw new TransactionError(`exactly-once needs Kafka input; got a ${r.source.kind} record`, -1, false, false);
    const { partition } = r.source;
    const p = this.partitions.get(partition);
    if (!p) {
      // Revoked or lost since it was handed on: its new owner (or this member, prepared again) redoes it.
      this.parts.hooks?.onDropped?.(1);
      return;
    }
    const t = p.gathering;
    const marker = this.marks.take(partition, r.source.offset);
    if (marker) t.markers.push(marker);
    t.firstOffset ??= r.source.offset;
    t.lastOffset = r.source.offset;
    t.add(r);
    // Outputs written together (a stepped micro-batch) go as one chunk, on the next microtask.
    if (!p.postScheduled) {
      p.postScheduled = true;
      queueMicrotask(() => {
        p.postScheduled = false;
        if (p.gathering.chunk(this.parts.topics)) this.pump(partition, p);
      });
    }
    this.timer ??= setTimeout(() => this.cutAll(), this.parts.commitIntervalMs);
  }

  /** Fences the partition's earlier producers, then says where its committed outputs end. */
  async prepare(partition: number): Promise<number | undefined> {
    this.drop(partition);
    await this.parts.transactions.init(partition);
    this.partitions.set(partition, new PartitionTransactionsState(this.newTransaction));
    return this.parts.committedOffset(partition);
  }

  markModel(partition: number, marker: MarkerRequest): void {
    if (this.partitions.has(partition)) this.marks.request(partition, marker);
  }

  assigned(owned: ReadonlySet<number>): void {
    this.marks.retain((partition) => owned.has(partition));
    for (const [partition, p] of [...this.partitions]) {
      if (owned.has(partition)) continue;
      this.drop(partition);
      // A transaction under way may still commit (before the new owner fences it) or be fenced.
      void (p.pumping ?? Promise.resolve()).finally(() => {
        if (!this.partitions.has(partition)) void this.parts.transactions.close(partition);
      });
    }
  }

  /**
   * Forgets what `partition` has gathered (revoked or lost): those events leave uncommitted, and
   * their captured states are let go, once a commit under way no longer reads them.
   */
  private drop(partition: number): void {
    const p = this.partitions.get(partition);
    if (!p) return;
    this.partitions.delete(partition);
    const events = p.current.events + (p.next?.events ?? 0);
    if (events > 0) this.parts.hooks?.onDropped?.(events);
    const release = (): void => {
      p.current.changelog.release();
      p.next?.changelog.release();
    };
    if (p.pumping) void p.pumping.finally(release);
    else release();
  }

  /** The interval: every partition's transaction with outputs ends (changelog, offset, commit). */
  private cutAll(): void {
    this.timer = undefined;
    const cut: [number, PartitionTransactionsState][] = [];
    for (const [partition, p] of this.partitions) {
      const t = p.current;
      if (t.cut || t.events === 0) continue;
      t.chunk(this.parts.topics);
      t.cut = true;
      cut.push([partition, p]);
    }
    // Every cut transaction's changelog states in one read from the device, not one per
    // partition; each commit then finds its states read (or its read under way). A failure here
    // is the commit's to meet again and report.
    if (cut.length > 1) ChangelogBatch.readAhead(cut.map(([, p]) => p.current.changelog)).catch(() => undefined);
    for (const [partition, p] of cut) this.pump(partition, p);
  }

  private pump(partition: number, p: PartitionTransactionsState): void {
    p.pumping ??= this.sendAndCommit(partition, p).finally(() => {
      p.pumping = undefined;
      // What came meanwhile: chunks to send, or a cut to commit.
      // Not after a hard stop or a failure: sendAndCommit returns at once then, and pumping again
      // from here would be a loop of microtasks that starves every timer (a soak found a
      // process spinning at 100 % CPU, deaf to SIGTERM, after its abort).
      if (this.partitions.get(partition) === p && !this.control.failed && !this.control.aborted && (p.current.sent < p.current.chunks.length || p.current.cut)) this.pump(partition, p);
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
      if (this.partitions.get(partition) !== p || this.control.aborted || this.control.failed) return;
      try {
        // Whatever queued meanwhile goes in one request (kafkajs merges a topic's records; a
        // request over maxRequestBytes is split): one produce round trip per chunk was slower
        // than the whole transaction sent at commit time.
        const unsent = t.chunks.length;
        const records = t.chunks.slice(t.sent).flat();
        if (t.sent === 0 && (records.length > 0 || t.cut)) this.opened(t);
        if (!t.cut) {
          if (records.length === 0) return;
          await this.parts.transactions.send(partition, records);
          t.sent = unsent;
          continue;
        }
        // The last chunks ride with the changelog, the offset and the commit.
        const changelog = changelogMessages(this.parts.topics, [...(await t.changelog.records()), ...t.markers]);
        await this.parts.transactions.commit(partition, { records: [...records, ...changelog], nextOffset: (BigInt(t.lastOffset!) + 1n).toString() });
        t.sent = unsent;
        this.closed();
        this.committed(partition, p, t);
        delay = 100;
      } catch (err) {
        this.closed();
        const e = err instanceof TransactionError ? err : new TransactionError((err as Error).message, partition, false, false, { cause: err });
        if (this.partitions.get(partition) !== p || this.control.aborted) return; // revoked meanwhile, or a hard stop
        if (!e.retriable) {
          this.lose(partition, e);
          return;
        }
        this.parts.logger.warn({ partition, err: e.message, retryInMs: delay }, 'transaction failed and was aborted; sending it again');
        this.parts.hooks?.onRetry?.(e);
        t.sent = 0;
        t.startedAt = 0;
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.parts.maxRetryMs ?? 5000);
      }
    }
  }

  /** `t` committed: reported, and the transaction gathering behind it becomes current. */
  private committed(partition: number, p: PartitionTransactionsState, t: Transaction): void {
    const seconds = (performance.now() - t.startedAt) / 1000;
    this.parts.logger.debug({ partition, offsets: `${t.firstOffset}..${t.lastOffset}`, predictions: t.predictions, sequenceGaps: t.sequenceGaps, deadLetters: t.deadLetterCount, skipped: t.skipped, seconds }, 'transaction committed');
    p.advance();
    // What gathered behind the commit is cut at the next interval: no write may come to set one.
    if (p.current.events > 0) this.timer ??= setTimeout(() => this.cutAll(), this.parts.commitIntervalMs);
    this.parts.hooks?.onWritten?.(t.counts(), partition, seconds);
  }

  /** A failure no retry cures: the partition's outputs are dropped, and the partition lost or the sink failed. */
  private lose(partition: number, e: TransactionError): void {
    this.drop(partition);
    // Fenced, or a producer that can neither commit nor abort: the partition is lost to this
    // member until the group gives it again (and it is prepared from what is committed).
    if (e.producerGone) this.onLost?.([partition], e.message);
    // The content itself cannot be written (a record the broker refuses, no authorisation).
    else this.control.fail(e);
  }

  private opened(t: Transaction): void {
    t.startedAt ||= performance.now();
    this.parts.hooks?.onOpen?.(++this.openCount);
  }

  private closed(): void {
    if (this.openCount > 0) this.parts.hooks?.onOpen?.(--this.openCount);
  }

  private sleep(ms: number): Promise<void> {
    const s = wakeableSleep(ms);
    this.wakes.add(s.wake);
    return s.done.finally(() => this.wakes.delete(s.wake));
  }

  /**
   * Commits everything gathered so far, now; resolves when every partition's transactions are
   * done. After abort() it resolves at once, as at least once does: the stop that aborted knows
   * what it left uncommitted.
   */
  async flush(): Promise<void> {
    while (!this.control.failed && !this.control.aborted) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      for (const p of this.partitions.values()) p.gathering.chunk(this.parts.topics);
      this.cutAll();
      const pumping = [...this.partitions.values()].map((p) => p.pumping).filter((x): x is Promise<void> => x !== undefined);
      if (pumping.length === 0) break;
      await Promise.all(pumping);
    }
  }

  /** Outputs are acknowledged only as their transaction commits: draining is flushing. */
  drain(): Promise<void> {
    return this.flush();
  }

  abort(): void {
    for (const wake of this.wakes) wake();
  }

  async disconnect(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    await this.parts.transactions.disconnect();
  }
}
