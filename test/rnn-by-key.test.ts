/**
 * Marble tests for rnnByKey in virtual time (TestScheduler.run): batching by size and by time,
 * per-key order under interleaving, dead letters and rejected events passing without stopping
 * the stream, source and backend errors, early unsubscribe, empty and never-ending sources.
 * Numeric outputs are checked against the float64 reference, key by key.
 */
import { firstValueFrom, from, lastValueFrom, map, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { ReferenceBackend } from '../src/backends/reference.js';
import type { StepBackend } from '../src/backends/types.js';
import { stepNetwork } from '../src/core/cells.js';
import { QueueOverflowError } from '../src/core/errors.js';
import { randomModel } from '../src/core/random-model.js';
import { BoundedQueue } from '../src/operators/bounded-queue.js';
import { rnnByKey, type KeyedStep, type RnnByKeyConfig } from '../src/operators/rnn-by-key.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { delayedReference } from './support/backends.js';

interface Ev {
  readonly k: string;
  readonly v: number;
  /** A dead letter in disguise: rnnByKey must pass it through without a step. */
  readonly dead?: boolean;
}

const model = randomModel({ features: ['v'], layers: [{ cell: 'gru', hiddenSize: 4 }], head: { kind: 'softmax', labels: ['lo', 'hi'] }, seed: 11 });

const V: Record<string, Ev> = {
  a: { k: 'a', v: 0.5 },
  b: { k: 'b', v: -1 },
  c: { k: 'c', v: 2 },
  d: { k: 'd', v: 0.25 },
  A: { k: 'a', v: 1.5 },
  B: { k: 'b', v: 0.75 },
  x: { k: 'x', v: 0, dead: true },
  n: { k: 'a', v: Number.NaN },
};

function config(scheduler: TestScheduler | undefined, overrides: Partial<RnnByKeyConfig<Ev, Ev>> = {}): RnnByKeyConfig<Ev, Ev> {
  return {
    backend: new ReferenceBackend(model),
    store: new KeyStateStore(model),
    keyOf: (e) => (e.dead ? undefined : e.k),
    eventOf: (e) => e,
    features: (e, _prev, out) => {
      out[0] = e.v;
    },
    ...(scheduler ? { scheduler } : {}),
    maxBatchSize: 100,
    maxWaitMs: 100,
    ...overrides,
  };
}

/** `a1` = key a, 1st step; `-x` = passthrough of x; `!a` = rejected event of key a. */
const label = (r: KeyedStep<Ev>): string =>
  r.kind === 'step' ? `${r.key}${r.seq}` : r.kind === 'passthrough' ? `-${r.item.k}` : `!${r.key}`;

const newScheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

describe('rnnByKey (marble tests)', () => {
  it('cuts a batch when it reaches maxBatchSize, and flushes the rest on completion', () => {
    newScheduler().run(({ cold, expectObservable }) => {
      const source = cold('-a-b-c---------d-|', V);
      const out = source.pipe(rnnByKey(config(undefined, { maxBatchSize: 3, maxWaitMs: 1000 })), map(label));
      expectObservable(out).toBe('-----(xyz)-------(w|)', { x: 'a1', y: 'b1', z: 'c1', w: 'd1' });
    });
  });

  it('cuts a batch when maxWaitMs elapses in scheduler time', () => {
    const scheduler = newScheduler();
    scheduler.run(({ cold, expectObservable }) => {
      const source = cold('-a-b------c|', V);
      const out = source.pipe(rnnByKey(config(scheduler, { maxBatchSize: 100, maxWaitMs: 5 })), map(label));
      expectObservable(out).toBe('------(xy)-(z|)', { x: 'a1', y: 'b1', z: 'c1' });
    });
  });

  it('applies each key’s events in arrival order and emits in input order', () => {
    newScheduler().run(({ cold, expectObservable }) => {
      const source = cold('-a-b-A-a-B-|', V);
      const out = source.pipe(rnnByKey(config(undefined)), map(label));
      expectObservable(out).toBe('-----------(vwxyz|)', { v: 'a1', w: 'b1', x: 'a2', y: 'a3', z: 'b2' });
    });
  });

  it('passes dead letters through in order and rejects non-finite features without stopping', () => {
    newScheduler().run(({ cold, expectObservable }) => {
      const source = cold('-a-x-n-A-|', V);
      const out = source.pipe(rnnByKey(config(undefined)), map(label));
      // The rejected NaN event does not advance key a: the next event of a is its 2nd step.
      expectObservable(out).toBe('---------(stuv|)', { s: 'a1', t: '-x', u: '!a', v: 'a2' });
    });
  });

  it('propagates a source error', () => {
    newScheduler().run(({ cold, expectObservable }) => {
      const source = cold('-a-#', V, new Error('broker gone'));
      expectObservable(source.pipe(rnnByKey(config(undefined)), map(label))).toBe('---#', undefined, new Error('broker gone'));
    });
  });

  it('errors when the backend fails', () => {
    const failing: StepBackend = {
      name: 'reference',
      detail: 'fails',
      step: () => {
        throw new Error('kernel exploded');
      },
      dispose: () => {},
    };
    newScheduler().run(({ cold, expectObservable }) => {
      const source = cold('-a-b-|', V);
      expectObservable(source.pipe(rnnByKey(config(undefined, { backend: failing })), map(label))).toBe('-----#', undefined, new Error('kernel exploded'));
    });
  });

  it('stops cleanly on early unsubscribe: no emission after, source unsubscribed, queue room returned', () => {
    const queue = new BoundedQueue(10);
    const scheduler = newScheduler();
    scheduler.run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-a-b-c-d-|', V);
      const out = source.pipe(rnnByKey(config(scheduler, { queue, maxBatchSize: 100, maxWaitMs: 50 })), map(label));
      expectObservable(out, '^----!').toBe('------');
      expectSubscriptions(source.subscriptions).toBe('^----!');
    });
    expect(queue.size).toBe(0);
  });

  it('completes at once on an empty source and never emits on a silent one', () => {
    newScheduler().run(({ cold, expectObservable }) => {
      expectObservable(cold<Ev>('|').pipe(rnnByKey(config(undefined)), map(label))).toBe('|');
      expectObservable(cold<Ev>('-').pipe(rnnByKey(config(undefined)), map(label))).toBe('-');
    });
  });
});

describe('rnnByKey numerics and flow control', () => {
  it('gives every key exactly the outputs of the float64 reference stepped alone', async () => {
    const events: Ev[] = [];
    for (let t = 0; t < 30; t++) for (const k of ['p', 'q', 'r']) if ((t + k.charCodeAt(0)) % 4 !== 0) events.push({ k, v: Math.sin(t + k.charCodeAt(0)) });
    const results = await lastValueFrom(from(events).pipe(rnnByKey(config(undefined, { maxBatchSize: 7, maxWaitMs: 0 })), toArray()));
    const state = new Map<string, Float64Array>();
    results.forEach((r, i) => {
      expect(r.kind).toBe('step');
      if (r.kind !== 'step') return;
      expect(r.item).toBe(events[i]);
      const s = state.get(r.key) ?? new Float64Array(model.stateSize);
      state.set(r.key, s);
      const expected = stepNetwork(model, [r.item.v], s);
      for (let k = 0; k < expected.length; k++) expect(r.output[k]).toBeCloseTo(expected[k]!, 6);
    });
  });

  it('keeps order with an asynchronous backend', async () => {
    const asyncBackend = delayedReference(model);
    const events = Array.from({ length: 40 }, (_, i) => ({ k: `k${i % 3}`, v: i / 10 }));
    const results = await lastValueFrom(from(events).pipe(rnnByKey(config(undefined, { backend: asyncBackend, maxBatchSize: 8, maxWaitMs: 1 })), toArray()));
    expect(results.map((r) => r.item)).toEqual(events);
    expect(results.filter((r) => r.kind === 'step' && r.key === 'k0').map((r) => (r as { seq: number }).seq)).toEqual(
      Array.from({ length: 14 }, (_, i) => i + 1),
    );
  });

  it('errors with QueueOverflowError when a source pushes past the queue capacity', async () => {
    const queue = new BoundedQueue(3);
    const events = Array.from({ length: 5 }, (_, i) => ({ k: 'a', v: i }));
    await expect(firstValueFrom(from(events).pipe(rnnByKey(config(undefined, { queue, maxBatchSize: 100, maxWaitMs: 10 }))))).rejects.toBeInstanceOf(
      QueueOverflowError,
    );
  });

  it('enforces per-key order by a sequence: a duplicate or older event is rejected with both numbers, a jump counts as a gap', async () => {
    interface Seq extends Ev {
      readonly n: number;
    }
    const ev = (k: string, n: number): Seq => ({ k, v: n / 10, n });
    const store = new KeyStateStore(model);
    const base = config(undefined) as unknown as RnnByKeyConfig<Seq, Seq>;
    const cfg: RnnByKeyConfig<Seq, Seq> = { ...base, store, sequence: { field: 'frame', of: (e) => e.n, consecutive: true } };
    // Within one micro-batch (waves) and across batches alike.
    const first = await lastValueFrom(from([ev('a', 0), ev('a', 1), ev('b', 5), ev('a', 1), ev('a', 0), ev('b', 8), ev('a', 2)]).pipe(rnnByKey(cfg), toArray()));
    expect(first.map((r) => (r.kind === 'step' ? `${r.key}${r.seq}+${r.gap}` : r.kind === 'rejected' ? r.reason : '?'))).toEqual([
      'a1+0',
      'a2+0',
      'b1+0',
      "duplicate: frame 1 is not after the key's last applied frame 1",
      "out of order: frame 0 is not after the key's last applied frame 1",
      'b2+2',
      'a3+0',
    ]);
    // The last applied sequence number is in the store's columns, kept in snapshots: the order holds after a restore.
    const restored = new KeyStateStore(model);
    restored.restore(store.snapshot());
    const after = await lastValueFrom(from([ev('a', 2), ev('a', 3)]).pipe(rnnByKey({ ...cfg, store: restored }), toArray()));
    expect(after.map((r) => r.kind)).toEqual(['rejected', 'step']);
  });

  it('remembers the carry fields of each key\'s last event for its next features, classifies, and frees a key at its last event', async () => {
    interface Word extends Ev {
      readonly i: number;
      readonly last?: boolean;
    }
    const w = (k: string, i: number, v: number, last = false): Word => ({ k, i, v, last });
    const store = new KeyStateStore(model, { carrySize: 2 });
    const seen: string[] = [];
    const base = config(undefined) as unknown as RnnByKeyConfig<Word, Word>;
    const cfg: RnnByKeyConfig<Word, Word> = {
      ...base,
      store,
      carry: { v: (e) => e.v, twice: (e) => 2 * e.v },
      features: (e, prev, out) => {
        seen.push(prev ? `${e.k}:${prev.v},${prev.twice}` : `${e.k}:-`);
        out[0] = e.v - (prev?.v ?? 0);
      },
      ends: (e) => e.last === true,
      classify: true,
      sequence: { field: 'index', of: (e) => e.i, consecutive: true, first: 0 },
    };
    const results = await lastValueFrom(from([w('a', 0, 1), w('b', 0, 5), w('a', 1, 3), w('a', 2, 4, true), w('a', 3, 9), w('b', 1, 6)]).pipe(rnnByKey(cfg), toArray()));
    // Waves: the 2nd events of a and b step together, before a's 3rd.
    expect(seen).toEqual(['a:-', 'b:-', 'a:1,2', 'b:5,10', 'a:3,6']);
    expect(results.map((r) => (r.kind === 'step' ? `${r.key}${r.seq}${r.ended ? '.' : ''}` : r.kind === 'rejected' ? `!${r.key}: ${r.reason}` : '?'))).toEqual([
      'a1',
      'b1',
      'a2',
      'a3.',
      "!a: out of order: index 3 but the key has no earlier events (its first must be 0; a key's events after its last one start nothing)",
      'b2',
    ]);
    // The ended key holds no state (nor does the refused word after it); b remembers its last event and class.
    expect([...store.keys()]).toEqual(['b']);
    const steps = results.filter((r) => r.kind === 'step');
    expect(steps.map((r) => r.previousClass >= 0)).toEqual([false, false, true, true, true]);
    const b = store.get('b')!;
    expect([...b.carry]).toEqual([6, 12]);
    expect(b.sequence).toBe(1);
    const lastOutput = steps.at(-1)!.output;
    expect(b.lastClass).toBe(lastOutput[1]! > lastOutput[0]! ? 1 : 0);
  });

  it('refuses a store smaller than a batch and invalid options, naming the option', () => {
    const small = new KeyStateStore(model, { capacity: 2 });
    expect(() => rnnByKey(config(undefined, { store: small, maxBatchSize: 10 }))).toThrow(/capacity \(2\) must be >= maxBatchSize \(10\)/);
    expect(() => rnnByKey(config(undefined, { maxBatchSize: 0 }))).toThrow(/maxBatchSize/);
  });
});

describe('BoundedQueue', () => {
  it('signals pressure when full and releases waiters once drained to resumeAt', async () => {
    const queue = new BoundedQueue(4, 1);
    const signals: boolean[] = [];
    queue.onPressure((full) => signals.push(full));
    queue.admit(4);
    expect(queue.full).toBe(true);
    let resumed = false;
    const waiting = queue.whenReady().then(() => (resumed = true));
    queue.release(2);
    await Promise.resolve();
    expect(resumed).toBe(false);
    queue.release(1);
    await waiting;
    expect(resumed).toBe(true);
    expect(signals).toEqual([true, false]);
    expect(() => new BoundedQueue(0)).toThrow(/capacity/);
  });
});
