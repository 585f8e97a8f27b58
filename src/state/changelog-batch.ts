/**
 * The changelog's side of the keyed-state engine: what a set of outputs makes of the changelog.
 *
 * Each prediction of a logged run carries its key's state right after it (a capture, possibly
 * still on the device: deferred-captures.ts). A sink gathers the captures of one produce request
 * or transaction in a ChangelogBatch, merges batches as their outputs become durable, and asks the
 * batch for its records when it writes the changelog. The batch keeps the latest capture per key,
 * lets go of every capture it replaces or drops (so that device memory is freed when nobody will
 * read it), reads what is still on the device in one read-back, and encodes each key's record with
 * the store's codec. So the sinks handle bytes only: they never hold the store, and never manage
 * a capture's device memory.
 */
import { dropCapture, resolveCaptures } from './deferred-captures.js';
import type { KeySnapshot } from './snapshot-codec.js';

/** One changelog record: a key's state (or a tombstone: the key ended), in its input partition. */
export interface ChangelogRecord {
  readonly key: string;
  /** The encoded state; null for a key that ended (log compaction then removes the key). */
  readonly value: Uint8Array | null;
  /** The input partition of the event the state reflects (the changelog is partitioned like the input). */
  readonly partition: number | undefined;
}

/** Encodes captured states as one changelog value (the store's codec: KeyStateStore.encode). */
export type SnapshotEncoder = (snapshots: Iterable<KeySnapshot>) => Uint8Array;

/** Whether a state of `partition` (undefined: no position) is still this member's to write. */
export type OwnsPartition = (partition: number | undefined) => boolean;

/** The input partition a captured state belongs to: that of the event it reflects. */
const partitionOf = (s: KeySnapshot): number | undefined => s.position?.partition;

export class ChangelogBatch {
  private readonly states = new Map<string, KeySnapshot>();
  /** Keys whose latest event was their last (`ends`): their record is a tombstone. */
  private readonly ended = new Set<string>();

  constructor(private readonly encode: SnapshotEncoder) {}

  /** One output's key, its state right after it (if captured) and whether it ended its key. */
  add(key: string, state: KeySnapshot | undefined, ended: boolean): void {
    if (state) {
      // A newer capture of the key replaces this batch's: the older one is never read.
      dropCapture(this.states.get(key));
      this.states.set(key, state);
    }
    if (ended) this.ended.add(key);
    else if (this.ended.size > 0) this.ended.delete(key);
  }

  /**
   * Moves `later`'s keys into this batch (its outputs came after this batch's): each key's newer
   * state wins. States of partitions `owns` refuses are let go instead. `later` is left empty.
   */
  absorb(later: ChangelogBatch, owns: OwnsPartition): void {
    for (const [key, s] of later.states) {
      if (!owns(partitionOf(s))) {
        dropCapture(s);
        continue;
      }
      dropCapture(this.states.get(key));
      this.states.set(key, s);
      if (later.ended.has(key)) this.ended.add(key);
      else this.ended.delete(key);
    }
    later.states.clear();
    later.ended.clear();
  }

  /** Lets go of the states of partitions `owns` refuses (revoked); how many keys they were. */
  release(owns: OwnsPartition = () => false): number {
    let released = 0;
    for (const [key, s] of this.states) {
      if (owns(partitionOf(s))) continue;
      dropCapture(s);
      this.states.delete(key);
      this.ended.delete(key);
      released++;
    }
    return released;
  }

  /**
   * The changelog records of the keys whose states `owns` accepts (the rest are let go): states
   * still on the device are read back first, in one read (readAhead reads many batches' at once).
   */
  async records(owns: OwnsPartition = () => true): Promise<ChangelogRecord[]> {
    this.release(owns);
    await resolveCaptures(this.toRead());
    const records: ChangelogRecord[] = [];
    for (const [key, s] of this.states) {
      const ended = this.ended.has(key);
      records.push({ key, value: ended ? null : this.encode([s]), partition: partitionOf(s) });
    }
    return records;
  }

  /**
   * Reads back, in one go, the states these batches will encode (those still on the device). An
   * ended key's record is a tombstone and needs no state: its capture is let go unread.
   */
  static readAhead(batches: Iterable<ChangelogBatch>): Promise<void> {
    const wanted: KeySnapshot[] = [];
    for (const b of batches) wanted.push(...b.toRead());
    return resolveCaptures(wanted);
  }

  /** The states this batch will encode; the captures of ended keys are let go unread. */
  private toRead(): KeySnapshot[] {
    const wanted: KeySnapshot[] = [];
    for (const [key, s] of this.states) {
      if (this.ended.has(key)) dropCapture(s);
      else wanted.push(s);
    }
    return wanted;
  }
}
