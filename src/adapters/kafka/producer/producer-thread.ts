/**
 * A kafkajs producer on its own thread. Encoding a produce request in kafkajs is JavaScript on
 * the calling thread, about 10 µs per record measured here (record encoding, CRC32C, the
 * partitioner, and the garbage they make), whatever the record's size; on the service's thread
 * that cost comes on top of decoding, the model and the outputs' JSON, and it was the largest
 * single part of the service's time per event (docs/benchmarks.md, Kafka end to end). Here the
 * records cross to a worker thread already packed (record-packer.ts), the worker's own kafkajs
 * client encodes and sends them, and the acknowledgement comes back.
 *
 * The main thread sees RecordProducer: it posts each request as soon as it is ready, and the
 * worker's OrderedSender sends them one at a time, in order, merging what queued up meanwhile
 * and retrying each until acknowledged, so per-partition order holds and the worker never
 * waits for the main thread between requests. kafkajs's logs and retry notices from the worker
 * are forwarded to the injected logger and hooks.
 */
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Producer } from 'kafkajs';
import { RnnStreamError } from '../../../core/errors.js';
import type { Logger } from '../../../observability/logger.js';
import { projectPath } from '../../../paths.js';
import type { KafkaConnection } from '../cluster/client.js';
import { OrderedSender, type RefusalNotice, type RefusedRecords, type RequestLimits, type RetryNotice } from './ordered-sender.js';
import { refusedRecordDeadLetter, type RefusalTopics } from '../sinks/output-records.js';
import type { WireTopicMessages } from './record-packer.js';
import { TransactionError, type PartitionTransactions, type TransactionContent, type TransactionSettings } from './transactions.js';

/**
 * What the service's sink produces through: packed records (record-packer.ts), queued in order
 * and each retried with backoff until the broker acknowledges it (ordered-sender.ts).
 * ProducerThread sends from a worker thread, InProcessProducer from this one.
 */
export interface RecordProducer {
  connect(): Promise<void>;
  /**
   * Queued behind every earlier request; resolves when the broker has acknowledged every record
   * (acks -1: all in-sync replicas). Failures are retried, never skipped; it rejects only after
   * `abort`, or, with `retry: false` (a start-up probe), on the first failed attempt. The packed
   * buffers are copied, not taken.
   */
  sendPacked(topicMessages: readonly WireTopicMessages[], options?: { retry?: boolean }): Promise<void>;
  /** Stops retrying: what is queued or in flight rejects (a hard stop; nothing is committed for it). */
  abort(): void;
  /** After everything queued is acknowledged. */
  disconnect(): Promise<void>;
}

export interface ProducerHooks {
  onRetry?(notice: RetryNotice): void;
  /** A record the broker refused by itself was replaced by a minimal dead letter. */
  onRefused?(notice: RefusalNotice): void;
}

/** Logs a failed attempt (what failed, the attempt, when it is retried) and passes it to the hook. */
export function retryReporter(logger: Logger, hooks: ProducerHooks): (notice: RetryNotice) => void {
  return (notice) => {
    logger.warn({ attempt: notice.attempt, err: `${notice.error.name}: ${notice.error.message}`, retriable: notice.error.retriable, retryInMs: notice.retryInMs }, 'produce failed; retrying');
    hooks.onRetry?.(notice);
  };
}

/** Logs a refused record (its topic, size, the broker's reason, where its replacement went) and passes it to the hook. */
export function refusalReporter(logger: Logger, hooks: ProducerHooks): (notice: RefusalNotice) => void {
  return (notice) => {
    logger.warn({ ...notice }, 'the broker refused a record; a minimal dead letter was written in its place');
    hooks.onRefused?.(notice);
  };
}

/** Refused records become minimal dead letters in `topics.dlqTopic`; without topics, a refusal stops the sender. */
export function refusedRecords(topics: RefusalTopics | undefined, onRefused: (notice: RefusalNotice) => void): RefusedRecords | undefined {
  return topics && { replacement: (topic, message, reason) => refusedRecordDeadLetter(topics, topic, message, reason), onRefused };
}

/** A kafkajs producer on the calling thread behind RecordProducer (`producerThread: false`). */
export class InProcessProducer implements RecordProducer {
  private readonly sender: OrderedSender;

  constructor(
    private readonly producer: Producer,
    /** One merged produce request's size (the service's produceBatchSize and produceBatchBytes). */
    limits: RequestLimits,
    logger: Logger,
    hooks: ProducerHooks = {},
    refusals?: RefusalTopics,
  ) {
    const refused = refusedRecords(refusals, refusalReporter(logger, hooks));
    this.sender = new OrderedSender((topicMessages) => producer.sendBatch({ acks: -1, topicMessages }), retryReporter(logger, hooks), limits, refused);
  }

  connect(): Promise<void> {
    return this.producer.connect();
  }

  sendPacked(topicMessages: readonly WireTopicMessages[], options: { retry?: boolean } = {}): Promise<void> {
    return this.sender.enqueue(topicMessages, options);
  }

  abort(): void {
    this.sender.abort();
  }

  async disconnect(): Promise<void> {
    await this.sender.idle();
    await this.producer.disconnect();
  }
}

export type WireRequest =
  | { id: number; op: 'connect' | 'disconnect' | 'abort' }
  | { id: number; op: 'send'; topicMessages: WireTopicMessages[]; retry: boolean }
  | { id: number; op: 'txn-init' | 'txn-close'; partition: number }
  | { id: number; op: 'txn-send'; partition: number; records: WireTopicMessages[] }
  | { id: number; op: 'txn-commit'; partition: number; content: TransactionContent };
export type WireReply =
  | { id: number; ok: true }
  | { id: number; ok: false; error: { name: string; message: string; retriable: boolean; transaction?: { partition: number; fenced: boolean; producerGone: boolean } } }
  | { retry: RetryNotice }
  | { refused: RefusalNotice }
  | { log: 'debug' | 'info' | 'warn' | 'error'; fields: object; message: string | undefined };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export interface ProducerThreadOptions {
  readonly connection: KafkaConnection;
  /** One merged produce request's size. */
  readonly limits: RequestLimits;
  /** Where a record the broker refuses by itself is replaced by a minimal dead letter (without: the sender stops). */
  readonly refusals?: RefusalTopics;
  /** Exactly once: the thread also runs the input partitions' transactional producers. */
  readonly transactions?: TransactionSettings;
}

/** The worker's script: next to this module when running from dist, else dist's copy (vitest runs src). */
function workerScript(): string {
  const here = fileURLToPath(new URL('./producer-worker.js', import.meta.url));
  return existsSync(here) ? here : projectPath('dist', 'src', 'adapters', 'kafka', 'producer', 'producer-worker.js');
}

/** A kafkajs error re-made on this side: its name, message and whether it is retriable. */
export class ProducerThreadError extends RnnStreamError {
  override readonly name = 'ProducerThreadError';
  constructor(
    message: string,
    readonly kafkaErrorName: string,
    retriable: boolean,
  ) {
    // kafkajs's names say what failed (KafkaJSConnectionError); rnnstream's messages say it already.
    super(kafkaErrorName.startsWith('KafkaJS') ? `${kafkaErrorName}: ${message}` : message, { retriable });
  }
}

export class ProducerThread implements RecordProducer, PartitionTransactions {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private dead: Error | undefined;

  constructor(options: ProducerThreadOptions, logger: Logger, hooks: ProducerHooks = {}) {
    this.worker = new Worker(workerScript(), { workerData: options });
    const onRetry = retryReporter(logger, hooks);
    const onRefused = refusalReporter(logger, hooks);
    this.worker.on('message', (reply: WireReply) => {
      if ('log' in reply) {
        logger[reply.log]({ ...reply.fields, thread: 'producer' }, reply.message);
        return;
      }
      if ('retry' in reply) {
        onRetry(reply.retry);
        return;
      }
      if ('refused' in reply) {
        onRefused(reply.refused);
        return;
      }
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if (reply.ok) waiter.resolve();
      else if (reply.error.transaction) {
        const t = reply.error.transaction;
        waiter.reject(new TransactionError(reply.error.message, t.partition, t.fenced, reply.error.retriable, { producerGone: t.producerGone }));
      } else waiter.reject(new ProducerThreadError(reply.error.message, reply.error.name, reply.error.retriable));
    });
    const fail = (err: Error): void => {
      this.dead ??= err;
      for (const w of this.pending.values()) w.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', (err) => {
      logger.error({ err: err.message }, 'producer thread failed');
      fail(new RnnStreamError(`the producer thread failed: ${err.message}`, { cause: err }));
    });
    this.worker.on('exit', (code) => fail(new RnnStreamError(`the producer thread exited (code ${code})`)));
  }

  private call(request: DistributiveOmit<WireRequest, 'id'>): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id });
    });
  }

  connect(): Promise<void> {
    return this.call({ op: 'connect' });
  }

  /** Posted at once (copied, one memcpy per buffer); the worker queues, merges and retries (OrderedSender). */
  sendPacked(topicMessages: readonly WireTopicMessages[], options: { retry?: boolean } = {}): Promise<void> {
    return this.call({ op: 'send', topicMessages: [...topicMessages], retry: options.retry ?? true });
  }

  abort(): void {
    if (!this.dead) this.worker.postMessage({ id: this.nextId++, op: 'abort' } satisfies WireRequest);
  }

  async disconnect(): Promise<void> {
    if (!this.dead) await this.call({ op: 'disconnect' });
    await this.worker.terminate();
  }

  init(partition: number): Promise<void> {
    return this.call({ op: 'txn-init', partition });
  }

  /** The records are copied to the thread (one memcpy per buffer), as sendPacked's are. */
  send(partition: number, records: readonly WireTopicMessages[]): Promise<void> {
    return this.call({ op: 'txn-send', partition, records: [...records] });
  }

  commit(partition: number, content: TransactionContent): Promise<void> {
    return this.call({ op: 'txn-commit', partition, content });
  }

  close(partition: number): Promise<void> {
    return this.call({ op: 'txn-close', partition });
  }
}
