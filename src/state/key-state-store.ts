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
 *
 * On a device backend with a state table (`attachDevice`), a key's state floats live on the
 * device, in the table row of the key's slot, and the store keeps which copy is current
 * (`residence`). Reading a key's state (`get`, `snapshot`) reads current device copies back in
 * one batch first; `pull` does that ahead of time, for a device that only reads asynchronously.
 */
import { SnapshotError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { z } from 'zod';
import { ChangelogBatch } from './changelog-batch.js';
import { copyRecordState, encodeSnapshots, readSnapshots, type KeySnapshot, type SnapshotShape, type StatePosition } from './snapshot-codec.js';

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
    /**
     * Hot swap policy `warm`: a restored record of another model (same state and carry sizes) is
     * taken cold, its state to be rebuilt from the history in its carry before the key's next
     * step, rather than refused; so a restart with a new --model warms its keys too.
     */
    warmForeign: z.boolean().default(false),
  })
  .strict();
export type KeyStateStoreOptions = z.input<typeof keyStateStoreOptionsSchema>;

const CHUNK_BITS = 12;
/** Slots per chunk: columns are allocated this many keys at a time. */
export const CHUNK_SLOTS = 1 << CHUNK_BITS;
const SLOT_MASK = CHUNK_SLOTS - 1;
const NONE = -1;

/** Where a slot's current state floats are (SlotChunk.residence). */
export const Residence = {
  /** In the host columns (the device's copy, if any, is older or not there). */
  HOST: 0,
  /** On the device only (the host columns are older). */
  DEVICE: 1,
  /** In both, the same. */
  BOTH: 2,
} as const;

/** The device side of a store's state (a backend's DeviceStateTable): reads slots back. */
export interface DeviceStateReader {
  /** The state in `slots`, segment-major for slots.length keys, into `into`. */
  read(slots: Int32Array, into: Float32Array): void | Promise<void>;
}

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
  /** Where the slot's current state is (Residence). */
  readonly residence = new Uint8Array(CHUNK_SLOTS);
  /**
   * 1: the slot's state was made by an earlier model (a hot swap with policy `warm`); the
   * stepper warms it up on the key's history before the key's next step (warm-history.ts).
   */
  readonly cold = new Uint8Array(CHUNK_SLOTS);
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
  private shape: SnapshotShape;
  private counters = { created: 0, evictedByCapacity: 0, evictedByTtl: 0 };
  private device: DeviceStateReader | undefined;
  /** Resident keys marked cold: the stepper looks for them only while there are any. */
  private coldKeys = 0;

  /** The model whose state the store holds (a hot swap replaces it: `serve`). */
  model: RnnModel;

  constructor(model: RnnModel, options: KeyStateStoreOptions = {}) {
    this.model = model;
    const parsed = keyStateStoreOptionsSchema.parse(options);
    this.capacity = parsed.capacity;
    this.carrySize = parsed.carrySize;
    this.stateSize = model.stateSize;
    this.idleTtlMs = parsed.idleTtlMs ?? Number.POSITIVE_INFINITY;
    // Restored state of another model is cold (policy warm), not refused.
    this.shape = { hash: model.hash, name: model.name, stateSize: model.stateSize, carrySize: parsed.carrySize, acceptsAnyModel: parsed.warmForeign };
  }

  get size(): number {
    return this.slots.size;
  }

  /** Bytes of the slot columns allocated (a chunk of CHUNK_SLOTS keys at a time); key strings and the index are not counted. */
  get columnBytes(): number {
    const c = this.chunks[0];
    if (!c) return 0;
    const perChunk = [c.state, c.carry, c.steps, c.lastSeen, c.partition, c.offset, c.sequence, c.lastClass, c.residence, c.cold, c.older, c.newer].reduce((n, a) => n + a.byteLength, 0);
    return perChunk * this.chunks.length;
  }

  get stats(): StoreCounters {
    return { ...this.counters };
  }

  /**
   * Keeps state on `device` from now on: slots the operator marks DEVICE are read from it when
   * someone reads them. One store to a device table at a time; undefined detaches (only when no
   * slot is DEVICE: their state would be lost).
   */
  attachDevice(device: DeviceStateReader | undefined): void {
    if (device === this.device) return;
    if (this.device && this.deviceSlots().length > 0) throw new Error('the state store still has state on its device; pull() it before detaching');
    this.device = device;
  }

  /** Slots whose current state is on the device only, of `keys` (default: every resident key). */
  private deviceSlots(keys?: Iterable<string>): number[] {
    const out: number[] = [];
    const consider = (slot: number): void => {
      if (this.chunkOf(slot).residence[slot & SLOT_MASK] === Residence.DEVICE) out.push(slot);
    };
    if (keys) {
      for (const k of keys) {
        const slot = this.slots.get(k);
        if (slot !== undefined) consider(slot);
      }
    } else {
      for (let slot = this.oldest; slot !== NONE; slot = this.chunkOf(slot).newer[slot & SLOT_MASK]!) consider(slot);
    }
    return out;
  }

  /**
   * Reads the device's current state of `slots` into the host columns (one batched read-back)
   * and marks them BOTH. Synchronous where the device reads synchronously (WebGL, host kernels).
   */
  pullSlots(slots: readonly number[]): void | Promise<void> {
    const wanted = slots.filter((slot) => this.chunkOf(slot).residence[slot & SLOT_MASK] === Residence.DEVICE);
    if (wanted.length === 0) return undefined;
    const S = this.stateSize;
    const into = new Float32Array(wanted.length * S);
    const land = (): void => {
      const segments = this.model.stateSegments;
      const n = wanted.length;
      wanted.forEach((slot, b) => {
        const c = this.chunkOf(slot);
        const i = slot & SLOT_MASK;
        // A slot freed or restored meanwhile keeps what it has now.
        if (c.residence[i] !== Residence.DEVICE) return;
        for (const seg of segments) c.state.set(into.subarray(n * seg.offset + b * seg.size, n * seg.offset + (b + 1) * seg.size), i * S + seg.offset);
        c.residence[i] = Residence.BOTH;
      });
    };
    const pending = this.device!.read(Int32Array.from(wanted), into);
    if (pending) return pending.then(land);
    land();
    return undefined;
  }

  /** Reads the current state of `keys` (default: every key) back from the device, in one batch. */
  async pull(keys?: Iterable<string>): Promise<void> {
    await this.pullSlots(this.deviceSlots(keys));
  }

  /** pullSlots, refusing a device that reads only asynchronously (then `await pull()` first). */
  private pullNow(slots: readonly number[]): void {
    if (slots.length === 0) return;
    const pending = this.pullSlots(slots);
    if (pending) {
      pending.catch(() => undefined);
      throw new Error('this key state is on the device, which reads back asynchronously: await store.pull() before reading it');
    }
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

  /** A copy of what the key remembers (its carry values: the pipeline's, then any warm-up history); undefined when not resident. */
  carryOf(key: string): Float64Array | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    const i = slot & SLOT_MASK;
    return this.chunkOf(slot).carry.slice(i * this.carrySize, (i + 1) * this.carrySize);
  }

  /** Whether the key's state was made by an earlier model and waits for its warm-up (policy warm). */
  isCold(key: string): boolean {
    const slot = this.slots.get(key);
    return slot !== undefined && this.chunkOf(slot).cold[slot & SLOT_MASK] === 1;
  }

  /** The key's scalars (not its state floats, so nothing is read back from a device); undefined when not resident. */
  scalarsOf(key: string): Omit<KeySnapshot, 'key' | 'state' | 'carry'> | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    return { steps: c.steps[i]!, lastSeen: c.lastSeen[i]!, position: this.positionAt(slot), sequence: c.sequence[i]!, lastClass: c.lastClass[i]! };
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

  /** A copy of the state in `slot` (read back from the device first if current only there). */
  read(slot: number): KeySnapshot {
    this.pullNow([slot]);
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
    const { position } = incoming;
    this.writeScalars(c, i, { ...incoming, partition: position ? position.partition : NONE, offset: position ? position.offset : 0 });
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

  /** Resident keys whose last event came from one of `partitions` (a restore's count of the keys it restored). */
  countInPartitions(partitions: ReadonlySet<number>): number {
    let n = 0;
    for (const c of this.chunks) for (let i = 0; i < CHUNK_SLOTS; i++) if (c.keys[i] !== undefined && partitions.has(c.partition[i]!)) n++;
    return n;
  }

  /**
   * From now on the store holds `model`'s state (a hot swap), which must have the same state
   * layout. `reset`: every key is removed (keys start from zero under the new model). `keep`:
   * keys keep their state, and records written by the earlier models this store took state from
   * are still read (a restore), as the new model's. `warm`: every key is marked cold, and so is
   * every key restored later from another model's record: its state is rebuilt from its history
   * before its next step (keyed-stepper.ts). Returns the keys removed (reset) or marked
   * cold (warm).
   */
  serve(model: RnnModel, policy: 'reset' | 'keep' | 'warm'): number {
    const same = model.stateSize === this.stateSize && model.stateSegments.length === this.model.stateSegments.length && model.stateSegments.every((s, i) => s.offset === this.model.stateSegments[i]!.offset && s.size === this.model.stateSegments[i]!.size);
    if (!same) throw new SnapshotError(`model ${model.hash.slice(0, 12)} lays out its state differently from ${this.model.hash.slice(0, 12)}: a store cannot serve it`);
    const touched = policy === 'reset' ? this.removeWhere(() => true) : policy === 'warm' ? this.markCold() : 0;
    // keep: the earlier models' records are read as this one's; warm: any model's, cold.
    const accepts = policy === 'keep' ? [...(this.shape.accepts ?? []), this.shape.hash].filter((h) => h !== model.hash) : [];
    this.shape = { hash: model.hash, name: model.name, stateSize: this.stateSize, carrySize: this.carrySize, accepts, acceptsAnyModel: policy === 'warm' };
    this.model = model;
    return touched;
  }

  /** Marks every resident key cold; returns how many. */
  private markCold(): number {
    for (let slot = this.oldest; slot !== NONE; slot = this.chunkOf(slot).newer[slot & SLOT_MASK]!) this.setCold(this.chunkOf(slot), slot & SLOT_MASK, 1);
    return this.slots.size;
  }

  /** Removes every key whose last event came from input `partition` (it was revoked); returns how many. */
  dropPartition(partition: number): number {
    return this.removeWhere((c, i) => c.partition[i] === partition);
  }

  /** Removes every key whose slot `drop` picks (a chunk and the slot's index in it); returns how many. */
  private removeWhere(drop: (c: SlotChunk, i: number) => boolean): number {
    let n = 0;
    for (let slot = this.oldest; slot !== NONE; ) {
      const c = this.chunkOf(slot);
      const i = slot & SLOT_MASK;
      const next = c.newer[i]!;
      if (drop(c, i)) {
        this.remove(slot);
        n++;
      }
      slot = next;
    }
    return n;
  }

  /**
   * Takes every key of `from` (a partition's standby copy, kept on the host), which is left
   * empty. Its column chunks become this store's: a million keys move with one index insert
   * each, not a copy of their columns (key by key took 1.4 to 2 s at a million). The keys come
   * after this store's as the most recently used. When a key is in both stores, or the keys would
   * pass this store's capacity, they move key by key instead (the copy's state replaces this
   * store's; past the capacity the least recently used are evicted).
   */
  adopt(from: KeyStateStore): number {
    if (from.stateSize !== this.stateSize || from.carrySize !== this.carrySize || from.model.hash !== this.model.hash) {
      throw new SnapshotError(`a standby store of model ${from.model.hash.slice(0, 12)} (state ${from.stateSize}, carry ${from.carrySize}) cannot give keys to one of ${this.model.hash.slice(0, 12)}`);
    }
    // A standby copy is filled from the changelog on the host; it never steps on a device.
    if (from.device) throw new Error('adopt: the store giving keys keeps state on a device; a standby copy is host only');
    const n = from.size;
    if (n === 0) return 0;
    let keyByKey = this.slots.size + n > this.capacity;
    for (const key of from.slots.keys()) {
      if (keyByKey) break;
      keyByKey = this.slots.has(key);
    }
    if (keyByKey) return this.adoptKeyByKey(from);
    const base = this.chunks.length << CHUNK_BITS;
    // This store's never-used slots below the adopted chunks are free now: fresh() counts up from
    // `used`, which moves past them.
    for (let slot = base - 1; slot >= this.used; slot--) this.free.push(slot);
    for (const slot of from.free) this.free.push(slot + base);
    for (const c of from.chunks) {
      for (let i = 0; i < CHUNK_SLOTS; i++) {
        if (c.older[i] !== NONE) c.older[i] = c.older[i]! + base;
        if (c.newer[i] !== NONE) c.newer[i] = c.newer[i]! + base;
      }
      this.chunks.push(c);
    }
    for (const [key, slot] of from.slots) this.slots.set(key, slot + base);
    const oldest = from.oldest + base;
    if (this.newest !== NONE) {
      this.chunkOf(this.newest).newer[this.newest & SLOT_MASK] = oldest;
      this.chunkOf(oldest).older[oldest & SLOT_MASK] = this.newest;
    } else this.oldest = oldest;
    this.newest = from.newest + base;
    this.used = base + from.used;
    this.coldKeys += from.coldKeys;
    from.coldKeys = 0;
    from.chunks.length = 0;
    from.slots.clear();
    from.free.length = 0;
    from.used = 0;
    from.oldest = from.newest = NONE;
    return n;
  }

  private adoptKeyByKey(from: KeyStateStore): number {
    const S = this.stateSize;
    const C = this.carrySize;
    let n = 0;
    for (let slot = from.oldest; slot !== NONE; ) {
      const src = from.chunkOf(slot);
      const i = slot & SLOT_MASK;
      const next = src.newer[i]!;
      const key = src.keys[i]!;
      let to = this.slots.get(key);
      if (to !== undefined) this.unlink(to);
      else to = this.fresh(key);
      const dst = this.chunkOf(to);
      const j = to & SLOT_MASK;
      dst.state.set(src.state.subarray(i * S, (i + 1) * S), j * S);
      dst.carry.set(src.carry.subarray(i * C, (i + 1) * C), j * C);
      this.writeScalars(dst, j, { steps: src.steps[i]!, lastSeen: src.lastSeen[i]!, partition: src.partition[i]!, offset: src.offset[i]!, sequence: src.sequence[i]!, lastClass: src.lastClass[i]! });
      this.setCold(dst, j, src.cold[i]!);
      this.link(to);
      from.remove(slot);
      n++;
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
    const wanted = keys ? [...keys] : undefined;
    // One read-back for all of them, not one per key.
    this.pullNow(this.deviceSlots(wanted));
    for (const k of wanted ?? this.keys()) {
      const s = this.get(k);
      if (s) selected.push(s);
    }
    return this.encode(selected);
  }

  /** Snapshot bytes of the given key states, which need not be resident (a changelog's captured states). */
  encode(snapshots: Iterable<KeySnapshot>): Uint8Array {
    return encodeSnapshots(this.shape, snapshots);
  }

  /** An empty batch of changelog captures, encoded with this store's codec (changelog-batch.ts). */
  changelogBatch(): ChangelogBatch {
    return new ChangelogBatch((snapshots) => this.encode(snapshots));
  }

  /**
   * Restores keys from snapshot bytes, straight into the columns; returns the restored keys.
   * Refuses another model's state. `accept`, when given, decides from the two positions whether
   * an incoming key state may replace one already resident (a changelog reader keeps the one
   * that reflects the later source position).
   */
  restore(bytes: Uint8Array, accept?: (incoming: StatePosition | undefined, resident: StatePosition | undefined) => boolean): string[] {
    const restored: string[] = [];
    const S = this.stateSize;
    const C = this.carrySize;
    readSnapshots(this.shape, bytes, (r) => {
      let slot = this.slots.get(r.key);
      if (slot !== undefined && accept && !accept(r.partition >= 0 ? { partition: r.partition, offset: r.offset } : undefined, this.positionAt(slot))) return;
      if (slot !== undefined) this.unlink(slot);
      else slot = this.fresh(r.key);
      const c = this.chunkOf(slot);
      const i = slot & SLOT_MASK;
      copyRecordState(r, S, c.state, i * S);
      for (let j = 0; j < C; j++) c.carry[i * C + j] = r.view.getFloat64(r.carryAt + 8 * j, true);
      this.writeScalars(c, i, r);
      this.setCold(c, i, r.foreign && this.shape.acceptsAnyModel === true ? 1 : 0);
      this.link(slot);
      restored.push(r.key);
    });
    return restored;
  }

  /** A slot's key's position, as positionOf. */
  private positionAt(slot: number): StatePosition | undefined {
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    return c.partition[i]! >= 0 ? { partition: c.partition[i]!, offset: c.offset[i]! } : undefined;
  }

  /** A key's scalar columns, from a snapshot or a snapshot record; its current state is the host's. */
  private writeScalars(c: SlotChunk, i: number, from: { steps: number; lastSeen: number; partition: number; offset: number; sequence: number; lastClass: number }): void {
    c.steps[i] = from.steps;
    c.lastSeen[i] = from.lastSeen;
    c.partition[i] = from.partition >= 0 ? from.partition : NONE;
    c.offset[i] = from.partition >= 0 ? from.offset : 0;
    c.sequence[i] = from.sequence;
    c.lastClass[i] = from.lastClass;
    c.residence[i] = Residence.HOST;
    this.setCold(c, i, 0);
  }

  /** Marks a key cold or not, keeping the count of cold keys. */
  private setCold(c: SlotChunk, i: number, cold: number): void {
    this.coldKeys += cold - c.cold[i]!;
    c.cold[i] = cold;
  }

  /** Keys whose state waits for its warm-up (policy warm): the stepper checks a micro-batch's keys only while there are any. */
  get coldCount(): number {
    return this.coldKeys;
  }

  /** The key in `slot` holds state of the model served now (its warm-up is done). */
  warmed(slot: number): void {
    this.setCold(this.chunkOf(slot), slot & SLOT_MASK, 0);
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
    c.residence[i] = Residence.HOST;
    this.setCold(c, i, 0);
    this.slots.set(key, slot);
    return slot;
  }

  private remove(slot: number): void {
    const c = this.chunkOf(slot);
    const i = slot & SLOT_MASK;
    this.setCold(c, i, 0);
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
