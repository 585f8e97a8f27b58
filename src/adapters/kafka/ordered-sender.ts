/**
 * Sends packed produce requests in the order they were queued, one at a time, each retried with
 * exponential backoff until the broker acknowledges it: a later request never overtakes an
 * earlier one, so per-partition (per-key) order holds through any failure. Requests queued while
 * one is in flight are merged into the next send (up to `maxRecords` records), so the caller can
 * queue whatever is ready whenever it is ready: the sending side never waits for the caller to
 * notice an acknowledgement before the next request goes out.
 *
 * Runs wherever the kafkajs producer runs: on the producer thread (producer-worker.ts) or on the
 * service's thread (InProcessProducer).
 */
import type { Message, TopicMessages } from 'kafkajs';
import { RnnStreamError } from '../../core/errors.js';
import { unpackMessages, type WireTopicMessages } from './record-packer.js';
import { wakeableSleep } from './sleep.js';

/** What a failed attempt looks like to the caller's hooks (logs, a retry counter). */
export interface RetryNotice {
  readonly attempt: number;
  readonly error: { readonly name: string; readonly message: string; readonly retriable: boolean };
  readonly retryInMs: number;
}

export interface OrderedSenderOptions {
  /** Most records merged into one produce request (a broker limits a record batch's bytes). */
  readonly maxRecords: number;
  readonly initialRetryMs?: number;
  readonly maxRetryMs?: number;
}

interface Queued {
  readonly topicMessages: readonly WireTopicMessages[];
  /** False: one attempt, sent alone; a failure rejects this request only (a start-up probe). */
  readonly retry: boolean;
  readonly count: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
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
  ) {}

  /**
   * Resolves when the broker has acknowledged every record; rejects only after `abort`, or, with
   * `retry: false`, on the first failed attempt.
   */
  enqueue(topicMessages: readonly WireTopicMessages[], options: { retry?: boolean } = {}): Promise<void> {
    if (this.aborted) return Promise.reject(this.aborted);
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ topicMessages, retry: options.retry ?? true, count: topicMessages.reduce((n, t) => n + t.count, 0), resolve, reject });
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
        // Everything queued meanwhile goes in one request, up to maxRecords (at least one entry).
        let records = first.count;
        let n = 1;
        while (n < this.queue.length && this.queue[n]!.retry && records + this.queue[n]!.count <= this.options.maxRecords) records += this.queue[n++]!.count;
        const batch = this.queue.splice(0, n);
        try {
          await this.sendUntilAcknowledged(merge(batch));
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

  private async sendUntilAcknowledged(topicMessages: TopicMessages[]): Promise<void> {
    let delay = this.options.initialRetryMs ?? 100;
    for (let attempt = 1; ; attempt++) {
      if (this.aborted) throw this.aborted;
      try {
        await this.send(topicMessages);
        return;
      } catch (err) {
        // Read again: abort() may have come while this attempt was in flight.
        const aborted = this.aborted as Error | undefined;
        if (aborted) throw new RnnStreamError(`${aborted.message}: ${(err as Error).message}`, { cause: err });
        const e = err as Error & { retriable?: boolean };
        this.onRetry({ attempt, error: { name: e.name, message: e.message, retriable: e.retriable ?? false }, retryInMs: delay });
        const sleep = wakeableSleep(delay);
        this.wakeRetry = sleep.wake;
        await sleep.done;
        this.wakeRetry = undefined;
        delay = Math.min(delay * 2, this.options.maxRetryMs ?? 5000);
      }
    }
  }
}

/** The queued requests as one: each topic's messages concatenated in queue order. */
function merge(batch: readonly Queued[]): TopicMessages[] {
  // kafkajs keys a request's topics by name (a topic listed twice keeps only its last messages).
  const byTopic = new Map<string, Message[]>();
  for (const q of batch)
    for (const t of q.topicMessages) {
      const messages = unpackMessages(t);
      const seen = byTopic.get(t.topic);
      if (seen) for (const m of messages) seen.push(m);
      else byTopic.set(t.topic, messages);
    }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}
