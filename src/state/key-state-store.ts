/**
 * Per-key recurrent state: every layer's hidden (and LSTM cell) vector for each key, the key's
 * previous event (so features can use deltas), and how many steps the state has absorbed.
 *
 * Bounded two ways, both counted: a capacity (the least recently used key is evicted to admit a
 * new one) and an idle TTL (a key unseen for longer is evicted). An evicted key that comes back
 * restarts from zero state, as a brand-new key would.
 *
 * Snapshots (one key or all keys) are bytes tagged with the model's content hash; restoring a
 * snapshot taken with a different model is refused, because hidden units of another model mean
 * nothing to this one.
 *
 * Format (little-endian): "RNS1" | model hash (32 bytes) | stateSize u32 | count u32 |
 *   count x ( keyBytes u32 | key utf8 | steps f64 | lastSeen f64 | state f32 x stateSize |
 *             positionBytes u32 | position utf8 JSON | prevBytes u32 | prev utf8 JSON )
 */
import { SnapshotError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { z } from 'zod';

/** Keys held in memory by default; the least recently used is evicted past it. */
export const DEFAULT_KEY_CAPACITY = 1_000_000;

export interface KeyState<E> {
  readonly key: string;
  /** The model's state vector for this key (model.stateSegments layout); updated in place. */
  readonly state: Float32Array;
  /** The last event applied to this key's state. */
  prev: E | undefined;
  /** Steps applied since the key was created (or last evicted). */
  steps: number;
  /** Scheduler time (ms) the key was last touched. */
  lastSeen: number;
  /** Where the last applied event came from (e.g. a Kafka offset), for exactly-once restores. */
  position: unknown;
}

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
  })
  .strict();
export type KeyStateStoreOptions = z.input<typeof keyStateStoreOptionsSchema>;

const MAGIC = 'RNS1';

/**
 * A resident key. Entries are linked oldest to newest (least recently used first), so that
 * eviction and a touch are O(1) without re-inserting into the Map: deleting a Map's first entry
 * again and again leaves deleted slots that each later `keys().next()` walks over, and at 100k
 * keys with constant eviction that walk made replay 11x slower.
 */
class Entry<E> implements KeyState<E> {
  older: Entry<E> | undefined;
  newer: Entry<E> | undefined;
  prev: E | undefined = undefined;
  steps = 0;
  position: unknown = undefined;
  constructor(
    public key: string,
    /** A view of the store's slab: the floats of all keys live in a few large arrays. */
    readonly state: Float32Array,
    public lastSeen: number,
  ) {}
}

/** Keys per slab: states are allocated this many at a time, in one Float32Array. */
const SLAB_KEYS = 4096;

export class KeyStateStore<E = unknown> {
  private readonly keys = new Map<string, Entry<E>>();
  private oldest: Entry<E> | undefined;
  private newest: Entry<E> | undefined;
  /** Entries of deleted keys, and their slab space, kept for the next new key. */
  private readonly free: Entry<E>[] = [];
  private slab: Float32Array | undefined;
  private slabUsed = 0;
  readonly capacity: number;
  private readonly idleTtlMs: number;
  private counters = { created: 0, evictedByCapacity: 0, evictedByTtl: 0 };

  constructor(
    readonly model: RnnModel,
    options: KeyStateStoreOptions = {},
  ) {
    const parsed = keyStateStoreOptionsSchema.parse(options);
    this.capacity = parsed.capacity;
    this.idleTtlMs = parsed.idleTtlMs ?? Number.POSITIVE_INFINITY;
  }

  get size(): number {
    return this.keys.size;
  }

  get stats(): StoreCounters {
    return { ...this.counters };
  }

  /** The key's state if resident and not idle past the TTL; does not touch recency. */
  get(key: string, now?: number): KeyState<E> | undefined {
    const entry = this.keys.get(key);
    if (entry && now !== undefined && now - entry.lastSeen > this.idleTtlMs) {
      this.remove(entry);
      this.counters.evictedByTtl++;
      return undefined;
    }
    return entry;
  }

  /** The key's state, created at zero if absent; marks it most recently used at `now`. */
  acquire(key: string, now: number): KeyState<E> {
    let entry = this.get(key, now) as Entry<E> | undefined;
    if (entry) {
      this.unlink(entry);
    } else {
      entry = this.fresh(key, now);
      this.keys.set(key, entry);
      this.counters.created++;
    }
    entry.lastSeen = now;
    this.link(entry);
    return entry;
  }

  /** Replaces or inserts a key's state wholesale (used by restore); the store keeps a copy. */
  set(incoming: KeyState<E>): void {
    if (incoming.state.length !== this.model.stateSize) {
      throw new SnapshotError(`state for key "${incoming.key}" has ${incoming.state.length} floats; this model needs ${this.model.stateSize}`);
    }
    let entry = this.keys.get(incoming.key);
    if (entry) this.unlink(entry);
    else {
      entry = this.fresh(incoming.key, incoming.lastSeen);
      this.keys.set(incoming.key, entry);
    }
    entry.state.set(incoming.state);
    entry.prev = incoming.prev;
    entry.steps = incoming.steps;
    entry.lastSeen = incoming.lastSeen;
    entry.position = incoming.position;
    this.link(entry);
  }

  delete(key: string): boolean {
    const entry = this.keys.get(key);
    if (!entry) return false;
    this.remove(entry);
    return true;
  }

  /** Evicts every key idle past the TTL at `now`; returns how many. */
  evictIdle(now: number): number {
    if (!Number.isFinite(this.idleTtlMs)) return 0;
    let n = 0;
    // Oldest first, so the idle keys are a prefix.
    while (this.oldest && now - this.oldest.lastSeen > this.idleTtlMs) {
      this.remove(this.oldest);
      n++;
    }
    this.counters.evictedByTtl += n;
    return n;
  }

  /**
   * An entry for a new key, at zero state: the least recently used key's when the store is
   * full (evicted), else a deleted key's, else new space in the slab. Reusing them means a
   * stream of new keys past the capacity allocates nothing.
   */
  private fresh(key: string, now: number): Entry<E> {
    let entry: Entry<E> | undefined;
    if (this.keys.size >= this.capacity && this.oldest) {
      entry = this.oldest;
      this.unlink(entry);
      this.keys.delete(entry.key);
      this.counters.evictedByCapacity++;
    } else entry = this.free.pop();
    if (entry) {
      entry.key = key;
      entry.state.fill(0);
      entry.prev = undefined;
      entry.steps = 0;
      entry.position = undefined;
      entry.lastSeen = now;
      return entry;
    }
    const S = this.model.stateSize;
    if (!this.slab || this.slabUsed === SLAB_KEYS) {
      this.slab = new Float32Array(SLAB_KEYS * S);
      this.slabUsed = 0;
    }
    const state = this.slab.subarray(this.slabUsed * S, (this.slabUsed + 1) * S);
    this.slabUsed++;
    return new Entry<E>(key, state, now);
  }

  private remove(entry: Entry<E>): void {
    this.unlink(entry);
    this.keys.delete(entry.key);
    entry.prev = undefined;
    entry.position = undefined;
    this.free.push(entry);
  }

  /** Appends as the newest. */
  private link(entry: Entry<E>): void {
    entry.older = this.newest;
    entry.newer = undefined;
    if (this.newest) this.newest.newer = entry;
    else this.oldest = entry;
    this.newest = entry;
  }

  private unlink(entry: Entry<E>): void {
    if (entry.older) entry.older.newer = entry.newer;
    else if (this.oldest === entry) this.oldest = entry.newer;
    if (entry.newer) entry.newer.older = entry.older;
    else if (this.newest === entry) this.newest = entry.older;
    entry.older = entry.newer = undefined;
  }

  /** Resident keys, least recently used first. */
  *entries(): IterableIterator<KeyState<E>> {
    for (let e = this.oldest; e; ) {
      // Read the next one first: the caller may delete this one.
      const next = e.newer;
      yield e;
      e = next;
    }
  }

  /** Bytes for the given keys (all resident keys when omitted); absent keys are skipped. */
  snapshot(keys?: Iterable<string>): Uint8Array {
    const selected: KeyState<E>[] = [];
    if (keys) {
      for (const k of keys) {
        const e = this.keys.get(k);
        if (e) selected.push(e);
      }
    } else {
      selected.push(...this.keys.values());
    }
    return this.encode(selected);
  }

  /**
   * Snapshot bytes of the given key states, which need not be resident: the Kafka service
   * encodes the state each key had right after its last acknowledged event.
   */
  encode(entries: Iterable<Readonly<Omit<KeyState<E>, 'prev'>> & { readonly prev: E | undefined }>): Uint8Array {
    const enc = new TextEncoder();
    const parts = [...entries].map((e) => ({
      e,
      key: enc.encode(e.key),
      position: enc.encode(JSON.stringify(e.position ?? null)),
      prev: enc.encode(JSON.stringify(e.prev ?? null)),
    }));
    const S = this.model.stateSize;
    const size = 4 + 32 + 8 + parts.reduce((n, p) => n + 4 + p.key.length + 16 + 4 * S + 4 + p.position.length + 4 + p.prev.length, 0);
    const buf = new Uint8Array(size);
    const view = new DataView(buf.buffer);
    let o = 0;
    buf.set(enc.encode(MAGIC), o);
    o += 4;
    buf.set(Buffer.from(this.model.hash, 'hex'), o);
    o += 32;
    view.setUint32(o, S, true);
    view.setUint32(o + 4, parts.length, true);
    o += 8;
    const bytes = (b: Uint8Array): void => {
      view.setUint32(o, b.length, true);
      buf.set(b, o + 4);
      o += 4 + b.length;
    };
    for (const p of parts) {
      bytes(p.key);
      view.setFloat64(o, p.e.steps, true);
      view.setFloat64(o + 8, p.e.lastSeen, true);
      o += 16;
      for (let j = 0; j < S; j++, o += 4) view.setFloat32(o, p.e.state[j]!, true);
      bytes(p.position);
      bytes(p.prev);
    }
    return buf;
  }

  /**
   * Restores keys from snapshot bytes; returns the restored keys. Refuses another model's state.
   * `accept`, when given, decides whether an incoming key state may replace one already resident
   * (a changelog reader keeps the one that reflects the later source position).
   */
  restore(bytes: Uint8Array, accept?: (incoming: KeyState<E>, resident: KeyState<E>) => boolean): KeyState<E>[] {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const dec = new TextDecoder();
    const need = (n: number, o: number, what: string): void => {
      if (o + n > bytes.length) throw new SnapshotError(`snapshot truncated at byte ${o} while reading ${what}`);
    };
    need(44, 0, 'the header');
    if (dec.decode(bytes.subarray(0, 4)) !== MAGIC) throw new SnapshotError('not an rnnstream state snapshot (bad magic)');
    const hash = Buffer.from(bytes.subarray(4, 36)).toString('hex');
    if (hash !== this.model.hash) {
      throw new SnapshotError(
        `snapshot was taken with model ${hash.slice(0, 12)}, but this model is ${this.model.hash.slice(0, 12)} (${this.model.name}); refusing foreign state`,
      );
    }
    const S = view.getUint32(36, true);
    if (S !== this.model.stateSize) throw new SnapshotError(`snapshot state size ${S} != model state size ${this.model.stateSize}`);
    const count = view.getUint32(40, true);
    let o = 44;
    const str = (what: string): string => {
      need(4, o, what);
      const n = view.getUint32(o, true);
      need(n, o + 4, what);
      const s = dec.decode(bytes.subarray(o + 4, o + 4 + n));
      o += 4 + n;
      return s;
    };
    const restored: KeyState<E>[] = [];
    for (let i = 0; i < count; i++) {
      const key = str(`key ${i}`);
      need(16 + 4 * S, o, `state of key "${key}"`);
      const steps = view.getFloat64(o, true);
      const lastSeen = view.getFloat64(o + 8, true);
      o += 16;
      const state = new Float32Array(S);
      for (let j = 0; j < S; j++, o += 4) state[j] = view.getFloat32(o, true);
      const position = JSON.parse(str(`position of key "${key}"`)) as unknown;
      const prev = JSON.parse(str(`previous event of key "${key}"`)) as E | null;
      const entry: KeyState<E> = { key, state, steps, lastSeen, position: position ?? undefined, prev: prev ?? undefined };
      const resident = accept ? this.keys.get(key) : undefined;
      if (resident && !accept!(entry, resident)) continue;
      this.set(entry);
      restored.push(entry);
    }
    return restored;
  }
}
