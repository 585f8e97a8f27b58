/**
 * The micro-batch path (a device backend's one call per micro-batch) against the wave-by-wave
 * path on the same backend and input: the same results event by event, bit for bit (outputs,
 * sequence numbers, rejections, what keys remember, classes), the same changelog bytes for
 * every captured state, and the same state left in the store. Run on GPU.js's `cpu` kernels,
 * which are the GL and WebGPU kernels transpiled to JavaScript; headless-gl runs the same
 * comparison where a display is present (CI).
 */
import { asyncScheduler, from, lastValueFrom, toArray, type SchedulerLike } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { compareMicroBatchWithReference, CONFORMANCE_SUITE } from '../src/backends/conformance.js';
import { cpuProvider, gpuProvider } from '../src/backends/gpujs.js';
import { onnxProvider } from '../src/backends/onnx.js';
import { keyLengths, lengthRuns } from '../src/backends/onnx-sequence.js';
import type { StepBackend } from '../src/backends/types.js';
import { createRng } from '../src/core/prng.js';
import { randomModel } from '../src/core/random-model.js';
import { rnnByKey, type KeyedStep } from '../src/operators/rnn-by-key.js';
import { KeyStateStore, Residence } from '../src/state/key-state-store.js';

interface Ev {
  readonly k: string;
  readonly seq: number;
  readonly v: number;
  readonly last?: boolean;
}

const model = randomModel({
  features: ['v', 'dv'],
  layers: [
    { cell: 'lstm', hiddenSize: 6 },
    { cell: 'gru', hiddenSize: 5 },
  ],
  head: { kind: 'softmax', labels: ['a', 'b', 'c'] },
  seed: 5,
});

/**
 * Keys with uneven event counts interleaved at random: some events repeat or go back in
 * sequence (rejected), some have a non-finite feature (rejected), some keys end at their last
 * event, and one key ends and comes back within a micro-batch (which then goes wave by wave).
 */
function events(seed: number, count: number, endAndReturn: boolean): Ev[] {
  const rng = createRng(seed);
  const next = new Map<string, number>();
  const out: Ev[] = [];
  for (let i = 0; i < count; i++) {
    const k = `k${Math.floor(rng.next() ** 2 * 40)}`;
    let seq = next.get(k) ?? 0;
    const roll = rng.next();
    if (roll < 0.04 && seq > 0) seq -= 1; // a duplicate
    else if (roll < 0.06 && seq > 1) seq -= 2; // out of order
    else next.set(k, seq + 1);
    out.push({ k, seq, v: roll < 0.08 && roll >= 0.06 ? Number.NaN : rng.normal() });
  }
  // Keys k0..k4 end at their last event.
  for (const k of ['k0', 'k1', 'k2', 'k3', 'k4']) {
    const at = out.map((e) => e.k).lastIndexOf(k);
    if (at >= 0) out[at] = { ...out[at]!, last: true };
  }
  if (endAndReturn) out.push({ k: 'k0', seq: 0, v: 1 }, { k: 'k0', seq: 1, v: 2 });
  return out;
}

/** Real timers, a clock that stands still: both runs store the same lastSeen. */
const stillClock: SchedulerLike = { now: () => 0, schedule: asyncScheduler.schedule.bind(asyncScheduler) as SchedulerLike['schedule'] };

/** How a run steps: wave by wave, or whole micro-batches with the keys' state on the host or in the device's slot table. */
type Path = 'waves' | 'micro-batch' | 'slot table';

/** Slots whose current state is on the device only. */
function onDevice(store: KeyStateStore): number {
  let n = 0;
  for (const c of store.chunks) for (let i = 0; i < c.residence.length; i++) if (c.keys[i] !== undefined && c.residence[i] === Residence.DEVICE) n++;
  return n;
}

async function run(
  backend: StepBackend,
  input: readonly Ev[],
  path: Path | boolean,
  store = new KeyStateStore(model, { carrySize: 1 }),
  captureState = true,
): Promise<{ results: KeyedStep<Ev>[]; store: KeyStateStore; deviceOnly: number }> {
  const p: Path = path === true ? 'slot table' : path === false ? 'waves' : path;
  const results = await lastValueFrom(
    from(input).pipe(
      rnnByKey<Ev, Ev>({
        backend,
        store,
        keyOf: (e) => e.k,
        eventOf: (e) => e,
        positionOf: (e) => ({ partition: 0, offset: input.indexOf(e) }),
        features: (e, prev, out) => {
          out[0] = e.v;
          out[1] = e.v - (prev?.v ?? 0);
        },
        carry: { v: (e) => e.v },
        ends: (e) => e.last === true,
        classify: true,
        captureState,
        sequence: { field: 'seq', of: (e) => e.seq, consecutive: true, first: 0 },
        maxBatchSize: 256,
        maxWaitMs: 5,
        scheduler: stillClock,
        microBatch: p !== 'waves',
        stateOnDevice: p === 'slot table',
      }),
      toArray(),
    ),
  );
  return { results, store, deviceOnly: onDevice(store) };
}

/** A result as plain data: the changelog's bytes for its captured state, the rest as is. */
function comparable(store: KeyStateStore, r: KeyedStep<Ev>): unknown {
  if (r.kind !== 'step') return r;
  const { captured, output, ...rest } = r;
  return { ...rest, output: [...output], changelog: captured ? Buffer.from(store.encode([captured])).toString('base64') : undefined };
}

async function expectSamePaths(backend: StepBackend, input: readonly Ev[]): Promise<void> {
  const waves = await run(backend, input, 'waves');
  for (const path of ['micro-batch', 'slot table'] as const) {
    const whole = await run(backend, input, path);
    expect(whole.results.map((r) => comparable(whole.store, r)), path).toEqual(waves.results.map((r) => comparable(waves.store, r)));
    // The slot table's run leaves keys' state on the device; the snapshot reads it back.
    if (path === 'slot table') expect(whole.deviceOnly).toBeGreaterThan(0);
    else expect(whole.deviceOnly).toBe(0);
    expect(Buffer.from(whole.store.snapshot()).equals(Buffer.from(waves.store.snapshot())), path).toBe(true);
    expect(onDevice(whole.store)).toBe(0);
    const kinds = new Set(whole.results.map((r) => r.kind));
    expect([...kinds].sort()).toEqual(['rejected', 'step']);
  }
}

/**
 * Half the input, a snapshot restored into a new store, the other half: restored keys' state
 * goes up to the device's table once, and everything matches running the whole input on the host.
 */
async function expectSameAfterRestore(backend: StepBackend, input: readonly Ev[]): Promise<void> {
  const half = Math.floor(input.length / 2);
  const straight = await run(backend, input, 'waves');
  const first = await run(backend, input.slice(0, half), 'slot table');
  const restored = new KeyStateStore(model, { carrySize: 1 });
  restored.restore(first.store.snapshot());
  const second = await run(backend, input.slice(half), 'slot table', restored);
  const tail = straight.results.slice(half);
  // The two runs index positions per half; compare everything else.
  const strip = (store: KeyStateStore, r: KeyedStep<Ev>): unknown => {
    const c = comparable(store, r) as Record<string, unknown>;
    return { ...c, changelog: undefined, captured: undefined, state: r.kind === 'step' && r.captured ? [...r.captured.state] : undefined };
  };
  expect(second.results.map((r) => strip(second.store, r))).toEqual(tail.map((r) => strip(straight.store, r)));
  const states = (store: KeyStateStore): Record<string, number[]> => Object.fromEntries([...store.keys()].sort().map((k) => [k, [...store.get(k)!.state]]));
  expect(states(second.store)).toEqual(states(straight.store));
}

describe('the micro-batch path (one backend call per micro-batch)', () => {
  it('gives the wave-by-wave results bit for bit, and the same changelog bytes and final states (gpu.js cpu kernels)', async () => {
    const backend = await cpuProvider.create(model, {});
    try {
      await expectSamePaths(backend, events(3, 3000, false));
      // A key that ends and returns within a micro-batch: that micro-batch goes wave by wave.
      await expectSamePaths(backend, events(4, 1500, true));
      await expectSameAfterRestore(backend, events(6, 2000, false));
    } finally {
      backend.dispose();
    }
  });

  it('passes the conformance check beside the float64 reference on every cell type (gpu.js cpu)', async () => {
    for (const c of CONFORMANCE_SUITE.cases) {
      const m = randomModel({ features: 5, layers: c.layers, head: { kind: 'softmax', labels: ['a', 'b', 'c', 'd'] }, seed: 7, scale: 2 });
      const backend = await cpuProvider.create(m, {});
      try {
        const r = await compareMicroBatchWithReference(backend, m, 33, { maxEvents: 9, seed: 1 });
        expect(r.worstAbsError, c.label).toBeLessThan(CONFORMANCE_SUITE.tolerance);
        expect(r.referenceMagnitude).toBeGreaterThan(CONFORMANCE_SUITE.minReferenceMagnitude);
      } finally {
        backend.dispose();
      }
    }
  });

  it.runIf(process.env.DISPLAY !== undefined)('gives the wave-by-wave results bit for bit on WebGL (headless-gl), with fewer bytes and read-backs', async () => {
    const backend = await gpuProvider.create(model, {});
    try {
      const input = events(3, 3000, false);
      const traffic = async (path: Path): Promise<{ up: number; down: number; readBacks: number }> => {
        const before = backend.transfers!;
        await run(backend, input, path);
        const after = backend.transfers!;
        return { up: after.bytesUp - before.bytesUp, down: after.bytesDown - before.bytesDown, readBacks: after.readBacks - before.readBacks };
      };
      const waves = await traffic('waves');
      const whole = await traffic('micro-batch');
      const table = await traffic('slot table');
      process.stderr.write(`headless-gl, 3000 events: wave by wave ${JSON.stringify(waves)}, per micro-batch ${JSON.stringify(whole)}, state in the slot table ${JSON.stringify(table)}\n`);
      expect(whole.up).toBeLessThan(waves.up);
      expect(whole.readBacks).toBeLessThan(waves.readBacks);
      // The keys' state stays on the device: less goes up, and no final states come down.
      expect(table.up).toBeLessThan(whole.up);
      expect(table.down).toBeLessThan(whole.down);
      await expectSamePaths(backend, input);
      await expectSameAfterRestore(backend, events(6, 2000, false));
    } finally {
      backend.dispose();
    }
  }, 120_000);

  it.runIf(process.env.DISPLAY !== undefined)('a micro-batch taller than a GL texture may be goes wave by wave on WebGL, with the same results', async () => {
    const m = randomModel({ features: 5, layers: [{ cell: 'lstm', hiddenSize: 8 }], head: { kind: 'softmax', labels: ['a', 'b'] }, seed: 7, scale: 2 });
    const backend = await gpuProvider.create(m, {});
    try {
      // About 2,000 keys x 6.5 events: 13,000 rows, whose accumulators (16,384 + 2,048 rows) exceed GL's 16,384.
      const r = await compareMicroBatchWithReference(backend, m, 2000, { maxEvents: 12, seed: 2 });
      expect(r.worstAbsError).toBeLessThan(CONFORMANCE_SUITE.tolerance);
    } finally {
      backend.dispose();
    }
  }, 120_000);
});

describe('the onnx backend\'s micro-batches, each key\'s events as one sequence (onnx-sequence.ts)', () => {
  it('gives the wave-by-wave results bit for bit through rnnByKey, and the same final states', async () => {
    const backend = await onnxProvider.create(model, {});
    try {
      expect(backend.sequenceMicroBatch).toBe(true);
      for (const [seed, endAndReturn] of [[3, false], [4, true]] as const) {
        const input = events(seed, 3000, endAndReturn);
        const waves = await run(backend, input, 'waves', undefined, false);
        const whole = await run(backend, input, 'micro-batch', undefined, false);
        expect(whole.results.map((r) => comparable(whole.store, r))).toEqual(waves.results.map((r) => comparable(waves.store, r)));
        expect(Buffer.from(whole.store.snapshot()).equals(Buffer.from(waves.store.snapshot()))).toBe(true);
      }
    } finally {
      backend.dispose();
    }
  });

  it('passes the conformance check beside the float64 reference on every cell type, at uneven lengths', async () => {
    for (const c of CONFORMANCE_SUITE.cases) {
      const m = randomModel({ features: 5, layers: c.layers, head: { kind: 'softmax', labels: ['a', 'b', 'c', 'd'] }, seed: 7, scale: 2 });
      const backend = await onnxProvider.create(m, {});
      try {
        // 300 keys of 1..40 events: several runs of similar lengths per micro-batch.
        const r = await compareMicroBatchWithReference(backend, m, 300, { maxEvents: 40, seed: 1, states: false });
        expect(r.worstAbsError, c.label).toBeLessThan(CONFORMANCE_SUITE.tolerance);
        expect(r.referenceMagnitude).toBeGreaterThan(CONFORMANCE_SUITE.minReferenceMagnitude);
        // Asked for every row's state (a changelog's captures), it steps wave by wave, as conformant.
        const withStates = await compareMicroBatchWithReference(backend, m, 33, { maxEvents: 9, seed: 2 });
        expect(withStates.worstAbsError, c.label).toBeLessThan(CONFORMANCE_SUITE.tolerance);
      } finally {
        backend.dispose();
      }
    }
  });

  it('cuts keys into runs of similar lengths, so padding never doubles the work', () => {
    const waveSizes = Int32Array.from([9, 5, 5, 5, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    const lengths = keyLengths(waveSizes, 9);
    expect([...lengths]).toEqual([40, 5, 4, 4, 4, 1, 1, 1, 1]);
    const runs = lengthRuns(lengths);
    expect(runs).toEqual([
      [0, 1],
      [1, 5],
      [5, 9],
    ]);
    for (const [from, to] of runs) {
      let rows = 0;
      for (let b = from; b < to; b++) rows += lengths[b]!;
      expect(lengths[from]! * (to - from)).toBeLessThan(2 * rows);
    }
    // One key with 4,000 events beside a thousand with one: two runs, not 4,000 x 1,001 rows.
    const skewed = Int32Array.from({ length: 4000 }, (_, w) => (w === 0 ? 1001 : 1));
    expect(lengthRuns(keyLengths(skewed, 1001))).toEqual([
      [0, 1],
      [1, 1001],
    ]);
  });
});
