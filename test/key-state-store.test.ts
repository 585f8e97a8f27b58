import { describe, expect, it } from 'vitest';
import { SnapshotError } from '../src/core/errors.js';
import { randomModel } from '../src/core/random-model.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { notBehind } from '../src/adapters/kafka/changelog.js';

const spec = { features: 2, layers: [{ cell: 'lstm' as const, hiddenSize: 3 }, { cell: 'gru' as const, hiddenSize: 2 }], head: { kind: 'linear' as const, outputs: ['y'] } };
const model = randomModel({ ...spec, seed: 1 });
const other = randomModel({ ...spec, seed: 2 });

describe('KeyStateStore', () => {
  it('lays out every layer’s h (and LSTM c) per key', () => {
    expect(model.stateSegments.map((s) => `${s.layer}${s.kind}@${s.offset}`)).toEqual(['0h@0', '0c@3', '1h@6']);
    expect(new KeyStateStore(model).acquire('k', 0).state).toEqual(new Float32Array(8));
  });

  it('evicts the least recently used key at capacity, counts it, and restarts it from zero', () => {
    const store = new KeyStateStore<{ v: number }>(model, { capacity: 2 });
    store.acquire('a', 0).state.fill(1);
    store.acquire('b', 1).state.fill(2);
    store.acquire('a', 2); // a is now the most recent
    store.acquire('c', 3); // evicts b
    expect([...store.entries()].map((e) => e.key)).toEqual(['a', 'c']);
    expect(store.stats.evictedByCapacity).toBe(1);
    expect(store.acquire('b', 4).state).toEqual(new Float32Array(8));
  });

  it("reuses an evicted key's space for the next key, at zero, with nothing of the evicted key left", () => {
    const store = new KeyStateStore<{ v: number }>(model, { capacity: 3 });
    for (let i = 0; i < 10_000; i++) {
      const e = store.acquire(`k${i}`, i);
      expect(e.steps).toBe(0);
      expect(e.prev).toBeUndefined();
      expect(e.state.every((v) => v === 0)).toBe(true);
      e.state.fill(i);
      e.steps = 1;
      e.prev = { v: i };
      e.position = i;
    }
    expect(store.size).toBe(3);
    expect([...store.entries()].map((e) => [e.key, e.state[0], e.prev])).toEqual([
      ['k9997', 9997, { v: 9997 }],
      ['k9998', 9998, { v: 9998 }],
      ['k9999', 9999, { v: 9999 }],
    ]);
    expect(store.stats).toEqual({ created: 10_000, evictedByCapacity: 9_997, evictedByTtl: 0 });
    // A deleted key's space is reused too; set() keeps a copy of what it is given.
    expect(store.delete('k9998')).toBe(true);
    const given = { key: 'r', state: new Float32Array(8).fill(7), prev: { v: 1 }, steps: 4, lastSeen: 5, position: 'p' };
    store.set(given);
    given.state.fill(0);
    expect(store.get('r')?.state[0]).toBe(7);
    expect([...store.entries()].map((e) => e.key)).toEqual(['k9997', 'k9999', 'r']);
  });

  it('evicts keys idle past the TTL, on access and in sweeps', () => {
    const store = new KeyStateStore(model, { idleTtlMs: 100 });
    store.acquire('a', 0).steps = 5;
    store.acquire('b', 50);
    expect(store.evictIdle(120)).toBe(1); // a idle 120 > 100
    expect(store.get('a')).toBeUndefined();
    expect(store.get('b', 200)).toBeUndefined(); // idle 150 on access
    expect(store.stats.evictedByTtl).toBe(2);
    expect(store.acquire('a', 300).steps).toBe(0);
  });

  it('round-trips one key or all keys through snapshot bytes', () => {
    const store = new KeyStateStore<{ x: number }>(model);
    const a = store.acquire('a', 10);
    a.state.set([1, 2, 3, 4, 5, 6, 7, 8]);
    a.steps = 3;
    a.prev = { x: 42 };
    a.position = { topic: 't', partition: 1, offset: '17' };
    store.acquire('ü-key', 11).state.fill(-0.5);

    const restored = new KeyStateStore<{ x: number }>(model);
    expect(restored.restore(store.snapshot(['a'])).map((e) => e.key)).toEqual(['a']);
    const r = restored.get('a')!;
    expect([...r.state]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(r.steps).toBe(3);
    expect(r.prev).toEqual({ x: 42 });
    expect(r.position).toEqual({ topic: 't', partition: 1, offset: '17' });

    const all = new KeyStateStore(model);
    all.restore(store.snapshot());
    expect(all.size).toBe(2);
    expect([...all.get('ü-key')!.state]).toEqual(new Array(8).fill(-0.5));
  });

  it('refuses a snapshot from another model, a corrupt one and a truncated one', () => {
    const store = new KeyStateStore(model);
    store.acquire('a', 0);
    const bytes = store.snapshot();
    expect(() => new KeyStateStore(other).restore(bytes)).toThrow(SnapshotError);
    expect(() => new KeyStateStore(other).restore(bytes)).toThrow(/taken with model [0-9a-f]{12}, but this model is/);
    expect(() => new KeyStateStore(model).restore(bytes.subarray(0, bytes.length - 3))).toThrow(/truncated/);
    const bad = bytes.slice();
    bad[0] = 0;
    expect(() => new KeyStateStore(model).restore(bad)).toThrow(/bad magic/);
  });

  it('a changelog restore keeps the state with the later source position, not the last one written', () => {
    const at = (offset: string, partition = 0, fill = Number(offset)) => {
      const s = new KeyStateStore(model);
      const e = s.acquire('k', 0);
      e.state.fill(fill);
      e.position = { kind: 'kafka', topic: 'in', partition, offset };
      return s.snapshot();
    };
    const store = new KeyStateStore(model);
    store.restore(at('20'), notBehind);
    // A late write from a previous owner, behind what is resident: refused.
    expect(store.restore(at('15'), notBehind)).toEqual([]);
    expect(store.get('k')!.state[0]).toBe(20);
    // Same or later positions replace it (offsets compare as numbers: '100' > '99').
    store.restore(at('99'), notBehind);
    store.restore(at('100'), notBehind);
    expect(store.get('k')!.state[0]).toBe(100);
    // Another partition's position says nothing about order: it replaces.
    store.restore(at('5', 1), notBehind);
    expect(store.get('k')!.state[0]).toBe(5);
    // Without `accept`, the last written wins (a plain restore).
    store.restore(at('1'));
    expect(store.get('k')!.state[0]).toBe(1);
  });
});
