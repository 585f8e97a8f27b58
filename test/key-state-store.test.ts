import { describe, expect, it } from 'vitest';
import { SnapshotError } from '../src/core/errors.js';
import { randomModel } from '../src/core/random-model.js';
import { CHUNK_SLOTS, KeyStateStore, Residence, type KeySnapshot } from '../src/state/key-state-store.js';
import { notBehind } from '../src/adapters/kafka/state/changelog.js';

const spec = { features: 2, layers: [{ cell: 'lstm' as const, hiddenSize: 3 }, { cell: 'gru' as const, hiddenSize: 2 }], head: { kind: 'linear' as const, outputs: ['y'] } };
const model = randomModel({ ...spec, seed: 1 });
const other = randomModel({ ...spec, seed: 2 });

/** The key's state floats, through the slot (what rnnByKey gathers). */
const floats = (store: KeyStateStore, slot: number): Float32Array => {
  const i = slot & (CHUNK_SLOTS - 1);
  return store.chunkOf(slot).state.subarray(i * store.stateSize, (i + 1) * store.stateSize);
};

const snapshot = (key: string, fill: number, extra: Partial<KeySnapshot> = {}): KeySnapshot => ({
  key,
  state: new Float32Array(8).fill(fill),
  steps: 1,
  lastSeen: 0,
  position: undefined,
  sequence: Number.NaN,
  carry: new Float64Array(0),
  lastClass: -1,
  ...extra,
});

describe('KeyStateStore', () => {
  it('lays out every layer’s h (and LSTM c) per key', () => {
    expect(model.stateSegments.map((s) => `${s.layer}${s.kind}@${s.offset}`)).toEqual(['0h@0', '0c@3', '1h@6']);
    const store = new KeyStateStore(model);
    expect(floats(store, store.acquire('k', 0))).toEqual(new Float32Array(8));
  });

  it('evicts the least recently used key at capacity, counts it, and restarts it from zero', () => {
    const store = new KeyStateStore(model, { capacity: 2 });
    floats(store, store.acquire('a', 0)).fill(1);
    floats(store, store.acquire('b', 1)).fill(2);
    store.acquire('a', 2); // a is now the most recent
    store.acquire('c', 3); // evicts b
    expect([...store.keys()]).toEqual(['a', 'c']);
    expect(store.stats.evictedByCapacity).toBe(1);
    expect(floats(store, store.acquire('b', 4))).toEqual(new Float32Array(8));
  });

  it("reuses an evicted key's slot for the next key, at zero, with nothing of the evicted key left", () => {
    const store = new KeyStateStore(model, { capacity: 3, carrySize: 1 });
    for (let i = 0; i < 10_000; i++) {
      const slot = store.acquire(`k${i}`, i);
      const s = store.read(slot);
      expect(s.steps).toBe(0);
      expect(s.position).toBeUndefined();
      expect(Number.isNaN(s.sequence) && Number.isNaN(s.carry[0]!)).toBe(true);
      expect(s.lastClass).toBe(-1);
      expect(s.state.every((v) => v === 0)).toBe(true);
      store.set({ ...s, state: new Float32Array(8).fill(i), steps: 1, carry: Float64Array.of(i), position: { partition: 0, offset: i }, sequence: i, lastClass: 1 });
    }
    expect(store.size).toBe(3);
    expect([...store.keys()].map((k) => [k, store.get(k)!.state[0], store.get(k)!.carry[0]])).toEqual([
      ['k9997', 9997, 9997],
      ['k9998', 9998, 9998],
      ['k9999', 9999, 9999],
    ]);
    expect(store.stats).toEqual({ created: 10_000, evictedByCapacity: 9_997, evictedByTtl: 0 });
    // Only one chunk of columns was ever allocated for 10,000 keys through 3 slots.
    expect(store.chunks).toHaveLength(1);
    // A deleted key's slot is reused too; set() keeps a copy of what it is given.
    expect(store.delete('k9998')).toBe(true);
    const given = snapshot('r', 7, { carry: Float64Array.of(1) });
    store.set(given);
    given.state.fill(0);
    expect(store.get('r')?.state[0]).toBe(7);
    expect([...store.keys()]).toEqual(['k9997', 'k9999', 'r']);
  });

  it('grows by chunks of columns, never reallocating one', () => {
    const store = new KeyStateStore(model);
    const first = store.acquire('k0', 0);
    const chunk = store.chunkOf(first);
    for (let i = 1; i <= CHUNK_SLOTS; i++) store.acquire(`k${i}`, 0);
    expect(store.chunks).toHaveLength(2);
    expect(store.chunkOf(first)).toBe(chunk);
  });

  it('evicts keys idle past the TTL, on access and in sweeps', () => {
    const store = new KeyStateStore(model, { idleTtlMs: 100 });
    store.acquire('a', 0);
    store.acquire('b', 50);
    expect(store.evictIdle(120)).toBe(1); // a idle 120 > 100
    expect(store.get('a')).toBeUndefined();
    expect(store.find('b', 200)).toBe(-1); // idle 150 on access
    expect(store.stats.evictedByTtl).toBe(2);
    expect(store.read(store.acquire('a', 300)).steps).toBe(0);
  });

  it('drops exactly the keys of a revoked input partition', () => {
    const store = new KeyStateStore(model);
    store.set(snapshot('p0-a', 1, { position: { partition: 0, offset: 5 } }));
    store.set(snapshot('p1-a', 1, { position: { partition: 1, offset: 5 } }));
    store.set(snapshot('p0-b', 1, { position: { partition: 0, offset: 6 } }));
    store.set(snapshot('none', 1));
    expect(store.dropPartition(0)).toBe(2);
    expect([...store.keys()].sort()).toEqual(['none', 'p1-a']);
    expect(store.positionOf('p1-a')).toEqual({ partition: 1, offset: 5 });
  });

  it("adopts a standby copy's keys whole (its chunks), every field intact, and goes on allocating without touching them", () => {
    const copy = new KeyStateStore(model, { carrySize: 2 });
    const active = new KeyStateStore(model, { carrySize: 2 });
    const full = { ...snapshot('a', 0), state: Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8), steps: 3, lastSeen: 10, position: { partition: 1, offset: 17 }, sequence: 41, carry: Float64Array.of(0.25, -3), lastClass: 5 };
    copy.set(full);
    for (let k = 0; k < CHUNK_SLOTS + 10; k++) copy.set(snapshot(`c${k}`, k % 7, { position: { partition: 1, offset: k } }));
    copy.delete('c3'); // a free slot inside the copy's chunks
    active.set(snapshot('d', 4, { position: { partition: 0, offset: 1 } }));
    const n = copy.size;
    expect(active.adopt(copy)).toBe(n);
    expect(copy.size).toBe(0);
    expect(active.size).toBe(n + 1);
    expect(active.get('a')).toEqual(full);
    expect([...active.get(`c${CHUNK_SLOTS + 9}`)!.state]).toEqual(new Array(8).fill((CHUNK_SLOTS + 9) % 7));
    // Recency: this store's keys first, then the copy's in its order.
    const order = [...active.keys()];
    expect(order.slice(0, 3)).toEqual(['d', 'a', 'c0']);
    expect(order.at(-1)).toBe(`c${CHUNK_SLOTS + 9}`);
    // New keys take free slots, never an adopted key's.
    for (let k = 0; k < 2 * CHUNK_SLOTS; k++) active.set(snapshot(`new${k}`, 1));
    expect(active.size).toBe(n + 1 + 2 * CHUNK_SLOTS);
    expect(active.get('a')).toEqual(full);
    expect([...active.get('d')!.state]).toEqual(new Array(8).fill(4));
    expect(active.dropPartition(1)).toBe(n);
    expect(() => new KeyStateStore(other, { carrySize: 2 }).adopt(active)).toThrow(SnapshotError);
  });

  it('adopts key by key when a key is in both stores (the copy wins) or the capacity would be passed', () => {
    const copy = new KeyStateStore(model);
    const active = new KeyStateStore(model, { capacity: 3 });
    copy.set(snapshot('b', 2, { position: { partition: 1, offset: 18 } }));
    copy.set(snapshot('c', 3, { position: { partition: 1, offset: 19 } }));
    active.set(snapshot('b', 9, { position: { partition: 1, offset: 2 } }));
    active.set(snapshot('d', 4, { position: { partition: 0, offset: 1 } }));
    expect(active.adopt(copy)).toBe(2);
    expect([...active.keys()]).toEqual(['d', 'b', 'c']);
    expect(active.positionOf('b')).toEqual({ partition: 1, offset: 18 });
    const more = new KeyStateStore(model);
    more.set(snapshot('e', 5, { position: { partition: 1, offset: 20 } }));
    expect(active.adopt(more)).toBe(1);
    expect([...active.keys()]).toEqual(['b', 'c', 'e']); // d, the least recently used, evicted
  });

  it('round-trips one key or all keys through snapshot bytes, with position, sequence, carry and class', () => {
    const store = new KeyStateStore(model, { carrySize: 2 });
    store.set({ ...snapshot('a', 0), state: Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8), steps: 3, lastSeen: 10, position: { partition: 1, offset: 17 }, sequence: 41, carry: Float64Array.of(0.25, -3), lastClass: 5 });
    store.set({ ...snapshot('ü-key', -0.5), carry: Float64Array.of(1, 2) });

    const restored = new KeyStateStore(model, { carrySize: 2 });
    expect(restored.restore(store.snapshot(['a']))).toEqual(['a']);
    const r = restored.get('a')!;
    expect([...r.state]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect({ steps: r.steps, lastSeen: r.lastSeen, position: r.position, sequence: r.sequence, carry: [...r.carry], lastClass: r.lastClass }).toEqual({
      steps: 3,
      lastSeen: 10,
      position: { partition: 1, offset: 17 },
      sequence: 41,
      carry: [0.25, -3],
      lastClass: 5,
    });

    const all = new KeyStateStore(model, { carrySize: 2 });
    all.restore(store.snapshot());
    expect(all.size).toBe(2);
    expect([...all.get('ü-key')!.state]).toEqual(new Array(8).fill(-0.5));
  });

  it("refuses a snapshot from another model, another pipeline's carry, an older format, a corrupt one and a truncated one", () => {
    const store = new KeyStateStore(model);
    store.acquire('a', 0);
    const bytes = store.snapshot();
    expect(() => new KeyStateStore(other).restore(bytes)).toThrow(SnapshotError);
    expect(() => new KeyStateStore(other).restore(bytes)).toThrow(/taken with model [0-9a-f]{12}, but this model is/);
    expect(() => new KeyStateStore(model, { carrySize: 2 }).restore(bytes)).toThrow(/remembers 0 value\(s\) of each key's last event; this pipeline remembers 2/);
    expect(() => new KeyStateStore(model).restore(bytes.subarray(0, bytes.length - 3))).toThrow(/truncated/);
    const older = bytes.slice();
    older.set(new TextEncoder().encode('RNS1'), 0);
    expect(() => new KeyStateStore(model).restore(older)).toThrow(/older rnnstream \(format RNS1/);
    const bad = bytes.slice();
    bad[0] = 0;
    expect(() => new KeyStateStore(model).restore(bad)).toThrow(/bad magic/);
  });

  it('a changelog restore keeps the state with the later source position, not the last one written', () => {
    const at = (offset: number, partition = 0, fill = offset) => new KeyStateStore(model).encode([snapshot('k', fill, { position: { partition, offset } })]);
    const store = new KeyStateStore(model);
    store.restore(at(20), notBehind);
    // A late write from a previous owner, behind what is resident: refused.
    expect(store.restore(at(15), notBehind)).toEqual([]);
    expect(store.get('k')!.state[0]).toBe(20);
    store.restore(at(99), notBehind);
    store.restore(at(100), notBehind);
    expect(store.get('k')!.state[0]).toBe(100);
    // Another partition's position says nothing about order: it replaces.
    store.restore(at(5, 1), notBehind);
    expect(store.get('k')!.state[0]).toBe(5);
    // Without `accept`, the last written wins (a plain restore).
    store.restore(at(1));
    expect(store.get('k')!.state[0]).toBe(1);
  });

  it('reads state current only on the device back when it is read, in one batch for a snapshot', async () => {
    const store = new KeyStateStore(model);
    // A device whose slot s holds floats s + 0.5 (segment-major, as a backend's table reads).
    const reads: number[][] = [];
    const device = {
      read(slots: Int32Array, into: Float32Array): void {
        reads.push([...slots]);
        into.set(Array.from({ length: into.length }, (_, i) => slots[i % slots.length]! + 0.5));
      },
    };
    store.attachDevice(device);
    const slots = ['a', 'b', 'c'].map((k) => store.acquire(k, 0));
    for (const slot of slots.slice(0, 2)) store.chunkOf(slot).residence[slot & (CHUNK_SLOTS - 1)] = Residence.DEVICE;
    expect(store.get('a')!.state.every((v) => v === slots[0]! + 0.5)).toBe(true);
    expect(reads).toEqual([[slots[0]]]);
    // Read once, it is current on both sides: no second read-back.
    store.get('a');
    store.snapshot();
    // The snapshot read b (still device-only) alone, and c (on the host) not at all.
    expect(reads).toEqual([[slots[0]], [slots[1]]]);
    expect(() => store.attachDevice(undefined)).not.toThrow();
    // A restore puts the host copy ahead of the device's.
    store.attachDevice(device);
    store.chunkOf(slots[2]!).residence[slots[2]! & (CHUNK_SLOTS - 1)] = Residence.DEVICE;
    expect(() => store.attachDevice(undefined)).toThrow(/pull\(\) it before detaching/);
    store.set(snapshot('c', 7));
    expect(store.get('c')!.state[0]).toBe(7);
    expect(reads).toHaveLength(2);
  });

  it('refuses a synchronous read of device-only state from a device that reads asynchronously, and pull() serves it', async () => {
    const store = new KeyStateStore(model);
    store.attachDevice({ read: async (_slots: Int32Array, into: Float32Array) => void into.fill(3) });
    const slot = store.acquire('k', 0);
    store.chunkOf(slot).residence[slot & (CHUNK_SLOTS - 1)] = Residence.DEVICE;
    expect(() => store.get('k')).toThrow(/await store.pull\(\)/);
    await store.pull(['k']);
    expect([...store.get('k')!.state]).toEqual(new Array(model.stateSize).fill(3));
  });
});
