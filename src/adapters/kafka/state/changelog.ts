/**
 * State follows partitions (after Quix Streams' state): the changelog topic is partitioned like
 * the input, so the state of the keys of input partition p is in changelog partition p. When a
 * partition is assigned, its changelog partition is read from the beginning to its end and
 * restored into the store before any of the partition's events are processed (the runner's
 * `prepare`; it also drops a revoked partition's keys). A tombstone (a key that ended) removes
 * the key. With exactly-once the reader sees only committed transactions (kafkajs reads
 * read_committed), so the state it restores is exactly that of the committed offsets.
 *
 * kafkajs reads only through consumer groups, and joining a group takes seconds, so one reader
 * (a consumer in a group of its own, owning every changelog partition) is started with the
 * service and kept: a restore seeks a partition to its beginning, resumes it, reads to the end
 * offset taken when the restore began, and pauses it again.
 *
 * Standby copies (see standby.ts) use the same reader: a standby partition is read without end
 * into a store of its own (one per partition, as Kafka Streams has one per standby task). When
 * the group gives this member that partition, its restore reads only what the copy has not read
 * yet, then the copy's columns become part of the service's store, chunk by chunk.
 */
import { randomUUID } from 'node:crypto';
import type { Admin, Batch, Consumer, Kafka } from 'kafkajs';
import { RnnStreamError, SnapshotError } from '../../../core/errors.js';
import { INPUT_REPARTITIONED_HELP } from '../cluster/topics.js';
import type { Logger } from '../../../observability/logger.js';
import type { StateRestorer } from '../../../runner/types.js';
import type { KeyStateStore } from '../../../state/key-state-store.js';
import { peekSnapshotPositions, statePositionAtLeast, type StatePosition } from '../../../state/snapshot-codec.js';
import { decodeModelMarker, isModelMarker, type ModelMarker } from '../../../state/model-marker.js';
import { createSerial, type Serial } from '../cluster/serial.js';

/**
 * A changelog record may replace a key's restored state only if it reflects the same or a later
 * input position. Last-written is not enough: after a rebalance, the previous owner's in-flight
 * events of a revoked partition can still write their state after the new owner's writes.
 */
export const notBehind = (incoming: StatePosition | undefined, resident: StatePosition | undefined): boolean => statePositionAtLeast(incoming, resident) ?? true;

/**
 * kafkajs's Batch as it is at run time: its type leaves out the offset the fetch asked for and
 * whether anything but aborted or control records came back.
 */
type FetchedBatch = Batch & { readonly fetchedOffset: string; isEmptyIncludingFiltered(): boolean };

export interface RestoreReport {
  readonly partitions: readonly number[];
  /** Those of `partitions` that were standby copies here: only their changelog's tail was read. */
  readonly fromStandby: readonly number[];
  /** Keys of the restored partitions resident after the restore. */
  readonly keys: number;
  readonly messages: number;
  readonly refused: number;
  readonly seconds: number;
  /** Per restored partition, the latest model marker its changelog holds (a hot swap's record: state/model-marker.ts). */
  readonly markers: Readonly<Record<number, ModelMarker>>;
}

export interface RestoreProgress {
  /** Changelog records and bytes read since the last report. */
  readonly records: number;
  readonly bytes: number;
  /** Offsets still to read, over every partition being restored. */
  readonly remainingRecords: number;
  readonly partitionsInProgress: number;
}

/**
 * Offsets as numbers: exact below 2^53, which no partition reaches (at a million records a
 * second, 285 years). BigInt per record was a tenth of a restore's time.
 */
interface Job {
  /**
   * The high watermark when the restore began: the last record below it is never compacted away
   * (it is in the active segment). Infinity for a standby copy, which reads on until a restore
   * of its partition gives it an end.
   */
  end: number;
  /** The next offset to apply: batches fetched before the seek to 0 are recognised and skipped. */
  next: number;
  /** Where its records go: the service's store, or the partition's standby store. */
  readonly target: KeyStateStore;
  messages: number;
  refused: number;
  /** The latest model marker read (hot swap). */
  marker?: ModelMarker;
  resolve(): void;
}

/** A job that reads on without end: a standby copy no restore has claimed. */
const isStandby = (job: Job): boolean => job.end === Number.POSITIVE_INFINITY;

export interface ChangelogRestorerParts {
  readonly kafka: Kafka;
  readonly admin: Admin;
  readonly changelogTopic: string;
  /** The service's consumer group; the reader joins a group of its own named after it. */
  readonly group: string;
  readonly store: KeyStateStore;
  /** Makes a store for one partition's standby copy (the same model and carry as `store`); absent: no standbys. */
  readonly standbyStore?: () => KeyStateStore;
  readonly logger: Logger;
  /** After each restore, what it read. */
  readonly onRestored?: (r: RestoreReport) => void;
  /** As restores read: records and bytes since the last call, and what is left (for the metrics). */
  readonly onProgress?: (p: RestoreProgress) => void;
  /** A key whose latest changelog record was refused (another model's, or unreadable): it starts from zero state. */
  readonly onRefused?: (key: string) => void;
  /** Admin calls one at a time (shared with the service's other admin calls). */
  readonly adminCalls?: Serial;
}

export class ChangelogRestorer implements StateRestorer {
  private readonly jobs = new Map<number, Job>();
  private reader: Consumer | undefined;
  private ready: Promise<void> | undefined;

  private readonly kafka: Kafka;
  private readonly admin: Admin;
  private readonly changelogTopic: string;
  private readonly group: string;
  private readonly store: KeyStateStore;
  private readonly standbyStore: (() => KeyStateStore) | undefined;
  /** Each standby partition's copy. */
  private readonly standbys = new Map<number, KeyStateStore>();
  /** The input partitions this member owns now (never tailed as standbys). */
  private owned = new Set<number>();
  /** The partitions this member should keep standby copies of. */
  private standbyWanted = new Set<number>();
  private readonly logger: Logger;
  private readonly onRestored: (r: RestoreReport) => void;
  private readonly onProgress: (p: RestoreProgress) => void;
  private readonly onRefused: (key: string) => void;
  private readonly adminCalls: Serial;

  constructor(parts: ChangelogRestorerParts) {
    ({ kafka: this.kafka, admin: this.admin, changelogTopic: this.changelogTopic, group: this.group, store: this.store, standbyStore: this.standbyStore, logger: this.logger } = parts);
    this.onRestored = parts.onRestored ?? (() => {});
    this.onProgress = parts.onProgress ?? (() => {});
    this.onRefused = parts.onRefused ?? (() => {});
    this.adminCalls = parts.adminCalls ?? createSerial();
  }

  /** Starts the reader (joining its own group); restores wait for it. */
  start(): Promise<void> {
    return (this.ready ??= (async () => {
      const reader = this.kafka.consumer({ groupId: `${this.group}.changelog-reader.${randomUUID()}`, allowAutoTopicCreation: false, maxWaitTimeInMs: 100 });
      this.reader = reader;
      await reader.connect();
      await reader.subscribe({ topic: this.changelogTopic, fromBeginning: true });
      let joined!: () => void;
      const hasJoined = new Promise<void>((r) => (joined = r));
      reader.on(reader.events.GROUP_JOIN, () => joined());
      // kafkajs calls eachBatch only for batches with records left after filtering; one that
      // held only transaction markers or aborted records (how an exactly-once changelog ends)
      // is seen here alone.
      reader.on(reader.events.END_BATCH_PROCESS, (e) => {
        if (e.payload.batchSize === 0) this.passFiltered(e.payload.partition, e.payload.firstOffset, e.payload.lastOffset);
      });
      await reader.run({ autoCommit: false, eachBatchAutoResolve: true, eachBatch: async ({ batch }) => this.apply(batch as FetchedBatch) });
      await hasJoined;
    })());
  }

  async stop(): Promise<void> {
    await this.reader?.disconnect();
  }

  /**
   * Applies one fetched batch of a partition being restored. A batch counts only if it was
   * fetched at or before the next offset to apply (`fetchedOffset`): one fetched before the seek
   * to the beginning starts further on and is dropped, and the reader waits for the one from
   * the beginning. Within a batch, offsets may jump: a compacted changelog has gaps wherever
   * the cleaner removed superseded records, so a gap is not a missing batch.
   */
  private apply(batch: FetchedBatch): void {
    const { partition, messages } = batch;
    const job = this.jobs.get(partition);
    if (!job) {
      // Not being restored: stop reading it until a restore asks for it.
      this.reader!.pause([{ topic: this.changelogTopic, partitions: [partition] }]);
      return;
    }
    if (Number(batch.fetchedOffset) > job.next) return;
    const { target } = job;
    let records = 0;
    let bytes = 0;
    for (const m of messages) {
      const offset = Number(m.offset);
      if (offset < job.next) continue;
      if (offset >= job.end) break;
      job.next = offset + 1;
      records++;
      bytes += (m.value?.length ?? 0) + (m.key?.length ?? 0);
      if (!m.value) {
        if (m.key) target.delete(m.key.toString());
        continue;
      }
      if (isModelMarker(m.value)) {
        this.readMarker(job, partition, m.value);
        continue;
      }
      job.messages++;
      try {
        target.restore(m.value, notBehind);
      } catch (err) {
        if (!(err instanceof SnapshotError)) throw err;
        this.refuse(job, m.key?.toString(), m.value, err);
      }
    }
    // The batch's last offset counts control records (transaction markers), which take offsets
    // but are not messages: a changelog written in transactions ends on one.
    if (!batch.isEmptyIncludingFiltered()) {
      const last = Number(batch.lastOffset()) + 1;
      if (last > job.next) job.next = last;
    }
    if (job.next >= job.end) this.finish(partition);
    this.progress(records, bytes);
  }

  /** Reports what was read, and what is left over every partition being restored. */
  private progress(records: number, bytes: number): void {
    let remaining = 0;
    let restoring = 0;
    for (const j of this.jobs.values()) {
      if (isStandby(j)) continue;
      remaining += Math.max(0, j.end - j.next);
      restoring++;
    }
    this.onProgress({ records, bytes, remainingRecords: remaining, partitionsInProgress: restoring });
  }

  /**
   * State written by another model (or unreadable) is refused. Only a key's latest record counts:
   * when the refused one is (it is not behind the state restored so far), the key starts afresh
   * from zero state, as a new key would, and never keeps an older record of this model's. After
   * model A, then B, then A again, A's state from before B is stale: B's events since are not in it.
   */
  private refuse(job: Job, messageKey: string | undefined, bytes: Buffer, err: SnapshotError): void {
    const peeked = peekSnapshotPositions(bytes) ?? (messageKey === undefined ? [] : [{ key: messageKey, position: undefined }]);
    for (const { key, position } of peeked) {
      const resident = job.target.positionOf(key);
      if (resident && statePositionAtLeast(position, resident) === false) continue; // an older record: changes nothing
      job.target.delete(key);
      job.refused++;
      this.onRefused(key);
      if (job.refused === 1) this.logger.warn({ key, reason: err.message }, 'changelog state refused: the key starts again from zero state (counted in rnnstream_restore_refused_keys_total)');
    }
  }

  /** A model marker: kept as the partition's latest; a malformed one is logged and skipped (it explains state, it is none). */
  private readMarker(job: Job, partition: number, value: Buffer): void {
    try {
      job.marker = decodeModelMarker(value);
    } catch (err) {
      this.logger.warn({ partition, topic: this.changelogTopic, err: (err as Error).message }, 'changelog model marker unreadable; skipped');
    }
  }

  /**
   * A fetched batch that held no records after filtering (markers, aborted records): the
   * partition's restore moves past it, if it starts at or before the next offset to apply.
   */
  private passFiltered(partition: number, firstOffset: string | null, lastOffset: string): void {
    const job = this.jobs.get(partition);
    if (!job || firstOffset === null || Number(firstOffset) > job.next) return;
    const last = Number(lastOffset) + 1;
    if (last > job.next) job.next = last;
    if (job.next >= job.end) this.finish(partition);
    this.progress(0, 0);
  }

  private finish(partition: number): void {
    const job = this.jobs.get(partition);
    if (!job) return;
    this.jobs.delete(partition);
    this.reader?.pause([{ topic: this.changelogTopic, partitions: [partition] }]);
    job.resolve();
  }

  /**
   * Reads `partition`'s changelog partition into the store, from its start to its end now; or,
   * when this member kept a standby copy of it, from where the copy has read to its end now.
   */
  restore(partition: number): Promise<void> {
    return this.read([partition]);
  }

  /** The input partitions this member owns now: a standby copy of one of them waits for its restore. */
  assigned(partitions: readonly number[]): void {
    this.owned = new Set(partitions);
  }

  /**
   * The partitions to keep standby copies of from now on (see standby.ts). A new one is read
   * from its start into the standby store; one no longer wanted is dropped from it. One this
   * member owns, or whose restore is under way, is left to the restore: a member given the
   * partitions it kept copies of is placed no copies of them, and that placement comes before
   * their restores, which would then have read everything.
   */
  standbyFor(partitions: readonly number[]): void {
    const standbyStore = this.standbyStore;
    if (!standbyStore) return;
    this.standbyWanted = new Set(partitions);
    for (const [p, job] of [...this.jobs]) {
      if (!isStandby(job) || this.standbyWanted.has(p) || this.owned.has(p)) continue;
      this.jobs.delete(p);
      this.reader?.pause([{ topic: this.changelogTopic, partitions: [p] }]);
      this.standbys.delete(p);
    }
    for (const p of this.standbyWanted) if (!this.jobs.has(p) && !this.owned.has(p)) void this.tail(p, standbyStore);
  }

  /** Keys held as standby copies (not serving). */
  get standbyKeys(): number {
    let n = 0;
    for (const s of this.standbys.values()) n += s.size;
    return n;
  }

  /** Starts reading changelog partition `partition` without end into a standby store of its own. */
  private async tail(partition: number, standbyStore: () => KeyStateStore): Promise<void> {
    try {
      await this.start();
      const offsets = await this.adminCalls(() => this.admin.fetchTopicOffsets(this.changelogTopic));
      const low = offsets.find((o) => o.partition === partition)?.low;
      // Placed elsewhere, owned or being restored meanwhile: nothing to start.
      if (low === undefined || this.jobs.has(partition) || !this.standbyWanted.has(partition) || this.owned.has(partition)) return;
      const standby = standbyStore();
      this.standbys.set(partition, standby);
      this.jobs.set(partition, { end: Number.POSITIVE_INFINITY, next: Number(low), target: standby, messages: 0, refused: 0, resolve: () => {} });
      this.reader!.seek({ topic: this.changelogTopic, partition, offset: low });
      this.reader!.resume([{ topic: this.changelogTopic, partitions: [partition] }]);
      this.logger.info({ partition, topic: this.changelogTopic }, 'keeping a standby copy');
    } catch (err) {
      // The next placement (a rebalance) tries again; meanwhile the partition has no warm copy.
      this.logger.warn({ partition, err: (err as Error).message }, 'a standby copy could not be started');
    }
  }

  private async read(partitions: number[]): Promise<void> {
    const started = performance.now();
    await this.start();
    // The service made the changelog before consuming (topics.ts): a failure here is one to
    // retry (the partition's preparation fails and is tried again), never "nothing to restore".
    const offsets = await this.adminCalls(() => this.admin.fetchTopicOffsets(this.changelogTopic));
    const ends = new Map(offsets.filter((o) => partitions.includes(o.partition)).map((o) => [o.partition, { low: Number(o.low), end: Number(o.high) }]));
    if (ends.size < partitions.length) {
      // No retry makes one: the input has more partitions than its changelog (partitions were
      // added to the input while the service ran), and the keys that moved cannot keep their state.
      const missing = partitions.filter((p) => !ends.has(p));
      throw new RnnStreamError(
        `changelog ${this.changelogTopic} has no partition ${missing.join(', ')} (it has ${offsets.length}): the input topic has more partitions than its changelog; ${INPUT_REPARTITIONED_HELP}`,
      );
    }
    let messages = 0;
    let refused = 0;
    const markers: Record<number, ModelMarker> = {};
    const waits: Promise<void>[] = [];
    const fromStandby: number[] = [];
    for (const [partition, { low, end }] of ends) {
      const tailing = this.jobs.get(partition);
      const standby = tailing && isStandby(tailing) ? tailing : undefined;
      if (standby) {
        fromStandby.push(partition);
        // This restore's report counts what it reads, not what the copy read before.
        standby.messages = standby.refused = 0;
      }
      if (end <= (standby?.next ?? low)) {
        if (standby) this.finish(partition);
        continue;
      }
      waits.push(
        new Promise<void>((resolve) => {
          const job: Job = standby ?? { end, next: low, target: this.store, messages: 0, refused: 0, resolve: () => {} };
          job.end = end;
          job.resolve = () => {
            messages += job.messages;
            refused += job.refused;
            if (job.marker) markers[partition] = job.marker;
            resolve();
          };
          this.jobs.set(partition, job);
        }),
      );
      if (standby) continue; // its reader reads on from where it is
      this.reader!.seek({ topic: this.changelogTopic, partition, offset: String(low) });
      this.reader!.resume([{ topic: this.changelogTopic, partitions: [partition] }]);
    }
    if (waits.length) {
      this.logger.info({ partitions: [...ends.keys()], topic: this.changelogTopic }, 'restoring state');
      this.progress(0, 0);
    }
    await Promise.all(waits);
    // The standby copies, caught up, become the partitions' state.
    for (const p of fromStandby) {
      const copy = this.standbys.get(p);
      this.standbys.delete(p);
      if (copy) this.store.adopt(copy);
    }
    // The restored partitions' keys now resident: a Set of every key restored cost as much as the
    // store's own index (a million string hashes), for one number.
    const keys = this.store.countInPartitions(new Set(ends.keys()));
    const report = { partitions, fromStandby, keys, messages, refused, seconds: (performance.now() - started) / 1000, markers };
    this.logger.info(report, 'state restored');
    this.onRestored(report);
  }
}
