/**
 * Hot swap policy `warm`: each key keeps its last N events' raw features in its carry (and so in
 * snapshots and the changelog); after a swap a key's state is rebuilt from them under the new
 * model before its next step. The check is against the definition: a warmed key's outputs equal
 * the new model run from zero state over the key's last N events and then its next ones.
 */
import { describe, expect, it } from 'vitest';
import { onnxProvider } from '../src/backends/onnx.js';
import { referenceProvider } from '../src/backends/reference.js';
import { SwappableBackend } from '../src/backends/swappable.js';
import type { BackendProvider } from '../src/backends/types.js';
import type { RnnModel } from '../src/core/model.js';
import { createRng } from '../src/core/prng.js';
import { randomModel } from '../src/core/random-model.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { KeyedStepper, type KeyedStep } from '../src/state/keyed-stepper.js';
import { WarmHistory } from '../src/state/warm-history.js';
import { decodeModelMarker, encodeModelMarker, isModelMarker } from '../src/state/model-marker.js';

interface Ev {
  readonly key: string;
  readonly x: readonly [number, number];
  /** Its index in its key's stream. */
  readonly n: number;
}

const model = (seed: number): RnnModel =>
  randomModel({ name: `toy-${seed}`, features: ['a', 'b'], layers: [{ cell: 'gru', hiddenSize: 6 }, { cell: 'lstm', hiddenSize: 5 }], head: { kind: 'softmax', labels: ['p', 'q', 'r'] }, seed });
/** One value carried by the pipeline itself, so that the history has to start after it. */
const carry = { last: (e: Ev): number => e.x[0] };
const N = 4;

/** Events of `keys`, key k with `lengths[k]` events, interleaved as a stream. */
function stream(lengths: readonly number[], seed = 7): Ev[][] {
  const rng = createRng(seed);
  return lengths.map((len, k) => Array.from({ length: len }, (_, n) => ({ key: `k${k}`, x: [rng.uniform(-1, 1), rng.uniform(-1, 1)] as const, n })));
}
const interleave = (perKey: Ev[][], from: number, to: number): Ev[] => {
  const out: Ev[] = [];
  for (let n = from; n < to; n++) for (const evs of perKey) if (evs[n]) out.push(evs[n]!);
  return out;
};

async function stepperFor(provider: BackendProvider, m: RnnModel, options: { history?: WarmHistory; microBatch?: boolean; store?: KeyStateStore; onWarmUp?: (keys: number, events: number) => void }) {
  const backend = new SwappableBackend(await provider.create(m, {}));
  const store = options.store ?? new KeyStateStore(m, { carrySize: 1 + (options.history?.size ?? 0) });
  const stepper = new KeyedStepper<Ev, Ev>(
    {
      backend,
      store,
      keyOf: (e) => e.key,
      eventOf: (e) => e,
      features: (e, _prev, out) => {
        out[0] = e.x[0];
        out[1] = e.x[1];
      },
      carry,
      classify: true,
      ...(options.history ? { history: options.history } : {}),
      ...(options.microBatch !== undefined ? { microBatch: options.microBatch } : {}),
      ...(options.onWarmUp ? { onWarmUp: options.onWarmUp } : {}),
    },
    8,
    () => 0,
  );
  return { backend, store, stepper };
}

type Step = Extract<KeyedStep<Ev>, { kind: 'step' }>;
async function run(stepper: KeyedStepper<Ev, Ev>, events: Ev[], batch = 5): Promise<Step[]> {
  const out: Step[] = [];
  for (let i = 0; i < events.length; i += batch) out.push(...((await stepper.run(events.slice(i, i + batch))) as Step[]));
  return out;
}

const cases: [string, BackendProvider, boolean][] = [
  ['reference backend, wave by wave', referenceProvider, false],
  ['onnx backend, whole micro-batches', onnxProvider, true],
];

describe('warm-up after a hot swap', () => {
  it.each(cases)('%s: a warmed key predicts as the new model run from zero over its last N events, then on; "warm" false until N events under the model', async (_name, provider, microBatch) => {
    const a = model(1);
    const b = model(2);
    // Events before the swap: k0..k2 more than N, k3 fewer (2), k4 none (a new key after it).
    const cut = [6, 6, 6, 2, 0];
    const perKey = stream([9, 8, 7, 5, 3]);
    const before = perKey.map((evs, k) => evs.slice(0, cut[k]));
    const after = perKey.map((evs, k) => evs.slice(cut[k]));
    const history = new WarmHistory({ length: N, width: 2, offset: 1 });
    const warmed: { keys: number; events: number }[] = [];
    const { backend, store, stepper } = await stepperFor(provider, a, { history, microBatch, onWarmUp: (keys, events) => warmed.push({ keys, events }) });
    const first = await run(stepper, interleave(before, 0, 6));
    // Under the first model too: "warm" only once a key has seen N events.
    for (const s of first) expect(s.warm, `${s.key} #${s.seq}`).toBe(s.seq >= N);

    backend.replace(await provider.create(b, {})).dispose();
    expect(store.serve(b, 'warm')).toBe(4);
    expect(store.coldCount).toBe(4);
    const second = await run(stepper, interleave(after, 0, 3));

    // Every key cold at its first event after the swap was warmed: histories of 4, 4, 4 and 2 events.
    expect(store.coldCount).toBe(0);
    expect(warmed.reduce((n, w) => n + w.keys, 0)).toBe(4);
    expect(warmed.reduce((n, w) => n + w.events, 0)).toBe(4 + 4 + 4 + 2);
    for (const [k, evs] of after.entries()) {
      if (evs.length === 0) continue;
      // The definition: model b from zero state over the key's last N events before the swap, then on.
      const { stepper: fresh } = await stepperFor(provider, b, {});
      const expected = (await run(fresh, [...before[k]!.slice(-N), ...evs])).slice(Math.min(N, before[k]!.length));
      const got = second.filter((s) => s.key === `k${k}`);
      expect(got.length).toBe(evs.length);
      got.forEach((s, j) => {
        for (let o = 0; o < 3; o++) expect(Math.abs(s.output[o]! - expected[j]!.output[o]!), `k${k} event ${j} output ${o}`).toBeLessThan(1e-5);
        // The class the warm-up left is the previous class of the first event after it.
        expect(s.previousClass).toBe(j === 0 ? (before[k]!.length > 0 ? expected[j]!.previousClass : -1) : got[j - 1]!.best);
      });
      // Events seen under model b: the replayed history, then these.
      got.forEach((s, j) => expect(s.warm, `k${k} after the swap, event ${j}`).toBe(Math.min(N, before[k]!.length) + j + 1 >= N));
    }
  });

  it('state restored from an earlier model\'s changelog record is cold under policy warm, and warmed before its next step', async () => {
    const a = model(1);
    const b = model(2);
    const perKey = stream([7, 3]);
    const history = new WarmHistory({ length: N, width: 2, offset: 1 });
    const { store } = await stepperFor(referenceProvider, a, { history });
    const { stepper: writer } = await stepperFor(referenceProvider, a, { history, store });
    await run(writer, interleave(perKey, 0, 5));
    const changelog = store.snapshot();

    // A restarted instance that serves b (swapped at start from the models topic), restoring a's records.
    const restored = new KeyStateStore(a, { carrySize: 1 + history.size });
    restored.serve(b, 'warm');
    expect(restored.restore(changelog).sort()).toEqual(['k0', 'k1']);
    expect(restored.isCold('k0') && restored.isCold('k1')).toBe(true);
    const { stepper } = await stepperFor(referenceProvider, b, { history, store: restored });
    const next = await run(stepper, interleave(perKey, 5, 7));
    const { stepper: fresh } = await stepperFor(referenceProvider, b, {});
    const expected = (await run(fresh, [...perKey[0]!.slice(5 - N, 5), ...perKey[0]!.slice(5)])).slice(N);
    const got = next.filter((s) => s.key === 'k0');
    got.forEach((s, j) => {
      for (let o = 0; o < 3; o++) expect(Math.abs(s.output[o]! - expected[j]!.output[o]!)).toBeLessThan(1e-6);
    });
    expect(restored.isCold('k0')).toBe(false);
    // k1 had no event since: still cold, and counted; removing it uncounts it.
    expect(restored.coldCount).toBe(1);
    restored.delete('k1');
    expect(restored.coldCount).toBe(0);

    // A store kept for policy warm takes any model's records cold, with no swap in between (a
    // restart with the new model as --model): the same warm-up follows.
    const restarted = new KeyStateStore(b, { carrySize: 1 + history.size, warmForeign: true });
    expect(restarted.restore(changelog).sort()).toEqual(['k0', 'k1']);
    expect(restarted.isCold('k0') && restarted.isCold('k1')).toBe(true);
    const { stepper: again } = await stepperFor(referenceProvider, b, { history, store: restarted });
    const same = (await run(again, interleave(perKey, 5, 7))).filter((s) => s.key === 'k0');
    same.forEach((s, j) => {
      for (let o = 0; o < 3; o++) expect(Math.abs(s.output[o]! - got[j]!.output[o]!)).toBeLessThan(1e-9);
    });

    // Under reset no earlier model's record is read at all.
    const strict = new KeyStateStore(a, { carrySize: 1 + history.size });
    strict.serve(b, 'reset');
    expect(() => strict.restore(changelog)).toThrow(/refusing foreign state/);
  });

  it('the history ring keeps the last N events in order', () => {
    const h = new WarmHistory({ length: 3, width: 2, offset: 1 });
    const carry = new Float64Array(2 + h.size).fill(Number.NaN);
    const at = 1; // a key's carry starts one value in
    expect(h.filled(carry, at)).toBe(0);
    for (let s = 1; s <= 5; s++) h.push(carry, at, s, Float64Array.of(s, -s));
    expect(h.filled(carry, at)).toBe(3);
    expect(h.warm(carry, at)).toBe(true);
    const rows = [0, 1, 2].map((k) => carry[h.rowAt(at, 5, 3, k)]);
    expect(rows).toEqual([3, 4, 5]);
    expect(() => new WarmHistory({ length: 0, width: 2, offset: 0 })).toThrow(/length must be a positive integer/);
  });
});

describe('model markers in the changelog', () => {
  it('round-trip, are told apart from state records, and a malformed one names its field', () => {
    const marker = { model: 'ef'.repeat(32), name: 'ball-direction', offset: 1234, policy: 'warm', at: 1796560000000 };
    const bytes = encodeModelMarker(marker);
    expect(isModelMarker(bytes)).toBe(true);
    expect(decodeModelMarker(bytes)).toEqual(marker);
    const store = new KeyStateStore(model(1), { carrySize: 1 });
    expect(isModelMarker(store.snapshot())).toBe(false);
    expect(() => decodeModelMarker(encodeModelMarker({ ...marker, model: 'nope' }))).toThrow(/"model" must be 64 hex digits/);
    expect(() => decodeModelMarker(encodeModelMarker({ ...marker, offset: -1 }))).toThrow(/"offset" must be a non-negative integer/);
  });
});
