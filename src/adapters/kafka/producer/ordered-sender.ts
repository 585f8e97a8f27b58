/**
 * Sends packed produce requests in the order they were queued, one at a time, each retried with
 * capped exponential backoff while its error is retriable, until the broker acknowledges it: a
 * later request never overtakes an earlier one, so per-partition (per-key) order holds through
 * any outage. A request the broker refuses for the records it holds (recordRefusal: too large,
 * invalid) is halved, in order, until the refused record is alone; that record is replaced by
 * what `RefusedRecords` gives (a minimal dead letter) and the stream goes on. Any other error no
 * retry cures (isRetriableSendError), or a replacement refused in turn, ends the sender: that
 * request and every one queued after it reject with a SendFailedError, so nothing after it is
 * committed and the service stops with the reason rather than retry forever. Requests queued while
 * one is in flight are merged into the next send (up to `maxRecords` records), so the caller can
 * queue whatever is ready whenever it is ready: the sending side never waits for the caller to
 * notice an acknowledgement before the next request goes out.
 *
 * A request also holds at most `maxBytes` of records (estimated as Kafka encodes them): a broker
 * refuses a record batch above the topic's `max.message.bytes` (1 MiB by default) with
 * MESSAGE_TOO_LARGE, which no retry cures. A queued request larger than that is sent as several,
 * in order. (librdkafka's mock cluster has no such limit; the real broker showed it with
 * 1,000 keys in bench:kafka.)
 *
 * Runs wherever the kafkajs producer runs: on the producer thread (producer-worker.ts) or on the
 * service's thread (InProcessProducer).
 */
import type { Message, TopicMessages } from 'kafkajs';
import { RnnStreamError } from '../../../core/errors.js';
import { unpackMessages, type WireTopicMessages } from './record-packer.js';
import { isRetriableSendError, recordRefusal } from '../cluster/errors.js';
import { wakeableSleep } from '../../sleep.js';

/** What a failed attempt looks like to the caller's hooks (logs, a retry counter). */
export interface RetryNotice {
  readonly attempt: number;
  readonly error: { readonly name: string; readonly message: string; readonly retriable: boolean };
  readonly retryInMs: number;
}

/** The size of one produce request. */
export interface RequestLimits {
  /** Most records merged into one produce request. */
  readonly maxRecords: number;
  /** Most bytes of records in one produce request (keep below the topics' max.message.bytes). */
  readonly maxBytes: number;
}

export interface OrderedSenderOptions extends RequestLimits {
  readonly initialRetryMs?: number;
  readonly maxRetryMs?: number;
}

interface Queued {
  readonly topicMessages: readonly WireTopicMessages[];
  /** False: one attempt, sent alone; a failure rejects this request only (a start-up probe). */
  readonly retry: boolean;
  readonly count: number;
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** A record the broker refused by itself, and what was written in its place. */
export interface RefusalNotice {
  readonly topic: string;
  /** The refused record's size (key, value and headers). */
  readonly bytes: number;
  /** The broker's error type and message. */
  readonly reason: string;
  /** The topic its replacement went to. */
  readonly replacedIn: string;
}

/** What becomes of a record the broker refuses by itself (too large, invalid). */
export interface RefusedRecords {
  /** The record to write in its place (a minimal dead letter), or undefined: the sender stops. */
  replacement(topic: string, message: Message, reason: string): TopicMessages | undefined;
  onRefused?(notice: RefusalNotice): void;
}

/** A send failed with an error no retry cures; nothing queued after it is sent. */
export class SendFailedError extends RnnStreamError {
  override readonly name = 'SendFailedError';
  constructor(topics: readonly string[], cause: Error, detail = cause.message) {
    super(`producing to ${topics.join(', ')} failed and cannot succeed by retrying: ${detail}`, { cause, retriable: false });
  }
}

export class OrderedSender {
  private readonly queue: Queued[] = [];
  private running = false;
  private aborted: Error | undefined;
  private wakeRetry: (() => void) | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(
    /** One produce request (kafkajs's sendBatch, acks -1). */
    private readonly send: (topicMessages: TopicMessages[]) => Promise<unknown>,
    private readonly onRetry: (notice: RetryNotice) => void,
    private readonly options: OrderedSenderOptions,
    /** Without it, a refused record stops the sender like any error no retry cures. */
    private readonly refused?: RefusedRecords,
  ) {}

  /**
   * Resolves when the broker has acknowledged every record; rejects only after `abort`, or, with
   * `retry: false`, on the first failed attempt.
   */
  enqueue(topicMessages: readonly WireTopicMessages[], options: { retry?: boolean } = {}): Promise<void> {
    if (this.aborted) return Promise.reject(this.aborted);
    return new Promise<void>((resolve, reject) => {
      const count = topicMessages.reduce((n, t) => n + t.count, 0);
      const bytes = topicMessages.reduce((n, t) => n + t.bytes.byteLength + t.count * RECORD_OVERHEAD_BYTES + packedHeaderBytes(t.headers), 0);
      this.queue.push({ topicMessages, retry: options.retry ?? true, count, bytes, resolve, reject });
      if (!this.running) void this.pump();
    });
  }

  /** Stops retrying: the request in flight (once its attempt fails) and every queued one reject. */
  abort(reason = 'the producer is stopping'): void {
    this.aborted ??= new RnnStreamError(`produce abandoned: ${reason}`);
    this.wakeRetry?.();
  }

  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const first = this.queue[0]!;
        if (!first.retry) {
          this.queue.shift();
          await this.send(merge([first])).then(first.resolve, first.reject);
          continue;
        }
        // Everything queued meanwhile goes in one request, up to maxRecords and maxBytes (at
        // least one entry; one larger than maxBytes is split below).
        let records = first.count;
        let bytes = first.bytes;
        let n = 1;
        for (; n < this.queue.length; n++) {
          const next = this.queue[n]!;
          if (!next.retry || records + next.count > this.options.maxRecords || bytes + next.bytes > this.options.maxBytes) break;
          records += next.count;
          bytes += next.bytes;
        }
        const batch = this.queue.splice(0, n);
        try {
          // Only an entry larger than maxBytes by itself needs splitting (record by record).
          const merged = merge(batch);
          for (const request of bytes <= this.options.maxBytes ? [merged] : splitByBytes(merged, this.options.maxBytes)) await this.deliver(request, true);
          for (const q of batch) q.resolve();
        } catch (err) {
          for (const q of [...batch, ...this.queue.splice(0)]) q.reject(err as Error);
        }
      }
    } finally {
      this.running = false;
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  /**
   * Sends until acknowledged. A request refused for its records is halved (in order: the first
   * half acknowledged before the second goes) down to the record at fault, which is replaced
   * (`mayReplace`: not a replacement itself). The broker refuses a partition's whole batch for one
   * record in it, so its other records are written by the halves; records of other partitions
   * that the refused request did write are written again, duplicates that at least once allows
   * (each carries its source position).
   */
  private async deliver(request: TopicMessages[], mayReplace: boolean): Promise<void> {
    const err = await this.sendUntilAnswered(request);
    if (err === undefined) return;
    const refusal = recordRefusal(err);
    const records = request.reduce((n, t) => n + t.messages.length, 0);
    if (refusal !== undefined && records > 1) {
      for (const half of halves(request)) await this.deliver(half, mayReplace);
      return;
    }
    if (refusal !== undefined && records === 1 && mayReplace && this.refused) {
      const { topic, messages } = request.find((t) => t.messages.length === 1)!;
      const reason = `${refusal}: ${innermostMessage(err)}`;
      const replacement = this.refused.replacement(topic, messages[0]!, reason);
      if (replacement) {
        await this.deliver([replacement], false);
        this.refused.onRefused?.({ topic, bytes: recordBytes(messages[0]!), reason, replacedIn: replacement.topic });
        return;
      }
    }
    const failed = new SendFailedError(
      request.map((t) => t.topic),
      err,
      refusal === undefined ? err.message : `${refusal}: ${innermostMessage(err)}`,
    );
    this.aborted ??= failed;
    throw failed;
  }

  /** Retries retriable failures with capped backoff; resolves when acknowledged (undefined) or with the error no retry cures. */
  private async sendUntilAnswered(topicMessages: TopicMessages[]): Promise<Error | undefined> {
    let delay = this.options.initialRetryMs ?? 100;
    for (let attempt = 1; ; attempt++) {
      if (this.aborted) throw this.aborted;
      try {
        await this.send(topicMessages);
        return undefined;
      } catch (err) {
        // Read again: abort() may have come while this attempt was in flight.
        const aborted = this.aborted as Error | undefined;
        if (aborted) throw new RnnStreamError(`${aborted.message}: ${(err as Error).message}`, { cause: err });
        const e = err as Error;
        if (!isRetriableSendError(e)) return e;
        this.onRetry({ attempt, error: { name: e.name, message: e.message, retriable: true }, retryInMs: delay });
        const sleep = wakeableSleep(delay);
        this.wakeRetry = sleep.wake;
        await sleep.done;
        this.wakeRetry = undefined;
        delay = Math.min(delay * 2, this.options.maxRetryMs ?? 5000);
      }
    }
  }
}

/** The innermost cause's message (kafkajs wraps the broker's answer). */
export function innermostMessage(err: Error): string {
  let e: unknown = err;
  for (let i = 0; i < 10 && e instanceof Error && e.cause instanceof Error; i++) e = e.cause;
  return (e as Error).message;
}

/** A request's records as two requests, the first half of them and the rest, each topic's order kept. */
export function halves(request: readonly TopicMessages[]): [TopicMessages[], TopicMessages[]] {
  const total = request.reduce((n, t) => n + t.messages.length, 0);
  const first: TopicMessages[] = [];
  const second: TopicMessages[] = [];
  let left = Math.ceil(total / 2);
  for (const t of request) {
    const taken = Math.min(left, t.messages.length);
    left -= taken;
    if (taken > 0) first.push({ topic: t.topic, messages: t.messages.slice(0, taken) });
    if (taken < t.messages.length) second.push({ topic: t.topic, messages: t.messages.slice(taken) });
  }
  return [first, second];
}

/**
 * Per-record bytes of Kafka's v2 record format beyond key, value and headers (length, attributes,
 * timestamp and offset deltas, key and value lengths, header count: varints, at most about 20),
 * so that the estimate errs on the large side.
 */
export const RECORD_OVERHEAD_BYTES = 24;

/** A record's headers as Kafka encodes them, about (name and value bytes, and their lengths). */
function headersBytes(headers: Message['headers'] | Record<string, string> | null | undefined): number {
  let n = 0;
  if (headers) for (const [k, v] of Object.entries(headers)) n += Buffer.byteLength(k) + (v == null ? 0 : Buffer.byteLength(v as string | Buffer)) + 4;
  return n;
}

/** A packed topic's headers (dead letters carry them), summed. */
const packedHeaderBytes = (headers: WireTopicMessages['headers']): number => (headers ? headers.reduce((n, h) => n + headersBytes(h), 0) : 0);

export const recordBytes = (m: Message): number => RECORD_OVERHEAD_BYTES + (m.key ? Buffer.byteLength(m.key) : 0) + (m.value ? Buffer.byteLength(m.value) : 0) + headersBytes(m.headers);

/**
 * One request as consecutive requests of at most `maxBytes` each (a record larger than that goes
 * alone), each topic's messages kept in order: sent one after another, per-key order holds.
 */
export function splitByBytes(topicMessages: readonly TopicMessages[], maxBytes: number): TopicMessages[][] {
  const requests: TopicMessages[][] = [];
  let current = new Map<string, Message[]>();
  let size = 0;
  const flush = (): void => {
    if (current.size > 0) requests.push([...current].map(([topic, messages]) => ({ topic, messages })));
    current = new Map();
    size = 0;
  };
  for (const t of topicMessages)
    for (const m of t.messages) {
      const bytes = recordBytes(m);
      if (size > 0 && size + bytes > maxBytes) flush();
      let list = current.get(t.topic);
      if (!list) current.set(t.topic, (list = []));
      list.push(m);
      size += bytes;
    }
  flush();
  return requests;
}

/** The queued requests as one: each topic's messages concatenated in queue order. */
const merge = (batch: readonly Queued[]): TopicMessages[] => unpackTopics(batch.flatMap((q) => q.topicMessages));

/** Packed topics as kafkajs's TopicMessages, each topic once, its messages in order. */
export function unpackTopics(packed: readonly WireTopicMessages[]): TopicMessages[] {
  // kafkajs keys a request's topics by name (a topic listed twice keeps only its last messages).
  const byTopic = new Map<string, Message[]>();
  for (const t of packed) {
    const messages = unpackMessages(t);
    const seen = byTopic.get(t.topic);
    if (seen) for (const m of messages) seen.push(m);
    else byTopic.set(t.topic, messages);
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}
