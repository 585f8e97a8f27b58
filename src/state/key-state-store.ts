/**
 * Per-key recurrent state: every layer's hidden (and LSTM cell) vector for each key, what the
 * key remembers of its last event (the pipeline's `carry` fields, for delta features), its
 * sequence number, how many steps it has absorbed, and where its last event came from.
 *
 * Users see a small get/set interface (`get`, `set`, `delete`, `keys`); the operators step keys
 * by slot. Each key owns a slot; a slot's values live in typed columns, 4,096 slots to a chunk,
 * so a key costs its state's floats plus about a hundred bytes, not a graph of objects: a
 * Map entry from key to slot, the key string, and a few numbers in columns. Chunks are never
 * reallocated (growing adds one), so peak memory does not double while the store grows.
 *
 * Bounded two ways, both counted: a capacity (the least recently used key is evicted to admit a
 * new one) and an idle TTL (a key unseen for longer is evicted). An evicted key that comes back
 * restarts from zero state, as a brand-new key would. Slots are linked oldest to newest, so a
 * touch and an eviction are O(1); a freed slot is reused by the next new key.
 *
 * State follows input partitions: each key is tagged with the partition of its last event, and
 * `dropPartition` removes exactly a revoked partition's keys. Snapshots are the codec's bytes
 * (snapshot-codec.ts), tagged with the model's hash.
 */
import { SnapshotError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { z } from 'zod';
import { decodeSnapshots, encodeSnapshots, type KeySnapshot, type SnapshotShape, type StatePosition } from './snapshot-codec.js';

export type { KeySnapshot, StatePosition } from './snapshot-codec.js';

/** Keys held in memory by default; the least recently used is evicted past it. */
export const DEFAULT_KEY_CAPACITY = 1_000_000;

export interface StoreCounters {
  readonly created: number;
  readonly evictedByCapacity: number;
  readonly evictedByTtl: number;
}

export const keyStateStoreOptionsSchema = z
  .object({
    /** Most keys held at once. */
    capacity: z.int().positive().default(DEFAULT_KEY_CAPACITY),
    /** Evict keys idle for longer than this many ms (absent: never). */
    idleTtlMs: z.number().positive().optional(),
    /** Values remembered of each key's last event (the pipeline's carry fields). */
    carrySize: z.int().nonnegative().default(0),
  })
  .strict();
export type KeyStateStoreOptions = z.input<typeof keyStateStoreOptionsSchema>;

const CHUNK_BITS = 12;
/** Slots per chunk: columns are allocated this many keys at a time. */
export const CHUNK_SLOTS = 1 << CHUNK_BITS;
const SLOT_MASK = CHUNK_SLOTS - 1;
const NONE = -1;

/**
 * The columns of CHUNK_SLOTS slots. Slot s lives in chunk `s >> 12` at index `s & 4095`; its
 * state floats are `state[index * stateSize ...]`, its carry `carry[index * carrySize ...]`.
 */
export class SlotChunk {
  readonly keys: (string | undefined)[] = new Array<string | undefined>(CHUNK_SLOTS).fill(undefined);
  readonly state: Float32Array;
  readonly carry: Float64Array;
  readonly steps = new Float64Array(CHUNK_SLOTS);
  readonly lastSeen = new Float64Array(CHUNK_SLOTS);
  /** The input partition of the key's last event; -1: none. */
  readonly partition = new Int32Array(CHUNK_SLOTS).fill(NONE);
  readonly offset = new Float64Array(CHUNK_SLOTS);
  /** The pipeline's sequence number of the last applied event; NaN: none. */
  readonly sequence = new Float64Array(CHUNK_SLOTS).fill(Number.NaN);
  readonly lastClass = new Int32Array(CHUNK_SLOTS).fill(NONE);
  /** Least-recently-used links (slot numbers; -1: none). */
  readonly older = new Int32Array(CHUNK_SLOTS).fill(NONE);
  readonly newer = new Int32Array(CHUNK_SLOTS).fill(NONE);

  constructor(stateSize: number, carrySize: number) {
    this.state = new Float32Array(CHUNK_SLOTS * stateSize);
    this.carry = new Float64Array(CHUNK_SLOTS * carrySize);
  }
}

export class KeyStateStore {
  private readonly slots = new Map<string, number>();
  /** Column chunks; slot s is in chunks[s >> 12]. */
  readonly chunks: SlotChunk[] = [];
  private used = 0;
  private readonly free: number[] = [];
  private oldest = NONE;
  private newest = NONE;
  readonly capacity: number;
  readonly carrySize: number;
  readonly stateSize: number;
  private readonly idleTtlMs: number;
  private readonly shape: SnapshotShape;
  private counters = { created: 0, evictedByCapacity: 0, evictedByTtl: 0 };

  constructor(
    readonly model: RnnModel,
    options: KeyStateStoreOptions = {},
  ) {
    const parsed = keyStateStoreOptionsSchema.parse(options);
    this.capacity = parsed.capacity;
    this.carrySize = parsed.carrySize;
    this.stateSize = model.stateSize;
    this.idleTtlMs = parsed.idleTtlMs ?? Number.POSITIVE_INFINITY;
    this.shape = { hash: model.hash, name: model.name, stateSize: model.stateSize, carrySize: parsed.carrySize };
  }

  get size(): number {
    return this.slots.size;
  }

  get stats(): StoreCounters {
    return { ...this.counters };
  }

  /** The chunk holding `slot` (its index there is `slot & (CHUNK_SLOTS - 1)`). */
  chunkOf(slot: number): SlotChunk {
    return this.chunks[slot >> CHUNK_BITS]!;
  }

  /**
   * The key's slot if resident and not idle past the TTL at `now` (an idle one is evicted);
   * -1 when absent. Does not touch recency.
   */
  find(key: string, now?: number): number {
    const slot = this.slots.get(key);
    if (slot === undefined) return NONE;
    if (now !== undefined && now - this.chunkOf(slot).lastSeen[slot & SLOT_MASK]! > this.idleTtlMs) {
      this.remove(slot);
      this.counters.evictedByTtl++;
      return NONE;
    }
    return slot;
  }

  /** The key's slot, created at zero state if absent; marks it most recently used at `now`. */
  acquire(key: string, now: number): number {
    let slot = this.find(key, now);
    if (slot !== NONE) this.unlink(slot);
    else {
      slot = this.fresh(key);
      this.counters.created++;
    }
    this.chunkOf(slot).lastSeen[slot & SLOT_MASK] = now;
    this.link(slot);
    return slot;
  }

  /** A copy of the key's state, or undefined when it is not resident. */
  get(key: string): KeySnapshot | undefined {
    const slot = this.slots.get(key);
    return slot === undefined ? undefined : this.read(slot);
  }

  /** Where the key's last applied event came from (undefined: not resident, or no position). */
  positionOf(key: string): StatePosition | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    return c.partition[i]! >= 0 ? { partition: c.partition[i]!, offset: c.offset[i]! } : undefined;
  }

  /**
   * Whether the key's state already reflects the event at `offset` of input `partition` (its last
   * applied event is that one or a later one there): a redelivered event to skip. Per event in
   * the service, so it allocates nothing.
   */
  reflects(key: string, partition: number, offset: number): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    return c.partition[i] === partition && c.offset[i]! >= offset;
  }

  /** A copy of the state in `slot`. */
  read(slot: number): KeySnapshot {
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    const S = this.stateSize;
    const C = this.carrySize;
    const partition = c.partition[i]!;
    return {
      key: c.keys[i]!,
      state: c.state.slice(i * S, (i + 1) * S),
      steps: c.steps[i]!,
      lastSeen: c.lastSeen[i]!,
      position: partition >= 0 ? { partition, offset: c.offset[i]! } : undefined,
      sequence: c.sequence[i]!,
      carry: c.carry.slice(i * C, (i + 1) * C),
      lastClass: c.lastClass[i]!,
    };
  }

  /** Replaces or inserts a key's state wholesale (restores); the store keeps a copy. */
  set(incoming: KeySnapshot): void {
    if (incoming.state.length !== this.stateSize) {
      throw new SnapshotError(`state for key "${incoming.key}" has ${incoming.state.length} floats; this model needs ${this.stateSize}`);
    }
    let slot = this.slots.get(incoming.key);
    if (slot !== undefined) this.unlink(slot);
    else slot = this.fresh(incoming.key);
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    c.state.set(incoming.state, i * this.stateSize);
    for (let j = 0; j < this.carrySize; j++) c.carry[i * this.carrySize + j] = j < incoming.carry.length ? incoming.carry[j]! : Number.NaN;
    c.steps[i] = incoming.steps;
    c.lastSeen[i] = incoming.lastSeen;
    c.partition[i] = incoming.position ? incoming.position.partition : NONE;
    c.offset[i] = incoming.position ? incoming.position.offset : 0;
    c.sequence[i] = incoming.sequence;
    c.lastClass[i] = incoming.lastClass;
    this.link(slot);
  }

  delete(key: string): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    this.remove(slot);
    return true;
  }

  /** Frees a slot (its key leaves the store). */
  deleteSlot(slot: number): void {
    this.remove(slot);
  }

  /** Removes every key whose last event came from input `partition` (it was revoked); returns how many. */
  dropPartition(partition: number): number {
    let n = 0;
    for (let slot = this.oldest; slot !== NONE; ) {
      const c = this.chunkOf(slot);
      const i = slot & SLOT_MASK;
      const next = c.newer[i]!;
      if (c.partition[i] === partition) {
        this.remove(slot);
        n++;
      }
      slot = next;
    }
    return n;
  }

  /** Evicts every key idle past the TTL at `now`; returns how many. */
  evictIdle(now: number): number {
    if (!Number.isFinite(this.idleTtlMs)) return 0;
    let n = 0;
    // Oldest first, so the idle keys are a prefix.
    while (this.oldest !== NONE && now - this.chunkOf(this.oldest).lastSeen[this.oldest & SLOT_MASK]! > this.idleTtlMs) {
      this.remove(this.oldest);
      n++;
    }
    this.counters.evictedByTtl += n;
    return n;
  }

  /** Resident keys, least recently used first. */
  *keys(): IterableIterator<string> {
    for (let slot = this.oldest; slot !== NONE; ) {
      const c = this.chunkOf(slot);
      const i = slot & SLOT_MASK;
      // Read the next one first: the caller may delete this one.
      const next = c.newer[i]!;
      yield c.keys[i]!;
      slot = next;
    }
  }

  /** Snapshot bytes for the given keys (all resident keys when omitted); absent keys are skipped. */
  snapshot(keys?: Iterable<string>): Uint8Array {
    const selected: KeySnapshot[] = [];
    for (const k of keys ?? this.keys()) {
      const s = this.get(k);
      if (s) selected.push(s);
    }
    return this.encode(selected);
  }

  /** Snapshot bytes of the given key states, which need not be resident (a changelog's captured states). */
  encode(snapshots: Iterable<KeySnapshot>): Uint8Array {
    return encodeSnapshots(this.shape, snapshots);
  }

  /**
   * Restores keys from snapshot bytes; returns the restored keys. Refuses another model's state.
   * `accept`, when given, decides whether an incoming key state may replace one already resident
   * (a changelog reader keeps the one that reflects the later source position).
   */
  restore(bytes: Uint8Array, accept?: (incoming: KeySnapshot, resident: KeySnapshot) => boolean): KeySnapshot[] {
    const restored: KeySnapshot[] = [];
    for (const s of decodeSnapshots(this.shape, bytes)) {
      const resident = accept ? this.get(s.key) : undefined;
      if (resident && !accept!(s, resident)) continue;
      this.set(s);
      restored.push(s);
    }
    return restored;
  }

  /**
   * A slot for a new key, at zero state: the least recently used key's when the store is full
   * (evicted), else a freed one, else the next unused one (a new chunk every CHUNK_SLOTS keys).
   * Reusing them means a stream of new keys past the capacity allocates nothing.
   */
  private fresh(key: string): number {
    if (this.slots.size >= this.capacity && this.oldest !== NONE) {
      this.remove(this.oldest);
      this.counters.evictedByCapacity++;
    }
    let slot: number;
    if (this.free.length > 0) {
      slot = this.free.pop()!;
    } else {
      slot = this.used++;
      if (slot >> CHUNK_BITS >= this.chunks.length) this.chunks.push(new SlotChunk(this.stateSize, this.carrySize));
    }
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    c.keys[i] = key;
    c.state.fill(0, i * this.stateSize, (i + 1) * this.stateSize);
    c.carry.fill(Number.NaN, i * this.carrySize, (i + 1) * this.carrySize);
    c.steps[i] = 0;
    c.partition[i] = NONE;
    c.offset[i] = 0;
    c.sequence[i] = Number.NaN;
    c.lastClass[i] = NONE;
    this.slots.set(key, slot);
    return slot;
  }

  private remove(slot: number): void {
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    this.unlink(slot);
    this.slots.delete(c.keys[i]!);
    c.keys[i] = undefined;
    this.free.push(slot);
  }

  /** Appends as the newest. */
  private link(slot: number): void {
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    c.older[i] = this.newest;
    c.newer[i] = NONE;
    if (this.newest !== NONE) this.chunkOf(this.newest).newer[this.newest & SLOT_MASK] = slot;
    else this.oldest = slot;
    this.newest = slot;
  }

  private unlink(slot: number): void {
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    const older = c.older[i]!;
    const newer = c.newer[i]!;
    if (older !== NONE) this.chunkOf(older).newer[older & SLOT_MASK] = newer;
    else if (this.oldest === slot) this.oldest = newer;
    if (newer !== NONE) this.chunkOf(newer).older[newer & SLOT_MASK] = older;
    else if (this.newest === slot) this.newest = older;
    c.older[i] = c.newer[i] = NONE;
  }
}
