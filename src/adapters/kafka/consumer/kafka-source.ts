/**
 * A kafkajs consumer as the runner's Source: the input topic's records of the partitions this
 * member owns, in order per partition, each handed on at most once per assignment.
 *
 * - **Assignment.** Every rebalance (GROUP_JOIN) tells the runner which partitions are owned; a
 *   newly assigned partition is prepared at once (its earlier writers fenced, its state restored)
 *   and none of its records is handed on before that is done. The consumer heartbeats meanwhile.
 * - **At most once per assignment.** kafkajs restarts a partition it keeps across a rebalance
 *   from its last committed offset, which can be behind what this member has already handed on
 *   (outputs not yet committed). Records below the next offset to hand on are skipped, so they
 *   are not stepped (nor dead-lettered) twice; a newly prepared partition starts at the offset
 *   its sink says is committed, when it knows one (exactly-once).
 * - **Backpressure.** Every record handed on holds a slot of the bounded queue until the sink has
 *   made its output durable; when the queue is full the consumer pauses its partitions and
 *   heartbeats until there is room.
 * - **Rejoining.** kafkajs gives up on its consumer after an error it does not retry (a protocol
 *   error from a broker); the source then rejoins with backoff rather than consume nothing. The
 *   runner also asks it to rejoin when a partition's outputs were lost (a fenced transaction).
 */
import type { Consumer, EachBatchPayload } from 'kafkajs';
import { Observable, type Subscriber } from 'rxjs';
import { RnnStreamError } from '../../../core/errors.js';
import type { Logger } from '../../../observability/logger.js';
import type { BoundedQueue } from '../../../operators/bounded-queue.js';
import type { RawRecord, SourcePosition } from '../../../operators/records.js';
import type { PartitionHost, Rejoin, Source } from '../../../runner/types.js';
import { TransactionError } from '../producer/transactions.js';
import { sleep, within } from '../../sleep.js';

export interface KafkaSourceOptions {
  readonly topic: string;
  readonly fromBeginning: boolean;
  /** Events in flight until the sink has made their outputs durable. */
  readonly queue: BoundedQueue;
}

export interface KafkaSourceHooks {
  /** A fetch completed (with or without records). */
  onFetch?(): void;
  /** Records handed on (counted per batch). */
  onEventsIn?(count: number): void;
  /** The partitions this member owns now, and its member id in the group (after each rebalance). */
  onAssigned?(partitions: readonly number[], memberId: string): void;
  /** The consumer stopped on an error kafkajs does not retry (rejoining), or is back (undefined). */
  onConsumerDown?(err: Error | undefined): void;
}

/** A partition whose preparation failed: it is paused until `retryAt`, then tried again. */
interface Backoff {
  readonly failures: number;
  readonly retryAt: number;
  readonly reason: string;
  readonly timer: NodeJS.Timeout;
}

/** The first retry of a failed preparation waits this long; each failure doubles it, up to the cap. */
const PREPARE_RETRY_MS = 1000;
const PREPARE_RETRY_CAP_MS = 30_000;

export class KafkaSource implements Source {
  private subscriber: Subscriber<RawRecord> | undefined;
  private host: PartitionHost | undefined;
  private owned = new Set<number>();
  /** Per partition, the next offset to hand on; absent: kafkajs's position holds. */
  private readonly next = new Map<number, number>();
  /** Per partition, the last offset handed on by a batch still being handed on (`next` is set when it ends). */
  private readonly handing = new Map<number, { offset: string | undefined }>();
  /** Per newly assigned partition, its preparation; absent once owned and kept. */
  private readonly prepared = new Map<number, Promise<void>>();
  /**
   * Partitions whose preparation failed, paused until their next try. Without the pause kafkajs
   * fetched the partition again at once and every batch tried again: a hot loop (9,176 warnings
   * in 58 s when an input partition had no changelog partition).
   */
  private readonly backoff = new Map<number, Backoff>();
  private stopping = false;
  /** Not handing on (a rejoin is draining what is in flight). */
  private holding = false;
  /** Partitions lost and not yet forgotten by a restart (see `restart`). */
  private readonly lostPending = new Set<number>();
  private restartDelayMs = 1000;
  /** Resolves once the consumer has joined and is running (rejects if the first run fails). */
  readonly started: Promise<void>;
  private startedResolve!: () => void;
  private startedReject!: (err: Error) => void;

  constructor(
    private readonly consumer: Consumer,
    private readonly options: KafkaSourceOptions,
    private readonly logger: Logger,
    private readonly hooks: KafkaSourceHooks = {},
  ) {
    this.started = new Promise((resolve, reject) => {
      this.startedResolve = resolve;
      this.startedReject = reject;
    });
    this.started.catch(() => undefined);
  }

  get name(): string {
    return `kafka:${this.options.topic}`;
  }

  start(host: PartitionHost): Observable<RawRecord> {
    this.host = host;
    return new Observable<RawRecord>((subscriber) => {
      this.subscriber = subscriber;
      this.begin().then(this.startedResolve, (err: Error) => {
        this.startedReject(err);
        subscriber.error(err);
      });
    });
  }

  private async begin(): Promise<void> {
    const { consumer } = this;
    consumer.on(consumer.events.GROUP_JOIN, (e) => this.assign(e.payload.memberAssignment[this.options.topic] ?? [], e.payload.memberId));
    consumer.on(consumer.events.FETCH, () => this.hooks.onFetch?.());
    consumer.on(consumer.events.CRASH, (e) => {
      if (e.payload.restart || this.stopping) return;
      this.hooks.onConsumerDown?.(e.payload.error);
      this.logger.error({ err: e.payload.error.message, retryInMs: this.restartDelayMs }, 'consumer stopped on an error kafkajs does not retry; rejoining');
      const delay = this.restartDelayMs;
      this.restartDelayMs = Math.min(this.restartDelayMs * 2, 30_000);
      setTimeout(() => void this.rejoin(), delay);
    });
    await consumer.subscribe({ topic: this.options.topic, fromBeginning: this.options.fromBeginning });
    await this.run();
  }

  private run(): Promise<void> {
    return this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.eachBatch(payload),
    });
  }

  private rejoin(): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return this.run().then(
      () => {
        this.restartDelayMs = 1000;
        this.hooks.onConsumerDown?.(undefined);
      },
      (err: Error) => this.logger.error({ err: err.message }, 'consumer rejoin failed'),
    );
  }

  /** A rebalance's outcome: the partitions owned now. */
  private assign(partitions: readonly number[], memberId: string): void {
    const now = new Set(partitions);
    for (const p of this.owned) {
      if (now.has(p)) continue;
      this.next.delete(p);
      this.prepared.delete(p);
      this.clearBackoff(p);
    }
    const added = partitions.filter((p) => !this.owned.has(p));
    this.owned = now;
    this.logger.info({ partitions, added }, 'partitions assigned');
    this.host!.assigned(partitions);
    this.hooks.onAssigned?.(partitions, memberId);
    for (const p of added) this.prepare(p);
  }

  /** Starts preparing a newly assigned partition; its records wait for it. */
  private prepare(partition: number): Promise<void> {
    this.next.delete(partition);
    const work: Promise<void> = this.host!.prepare(partition).then((from) => {
      // A later assignment may have replaced this preparation meanwhile.
      if (this.prepared.get(partition) !== work) return;
      if (from !== undefined) this.next.set(partition, from);
      this.clearBackoff(partition);
    });
    this.prepared.set(partition, work);
    work.catch((err: Error) => {
      if (this.prepared.get(partition) === work) this.prepared.delete(partition);
      // One that no retry cures (no authorisation for the partition's transactional id, no
      // changelog partition for it) stops the service with the reason; any other is tried again
      // after a backoff, the partition paused meanwhile.
      if (err instanceof RnnStreamError && !err.retriable && !(err instanceof TransactionError && err.fenced)) {
        this.subscriber?.error(new RnnStreamError(`preparing input partition ${partition} failed: ${err.message}`, { cause: err }));
        return;
      }
      this.backOff(partition, err);
    });
    return work;
  }

  /** Pauses `partition` after a failed preparation, for twice as long as after the failure before. */
  private backOff(partition: number, err: Error): void {
    if (!this.owned.has(partition) || this.stopping) return;
    const failures = (this.backoff.get(partition)?.failures ?? 0) + 1;
    const delay = Math.min(PREPARE_RETRY_MS * 2 ** (failures - 1), PREPARE_RETRY_CAP_MS);
    this.clearBackoff(partition);
    this.pause([partition]);
    const timer = setTimeout(() => {
      // Fetched again after the pause; its next batch tries the preparation again.
      if (this.owned.has(partition) && !this.stopping && !this.holding) this.resume([partition]);
    }, delay);
    timer.unref();
    this.backoff.set(partition, { failures, retryAt: Date.now() + delay, reason: err.message, timer });
    this.logger.warn({ partition, err: err.message, failures, retryInMs: delay }, 'preparing a partition failed; trying again after a pause');
  }

  private clearBackoff(partition: number): void {
    const b = this.backoff.get(partition);
    if (!b) return;
    clearTimeout(b.timer);
    this.backoff.delete(partition);
  }

  /** Why owned partitions cannot be served now (their preparation keeps failing), one line each. */
  unservable(): string[] {
    const now = Date.now();
    return [...this.backoff].map(
      ([p, b]) => `input partition ${p} cannot be served: preparing it failed ${b.failures} time(s), next try in ${Math.max(0, Math.ceil((b.retryAt - now) / 1000))} s: ${b.reason}`,
    );
  }

  /** Heartbeats (so the group keeps the partition) until `work` settles; rethrows its failure. */
  private async whileHeartbeating(work: Promise<unknown>, heartbeat: () => Promise<void>): Promise<void> {
    let settled = false;
    void work.then(
      () => (settled = true),
      () => (settled = true),
    );
    while (!settled) {
      await Promise.race([work, sleep(1000)]).catch(() => undefined);
      if (!settled) await heartbeat();
    }
    await work;
  }

  private async eachBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { partition, topic } = batch;
    const { queue } = this.options;
    if (!this.owned.has(partition) || this.holding) return;
    // Fetched while its pause was being set up: not before its next try.
    if ((this.backoff.get(partition)?.retryAt ?? 0) > Date.now()) return;
    const preparation = this.prepared.get(partition) ?? (this.next.has(partition) ? undefined : this.prepare(partition));
    if (preparation) {
      try {
        await this.whileHeartbeating(preparation, heartbeat);
      } catch {
        return; // not resolved: kafkajs fetches these records again
      }
      if (this.prepared.get(partition) === preparation) this.prepared.delete(partition);
    }
    const from = this.next.get(partition);
    // Whether to stop handing on can only change across an await (the loop below is
    // synchronous between backpressure waits), so it is checked there, not per message:
    // kafkajs's isStale builds a string key per call.
    const mustStop = (): boolean => !isRunning() || isStale() || this.stopping || this.holding || !this.owned.has(partition);
    let admitted = 0;
    let handedOn: string | undefined;
    // Written per record as a property, not a map entry: positions() reads it mid-batch.
    const cursor: { offset: string | undefined } = { offset: undefined };
    this.handing.set(partition, cursor);
    try {
      if (!mustStop())
        for (const m of batch.messages) {
          const offset = Number(m.offset);
          if (from !== undefined && offset < from) {
            handedOn = m.offset;
            continue;
          }
          if (!queue.hasRoom()) {
            this.hooks.onEventsIn?.(admitted);
            admitted = 0;
            if (!(await this.waitForRoom(heartbeat)) || mustStop()) break;
          }
          queue.admit(1);
          admitted++;
          const source: SourcePosition = { kind: 'kafka', topic, partition, offset: m.offset, timestamp: Number(m.timestamp) };
          const value = m.value ?? new Uint8Array(0);
          this.subscriber?.next(m.key ? { value, source, messageKey: m.key.toString() } : { value, source });
          handedOn = m.offset;
          cursor.offset = handedOn;
        }
    } finally {
      // Once per batch, not per record: nothing reads it before this batch is done.
      if (handedOn !== undefined) this.next.set(partition, Number(handedOn) + 1);
      if (this.handing.get(partition) === cursor) this.handing.delete(partition);
      // Resolved in `finally`, so a batch left early (a heartbeat that throws in a rebalance)
      // still marks what was handed on. Counted per batch, not per event: prom-client's inc and
      // kafkajs's resolveOffset are not free at 50k events/s.
      if (handedOn !== undefined) resolveOffset(handedOn);
      this.hooks.onEventsIn?.(admitted);
    }
    await heartbeat();
  }

  /**
   * The next offset this source hands on, per owned partition it has handed records of: where
   * the chain stands (a hot swap's point, read while nothing is in flight).
   */
  positions(): Map<number, number> {
    const at = new Map<number, number>();
    for (const p of this.owned) {
      const offset = this.handing.get(p)?.offset;
      const next = offset !== undefined ? Number(offset) + 1 : this.next.get(p);
      if (next !== undefined) at.set(p, next);
    }
    return at;
  }

  /**
   * Backpressure: stops fetching until the outputs in flight have been made durable. Resumes in
   * `finally`: a heartbeat that throws (the group is rebalancing) must not leave the partitions
   * paused for good. False when it stopped waiting because the source is stopping or holding.
   */
  private async waitForRoom(heartbeat: () => Promise<void>): Promise<boolean> {
    const { queue } = this.options;
    this.pause();
    try {
      while (!queue.hasRoom() && !this.stopping && !this.holding) {
        await Promise.race([queue.whenReady(), sleep(1000)]);
        await heartbeat();
      }
    } finally {
      if (!this.holding) {
        this.resume();
        // Partitions backing off stay paused until their own timers resume them.
        const now = Date.now();
        for (const [partition, b] of this.backoff) if (b.retryAt > now) this.pause([partition]);
      }
    }
    return queue.hasRoom();
  }

  /**
   * Pauses `partitions` (all when omitted). Between two runs of the consumer (kafkajs restarting
   * it after a crash, in its own time) kafkajs refuses; nothing is fetched then, and a new run
   * fetches anew, so there is nothing to pause. Refused, it threw out of a rejoin, and the
   * failure that followed left a process spinning (see TransactionalSink.pump).
   */
  private pause(partitions?: number[]): void {
    this.betweenRuns(() => this.consumer.pause([partitions ? { topic: this.options.topic, partitions } : { topic: this.options.topic }]));
  }

  /** Resumes `partitions` (all when omitted); nothing to do between runs (see pause). */
  private resume(partitions?: number[]): void {
    this.betweenRuns(() => this.consumer.resume([partitions ? { topic: this.options.topic, partitions } : { topic: this.options.topic }]));
  }

  private betweenRuns(call: () => void): void {
    try {
      call();
    } catch (err) {
      if (!(err instanceof Error && /not initialized/.test(err.message))) throw err;
      this.logger.debug({ err: err.message }, 'the consumer is between runs: nothing to pause or resume');
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const p of [...this.backoff.keys()]) this.clearBackoff(p);
    await this.consumer.stop();
    this.subscriber?.complete();
  }

  /**
   * Leaves the group and joins again. First nothing more is handed on and what is in flight is
   * drained (`rejoin.drain`: stepped, and made durable or dropped); the lost partitions are then
   * forgotten, so that if the group gives them back they are prepared from what is committed. The
   * others, if given back, go on from where they were.
   *
   * A partition lost while a restart is under way joins it: it is forgotten with the others.
   * (Ignoring it, as before, left the source handing on its records from where it was, past the
   * outputs the sink had dropped.) A drain that outlasts its deadline rejects: a consumer paused
   * for good, owning partitions it does not serve, is the one outcome worse than stopping, which
   * resumes from what is committed.
   */
  async restart(lost: readonly number[], rejoin: Rejoin): Promise<void> {
    if (this.stopping) return;
    for (const p of lost) this.lostPending.add(p);
    if (this.holding) return;
    this.holding = true;
    try {
      this.pause();
      const drained = (async () => {
        await rejoin.drain();
        await this.consumer.stop();
      })();
      // Infinity is no deadline (a timer of Infinity ms would fire at once).
      if ((Number.isFinite(rejoin.drainTimeoutMs) ? await within(rejoin.drainTimeoutMs, drained) : await drained) === 'timeout') {
        const partitions = [...this.lostPending].sort((a, b) => a - b).join(', ');
        throw new RnnStreamError(
          `rejoining after input partition(s) ${partitions} were lost: what was in flight was not made durable within ${rejoin.drainTimeoutMs} ms (rejoinDrainTimeoutMs); stopping, so that a restart resumes from what is committed`,
        );
      }
      // After the stop, so that no partition lost meanwhile is left out.
      const forget = [...this.lostPending];
      this.lostPending.clear();
      for (const p of forget) {
        this.owned.delete(p);
        this.next.delete(p);
        this.prepared.delete(p);
        this.clearBackoff(p);
      }
      rejoin.forget(forget);
    } finally {
      this.holding = false;
    }
    if (this.stopping) return;
    // A stopped consumer forgets what was paused: the next run fetches every partition.
    await this.rejoin();
  }
}
