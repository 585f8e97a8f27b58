/**
 * Kafka transactions for exactly-once, one transactional producer per input partition, with
 * `transactional.id = <application id>-<input topic>-<partition>`: Kafka Streams' first
 * exactly-once mode. kafkajs's sendOffsets carries no consumer-group metadata (no KIP-447), so
 * the broker can fence a zombie only through the transactional id; one id per input partition
 * makes the partition's new owner fence its old one when it initialises its producer.
 *
 * One transaction holds one commit interval of one input partition: its predictions and dead
 * letters, sent as they come (`send`, which begins the transaction), then at the interval the
 * changelog records, the partition's next input offset (sendOffsets) and the commit (`commit`).
 * A read_committed consumer sees all of it or none of it.
 *
 * Failures, as the sink must act on them:
 * - `fenced`: another producer of the partition's id has initialised since (the partition has a
 *   new owner, or the broker aborted a transaction left open past its timeout). This member's
 *   outputs for it are gone; it must not initialise again unless the group gives it the
 *   partition anew (that would fence the rightful owner).
 * - `retriable`: the transaction was aborted cleanly and may be sent again as it was (a broker
 *   outage outlasting kafkajs's retries), by a renewed producer (see `failed`).
 * - neither: the producer is unusable (its abort failed) or the content can never be written
 *   (MESSAGE_TOO_LARGE): the partition is lost, or the service must stop.
 */
import { Partitioners } from 'kafkajs';
import { RnnStreamError } from '../../../core/errors.js';
import type { Logger } from '../../../observability/logger.js';
import type { Kafka, Message, Producer, ProducerConfig, TopicMessages } from 'kafkajs';
import { isRetriableSendError, recordRefusal } from '../cluster/errors.js';
import { innermostMessage, recordBytes, splitByBytes, unpackTopics, type RefusalNotice } from './ordered-sender.js';
import { refusedRecordDeadLetter, type RefusalTopics } from '../sinks/output-records.js';
import type { WireTopicMessages } from './record-packer.js';

/** How an input partition's open transaction ends: its last records (packed) and the offset to commit with them. */
export interface TransactionContent {
  readonly records: readonly WireTopicMessages[];
  /** The partition's next offset to consume: every event before it is in this or an earlier transaction. */
  readonly nextOffset: string;
}

export class TransactionError extends RnnStreamError {
  override readonly name = 'TransactionError';
  constructor(
    message: string,
    readonly partition: number,
    /** Another producer of the partition's transactional id has taken over. */
    readonly fenced: boolean,
    retriable: boolean,
    options: { cause?: unknown; producerGone?: boolean } = {},
  ) {
    super(message, { cause: options.cause, retriable });
    this.producerGone = options.producerGone ?? fenced;
  }

  /** The partition's producer is gone (fenced, or unable to abort): it must be prepared anew. */
  readonly producerGone: boolean;
}

/** What the transactional sink commits through: in-process kafkajs, or the producer thread. */
export interface PartitionTransactions {
  /**
   * Creates the partition's producer and initialises it: the broker fences every earlier
   * producer of its transactional id and aborts (or finishes) their open transaction.
   */
  init(partition: number): Promise<void>;
  /** Sends records in the partition's open transaction, beginning one if none is open; rejects with a TransactionError (the transaction is then aborted). */
  send(partition: number, records: readonly WireTopicMessages[]): Promise<void>;
  /** Sends the last records and the offset, and commits the open transaction (begun here if none is); rejects with a TransactionError. */
  commit(partition: number, content: TransactionContent): Promise<void>;
  /** Disconnects the partition's producer (revoked, or lost). */
  close(partition: number): Promise<void>;
  disconnect(): Promise<void>;
}

export interface TransactionSettings {
  /** The application's id (the consumer group): transactional ids are `<id>-<input topic>-<partition>`. */
  readonly applicationId: string;
  readonly inputTopic: string;
  /** The consumer group whose offsets each transaction commits. */
  readonly group: string;
  /** The broker aborts a transaction left open longer (a stalled or stopped member's). */
  readonly transactionTimeoutMs: number;
  /** Most bytes of records in one produce request (below the topics' max.message.bytes). */
  readonly maxRequestBytes: number;
  /** Where a record the broker refuses by itself is replaced by a minimal dead letter (without: the service stops). */
  readonly refusals?: RefusalTopics;
}

export const transactionalId = (s: Pick<TransactionSettings, 'applicationId' | 'inputTopic'>, partition: number): string => `${s.applicationId}-${s.inputTopic}-${partition}`;

/**
 * The transactional producers' settings. Retries start short: right after a commit the
 * coordinator answers the next transaction's AddPartitionsToTxn with CONCURRENT_TRANSACTIONS
 * until its markers are written (a few ms), and kafkajs's default first wait of 300 ms made
 * every transaction take a third of a second. They still outlast a broker failover (about 30 s).
 */
export const TRANSACTIONAL_PRODUCER_CONFIG: Omit<ProducerConfig, 'transactionalId'> = Object.freeze({
  idempotent: true,
  maxInFlightRequests: 1,
  // Only the service's admin path makes topics (see PRODUCER_CONFIG).
  allowAutoTopicCreation: false,
  createPartitioner: Partitioners.DefaultPartitioner,
  retry: { retries: 14, initialRetryTime: 20, maxRetryTime: 5000 },
});

/**
 * INVALID_PRODUCER_EPOCH (older request versions) and PRODUCER_FENCED: a newer producer of the
 * id exists, or the broker expired this one's transaction.
 */
const FENCED = new Set(['INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED']);

function isFenced(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    const type = (e as { type?: string }).type;
    if (type && FENCED.has(type)) return true;
  }
  return false;
}

/** Transactions through kafkajs producers on the calling thread (one per input partition). */
type Transaction = Awaited<ReturnType<Producer['transaction']>>;

export class KafkajsTransactions implements PartitionTransactions {
  private readonly producers = new Map<number, Producer>();
  /** Each partition's open transaction, if one is. */
  private readonly open = new Map<number, Transaction>();
  /** Partitions whose transactions are sent isolated (see the module's comment) until one commits. */
  private readonly isolated = new Set<number>();

  constructor(
    private readonly kafka: Kafka,
    private readonly settings: TransactionSettings,
    private readonly logger: Logger,
    /** A refused record was replaced by a minimal dead letter. */
    private readonly onRefused?: (notice: RefusalNotice) => void,
  ) {}

  async init(partition: number): Promise<void> {
    await this.close(partition);
    const producer = this.kafka.producer({ ...TRANSACTIONAL_PRODUCER_CONFIG, transactionalId: transactionalId(this.settings, partition), transactionTimeout: this.settings.transactionTimeoutMs });
    await producer.connect();
    try {
      // kafkajs initialises the producer id on a producer's first transaction; an empty one
      // (begun and aborted, nothing sent) does it now, before this member reads the partition's
      // committed offset and state.
      const first = await producer.transaction();
      await first.abort();
    } catch (err) {
      await producer.disconnect().catch(() => undefined);
      throw new TransactionError(`initialising the transactional producer of partition ${partition} failed: ${(err as Error).message}`, partition, false, isRetriableSendError(err), { cause: err });
    }
    this.producers.set(partition, producer);
  }

  private producer(partition: number): Producer {
    const producer = this.producers.get(partition);
    if (!producer) throw new TransactionError(`partition ${partition} has no transactional producer (not prepared, or lost)`, partition, false, false, { producerGone: true });
    return producer;
  }

  private async sendIn(partition: number, transaction: Transaction, records: readonly WireTopicMessages[]): Promise<void> {
    const topicMessages = unpackTopics(records);
    if (topicMessages.length === 0) return;
    if (this.isolated.has(partition)) return this.sendIsolated(transaction, topicMessages);
    for (const request of splitByBytes(topicMessages, this.settings.maxRequestBytes)) await transaction.sendBatch({ topicMessages: request, acks: -1 });
  }

  /** One destination's records per request; a refused request's records one by one (see the module's comment). */
  private async sendIsolated(transaction: Transaction, topicMessages: TopicMessages[]): Promise<void> {
    for (const group of byDestination(topicMessages)) {
      for (const request of splitByBytes([group], this.settings.maxRequestBytes)) {
        try {
          await transaction.sendBatch({ topicMessages: request, acks: -1 });
        } catch (err) {
          if (recordRefusal(err) === undefined) throw err;
          for (const message of request[0]!.messages) await this.sendOrReplace(transaction, group.topic, message);
        }
      }
    }
  }

  /** One record alone; if the broker refuses it, its minimal dead letter (a refused replacement, or none, fails the transaction). */
  private async sendOrReplace(transaction: Transaction, topic: string, message: Message): Promise<void> {
    try {
      await transaction.sendBatch({ topicMessages: [{ topic, messages: [message] }], acks: -1 });
    } catch (err) {
      const refusal = recordRefusal(err);
      const reason = `${refusal}: ${innermostMessage(err as Error)}`;
      const replacement = refusal !== undefined && this.settings.refusals ? refusedRecordDeadLetter(this.settings.refusals, topic, message, reason) : undefined;
      if (!replacement) throw err;
      await transaction.sendBatch({ topicMessages: [replacement], acks: -1 });
      this.onRefused?.({ topic, bytes: recordBytes(message), reason, replacedIn: replacement.topic });
    }
  }

  async send(partition: number, records: readonly WireTopicMessages[]): Promise<void> {
    const producer = this.producer(partition);
    let transaction = this.open.get(partition);
    try {
      if (!transaction) this.open.set(partition, (transaction = await producer.transaction()));
      await this.sendIn(partition, transaction, records);
    } catch (err) {
      this.open.delete(partition);
      throw await this.failed(partition, producer, transaction, err);
    }
  }

  async commit(partition: number, content: TransactionContent): Promise<void> {
    const producer = this.producer(partition);
    let transaction = this.open.get(partition);
    this.open.delete(partition);
    try {
      transaction ??= await producer.transaction();
      await this.sendIn(partition, transaction, content.records);
      await transaction.sendOffsets({ consumerGroupId: this.settings.group, topics: [{ topic: this.settings.inputTopic, partitions: [{ partition, offset: content.nextOffset }] }] });
    } catch (err) {
      throw await this.failed(partition, producer, transaction, err);
    }
    try {
      await transaction.commit();
    } catch (err) {
      throw await this.commitInDoubt(partition, producer, err);
    }
    this.isolated.delete(partition);
  }

  /**
   * A commit that failed after kafkajs began it (EndTxn sent, or its connection lost: the
   * broker-kill test killed the coordinator's broker there) is in doubt: the coordinator may have
   * committed the transaction or not, and kafkajs's producer stays COMMITTING, unable to begin,
   * commit or abort another. Sending the transaction again (as after an abort) could write it
   * twice, and the producer's next `transaction()` fails anyway ("Cannot call beginTransaction
   * in state COMMITTING", which stopped the service in one CI run of five). So the producer is
   * dropped: the partition is prepared anew, its new producer's initialisation makes the
   * coordinator finish the transaction one way or the other, and the committed offset and
   * changelog then say what happened.
   */
  private async commitInDoubt(partition: number, producer: Producer, err: unknown): Promise<TransactionError> {
    this.logger.warn({ partition, err: (err as Error).message }, 'the commit of a transaction failed midway and is in doubt; the partition is prepared anew');
    await this.drop(partition, producer);
    return new TransactionError(`the commit of partition ${partition}'s transaction is in doubt: ${(err as Error).message}`, partition, isFenced(err), false, { cause: err, producerGone: true });
  }

  /** The error a failed transaction becomes, after aborting it where that is still possible. */
  private async failed(partition: number, producer: Producer, transaction: { abort(): Promise<void>; isActive(): boolean } | undefined, err: unknown): Promise<TransactionError> {
    const message = `the transaction of partition ${partition} failed: ${(err as Error).message}`;
    if (isFenced(err)) {
      await this.drop(partition, producer);
      return new TransactionError(message, partition, true, false, { cause: err });
    }
    try {
      if (transaction?.isActive()) await transaction.abort();
    } catch (abortErr) {
      // Neither committed nor aborted: the producer cannot begin another. The broker aborts the
      // transaction at its timeout; the partition must be prepared anew.
      this.logger.warn({ partition, err: (abortErr as Error).message }, 'aborting a failed transaction failed too');
      await this.drop(partition, producer);
      return new TransactionError(`${message}; aborting it failed too: ${(abortErr as Error).message}`, partition, isFenced(abortErr), false, { cause: err, producerGone: true });
    }
    // Aborted. A refused record: sent again isolated, which finds it and replaces it.
    const refused = recordRefusal(err) !== undefined && this.settings.refusals !== undefined && !this.isolated.has(partition);
    const retriable = refused || isRetriableSendError(err);
    if (!retriable) return new TransactionError(message, partition, false, false, { cause: err });
    // Sent again, then, but not by this producer. kafkajs rolls back the sequence numbers of every
    // partition in a failed broker request, also of those the broker wrote; this producer would
    // send their records again under the same numbers, and the broker would take them for
    // duplicates of the aborted ones and drop them: lost (found by the refused-record test, a run
    // in three, when the prediction's partition and the refused dead letter's shared a leader).
    // A new producer of the same transactional id (the epoch bumped) numbers afresh.
    try {
      await this.init(partition);
    } catch (initErr) {
      return new TransactionError(`${message}; its producer could not be renewed: ${(initErr as Error).message}`, partition, isFenced(initErr), false, { cause: err, producerGone: true });
    }
    if (refused) {
      this.isolated.add(partition);
      this.logger.warn({ partition, err: (err as Error).message }, 'the broker refused a record; the transaction was aborted and is sent again isolated');
    }
    return new TransactionError(refused ? `${message}; sending it again isolated` : message, partition, false, true, { cause: err });
  }

  private async drop(partition: number, producer: Producer): Promise<void> {
    if (this.producers.get(partition) === producer) {
      this.producers.delete(partition);
      this.open.delete(partition);
      this.isolated.delete(partition);
    }
    await producer.disconnect().catch(() => undefined);
  }

  async close(partition: number): Promise<void> {
    const producer = this.producers.get(partition);
    if (producer) await this.drop(partition, producer);
  }

  async disconnect(): Promise<void> {
    await Promise.allSettled([...this.producers.keys()].map((p) => this.close(p)));
  }
}

/**
 * A request's records grouped by where they land: a topic and an explicit partition, or a topic
 * and a key (the partitioner sends one key to one partition); an unkeyed record without a
 * partition alone. Each group's records keep their order.
 */
function byDestination(topicMessages: readonly TopicMessages[]): TopicMessages[] {
  const groups = new Map<string, TopicMessages>();
  let alone = 0;
  for (const t of topicMessages) {
    for (const m of t.messages) {
      const where = m.partition !== undefined ? `p${m.partition}` : m.key != null ? `k${Buffer.from(m.key).toString('base64')}` : `n${alone++}`;
      const id = `${t.topic}\u0000${where}`;
      let group = groups.get(id);
      if (!group) groups.set(id, (group = { topic: t.topic, messages: [] }));
      group.messages.push(m);
    }
  }
  return [...groups.values()];
}
