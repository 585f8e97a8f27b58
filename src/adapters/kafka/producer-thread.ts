/**
 * A kafkajs producer on its own thread. Encoding a produce request in kafkajs is JavaScript on
 * the calling thread, about 10 µs per record measured here (record encoding, CRC32C, the
 * partitioner, and the garbage they make), whatever the record's size; on the service's thread
 * that cost comes on top of decoding, the model and the outputs' JSON, and it was the largest
 * single part of the service's time per event (docs/benchmarks.md, Kafka end to end). Here the
 * records cross to a worker thread already packed into one transferred buffer
 * (record-packer.ts), the worker's own kafkajs client encodes and sends them, and the
 * acknowledgement (or the error) comes back.
 *
 * The main thread sees RecordProducer: connect, sendPacked, disconnect. Requests run one at a time, in the order they were made, as with
 * an in-process producer limited to one request in flight, so per-partition order holds.
 * kafkajs's logs from the worker are forwarded to the injected logger.
 */
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Producer } from 'kafkajs';
import { RnnStreamError } from '../../core/errors.js';
import type { Logger } from '../../observability/logger.js';
import { projectPath } from '../../paths.js';
import type { KafkaConnection } from './client.js';
import { unpackMessages, type WireTopicMessages } from './record-packer.js';

/**
 * What the service's sink produces through: records already packed (record-packer.ts), one
 * request at a time, in order. ProducerThread sends them from a worker thread, InProcessProducer
 * from this one.
 */
export interface RecordProducer {
  connect(): Promise<void>;
  /**
   * Resolves when the broker has acknowledged every record (acks -1: all in-sync replicas). The
   * packed buffers stay the caller's: a retry sends the same request again.
   */
  sendPacked(topicMessages: readonly WireTopicMessages[], acks: number): Promise<unknown>;
  disconnect(): Promise<void>;
}

/** A kafkajs producer on the calling thread behind RecordProducer (`producerThread: false`). */
export class InProcessProducer implements RecordProducer {
  constructor(private readonly producer: Producer) {}

  connect(): Promise<void> {
    return this.producer.connect();
  }

  sendPacked(topicMessages: readonly WireTopicMessages[], acks: number): Promise<unknown> {
    return this.producer.sendBatch({ acks, topicMessages: topicMessages.map((t) => ({ topic: t.topic, messages: unpackMessages(t) })) });
  }

  disconnect(): Promise<void> {
    return this.producer.disconnect();
  }
}

export type WireRequest =
  | { id: number; op: 'connect' | 'disconnect' }
  | { id: number; op: 'send'; topicMessages: WireTopicMessages[]; acks: number };
export type WireReply =
  | { id: number; ok: true }
  | { id: number; ok: false; error: { name: string; message: string; retriable: boolean } }
  | { log: 'debug' | 'info' | 'warn' | 'error'; fields: object; message: string | undefined };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export interface ProducerThreadOptions {
  readonly connection: KafkaConnection;
}

/** The worker's script: next to this module when running from dist, else dist's copy (vitest runs src). */
function workerScript(): string {
  const here = fileURLToPath(new URL('./producer-worker.js', import.meta.url));
  return existsSync(here) ? here : projectPath('dist', 'src', 'adapters', 'kafka', 'producer-worker.js');
}

/** A kafkajs error re-made on this side: its name, message and whether it is retriable. */
export class ProducerThreadError extends RnnStreamError {
  override readonly name = 'ProducerThreadError';
  constructor(
    message: string,
    readonly kafkaErrorName: string,
    retriable: boolean,
  ) {
    super(`${kafkaErrorName}: ${message}`, { retriable });
  }
}

export class ProducerThread implements RecordProducer {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private dead: Error | undefined;

  constructor(options: ProducerThreadOptions, logger: Logger) {
    this.worker = new Worker(workerScript(), { workerData: options });
    this.worker.on('message', (reply: WireReply) => {
      if ('log' in reply) {
        logger[reply.log]({ ...reply.fields, thread: 'producer' }, reply.message);
        return;
      }
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if (reply.ok) waiter.resolve();
      else waiter.reject(new ProducerThreadError(reply.error.message, reply.error.name, reply.error.retriable));
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

  /** The packed buffers are copied to the worker (one memcpy each), so a retry can send them again. */
  sendPacked(topicMessages: readonly WireTopicMessages[], acks: number): Promise<void> {
    return this.call({ op: 'send', topicMessages: [...topicMessages], acks });
  }

  async disconnect(): Promise<void> {
    if (!this.dead) await this.call({ op: 'disconnect' });
    await this.worker.terminate();
  }
}
