/**
 * A kafkajs producer on its own thread. Encoding a produce request in kafkajs is JavaScript on
 * the calling thread, about 10 µs per record measured here (record encoding, CRC32C, the
 * partitioner, and the garbage they make), whatever the record's size; on the service's thread
 * that cost comes on top of decoding, the model and the outputs' JSON, and it was the largest
 * single part of the service's time per event (docs/benchmarks.md, Kafka end to end). Here the
 * records cross to a worker thread as plain strings and bytes, the worker's own kafkajs client
 * encodes and sends them, and the acknowledgement (or the error) comes back.
 *
 * The main thread sees the small slice of kafkajs's Producer that the service uses: connect,
 * send, sendBatch, disconnect. Requests run one at a time, in the order they were made, as with
 * an in-process producer limited to one request in flight, so per-partition order holds.
 * kafkajs's logs from the worker are forwarded to the injected logger.
 */
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Message, ProducerBatch, ProducerRecord, TopicMessages } from 'kafkajs';
import { RnnStreamError } from '../../core/errors.js';
import type { Logger } from '../../observability/logger.js';
import { projectPath } from '../../paths.js';
import type { KafkaConnection } from './client.js';

/** The part of kafkajs's Producer the service uses, so either producer can stand behind it. */
export interface RecordProducer {
  connect(): Promise<void>;
  send(record: ProducerRecord): Promise<unknown>;
  sendBatch(batch: ProducerBatch): Promise<unknown>;
  disconnect(): Promise<void>;
}

/**
 * What crosses to the worker, per topic: every key and value packed into one byte buffer that is
 * transferred, not copied (structured-cloning thousands of small message objects cost about 2 µs
 * a record on the sending thread), with the end offset of each. A key or value of -1 length is
 * null. Headers, rare (dead letters only), travel as they are.
 */
export interface WireTopicMessages {
  readonly topic: string;
  readonly count: number;
  readonly bytes: Uint8Array;
  /** For record i: key in [ends[2i-1] or 0, ends[2i]), value in [ends[2i], ends[2i+1]); a negative length means null. */
  readonly ends: Int32Array;
  readonly nulls: Uint8Array;
  /** Partition per record, -1 for the partitioner's choice. */
  readonly partitions: Int32Array;
  readonly headers?: (Record<string, string> | null)[];
}
export type WireRequest =
  | { id: number; op: 'connect' | 'disconnect' }
  | { id: number; op: 'send'; topicMessages: WireTopicMessages[]; acks: number };
export type WireReply =
  | { id: number; ok: true }
  | { id: number; ok: false; error: { name: string; message: string; retriable: boolean } }
  | { log: 'debug' | 'info' | 'warn' | 'error'; fields: object; message: string | undefined };

const KEY_NULL = 1;
const VALUE_NULL = 2;

let scratch = Buffer.allocUnsafeSlow(1 << 16);

/** Packs kafkajs messages for the worker; the returned buffer is transferable. */
export function packMessages(topic: string, messages: readonly Message[]): WireTopicMessages {
  // Worst case 3 UTF-8 bytes per UTF-16 unit for strings; buffers as they are.
  let capacity = 0;
  for (const m of messages) {
    capacity += m.key == null ? 0 : typeof m.key === 'string' ? m.key.length * 3 : m.key.length;
    capacity += m.value == null ? 0 : typeof m.value === 'string' ? m.value.length * 3 : m.value.length;
  }
  // Written into a scratch buffer sized for the worst case and kept between calls, then copied
  // once at its exact size: a fresh worst-case buffer per request (3 bytes per UTF-16 unit) was
  // megabytes of short-lived external memory every request, which V8 answers with extra GCs.
  if (scratch.length < capacity) scratch = Buffer.allocUnsafeSlow(Math.max(capacity, 2 * scratch.length));
  const bytes = scratch;
  const ends = new Int32Array(messages.length * 2);
  const nulls = new Uint8Array(messages.length);
  const partitions = new Int32Array(messages.length).fill(-1);
  let headers: (Record<string, string> | null)[] | undefined;
  let at = 0;
  const put = (v: string | Buffer): void => {
    at += typeof v === 'string' ? bytes.write(v, at) : v.copy(bytes, at);
  };
  messages.forEach((m, i) => {
    if (m.key == null) nulls[i]! |= KEY_NULL;
    else put(m.key);
    ends[2 * i] = at;
    if (m.value == null) nulls[i]! |= VALUE_NULL;
    else put(m.value);
    ends[2 * i + 1] = at;
    if (m.partition !== undefined) partitions[i] = m.partition;
    if (m.headers) {
      headers ??= new Array<Record<string, string> | null>(messages.length).fill(null);
      headers[i] = Object.fromEntries(Object.entries(m.headers).map(([k, v]) => [k, String(v)]));
    }
  });
  // The copy owns its ArrayBuffer exactly, so it can be transferred whole.
  const exact = new Uint8Array(new ArrayBuffer(at));
  exact.set(bytes.subarray(0, at));
  return { topic, count: messages.length, bytes: exact, ends, nulls, partitions, ...(headers ? { headers } : {}) };
}

/** The worker's side of packMessages: kafkajs messages whose keys and values view the buffer. */
export function unpackMessages(t: WireTopicMessages): Message[] {
  const buf = Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  const out: Message[] = new Array(t.count);
  let start = 0;
  for (let i = 0; i < t.count; i++) {
    const keyEnd = t.ends[2 * i]!;
    const valueEnd = t.ends[2 * i + 1]!;
    const m: Message = {
      key: t.nulls[i]! & KEY_NULL ? null : buf.subarray(start, keyEnd),
      value: t.nulls[i]! & VALUE_NULL ? null : buf.subarray(keyEnd, valueEnd),
    };
    if (t.partitions[i]! >= 0) m.partition = t.partitions[i]!;
    const h = t.headers?.[i];
    if (h) m.headers = h;
    out[i] = m;
    start = valueEnd;
  }
  return out;
}

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

  private call(request: DistributiveOmit<WireRequest, 'id'>, transfer: ArrayBuffer[] = []): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id }, transfer);
    });
  }

  connect(): Promise<void> {
    return this.call({ op: 'connect' });
  }

  send(record: ProducerRecord): Promise<void> {
    return this.sendBatch({ topicMessages: [{ topic: record.topic, messages: record.messages }], acks: record.acks ?? -1 });
  }

  sendBatch(batch: ProducerBatch): Promise<void> {
    const topicMessages = (batch.topicMessages ?? []).map((t: TopicMessages) => packMessages(t.topic, t.messages));
    return this.call({ op: 'send', topicMessages, acks: batch.acks ?? -1 }, topicMessages.map((t) => t.bytes.buffer as ArrayBuffer));
  }

  async disconnect(): Promise<void> {
    if (!this.dead) await this.call({ op: 'disconnect' });
    await this.worker.terminate();
  }
}
