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
import type { StepBackend } from '../src/backends/types.js';
import { createRng } from '../src/core/prng.js';
import { randomModel } from '../src/core/random-model.js';
import { rnnByKey, type KeyedStep } from '../src/operators/rnn-by-key.js';
import { KeyStateStore } from '../src/state/key-state-store.js';

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

async function run(backend: StepBackend, input: readonly Ev[], microBatch: boolean): Promise<{ results: KeyedStep<Ev>[]; store: KeyStateStore }> {
  const store = new KeyStateStore(model, { carrySize: 1 });
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
        captureState: true,
        sequence: { field: 'seq', of: (e) => e.seq, consecutive: true, first: 0 },
        maxBatchSize: 256,
        maxWaitMs: 5,
        scheduler: stillClock,
        microBatch,
      }),
      toArray(),
    ),
  );
  return { results, store };
}

/** A result as plain data: the changelog's bytes for its captured state, the rest as is. */
function comparable(store: KeyStateStore, r: KeyedStep<Ev>): unknown {
  if (r.kind !== 'step') return r;
  const { captured, output, ...rest } = r;
  return { ...rest, output: [...output], changelog: captured ? Buffer.from(store.encode([captured])).toString('base64') : undefined };
}

async function expectSamePaths(backend: StepBackend, input: readonly Ev[]): Promise<void> {
  const waves = await run(backend, input, false);
  const whole = await run(backend, input, true);
  expect(whole.results.map((r) => comparable(whole.store, r))).toEqual(waves.results.map((r) => comparable(waves.store, r)));
  expect(Buffer.from(whole.store.snapshot()).equals(Buffer.from(waves.store.snapshot()))).toBe(true);
  const kinds = new Set(whole.results.map((r) => r.kind));
  expect([...kinds].sort()).toEqual(['rejected', 'step']);
}

describe('the micro-batch path (one backend call per micro-batch)', () => {
  it('gives the wave-by-wave results bit for bit, and the same changelog bytes and final states (gpu.js cpu kernels)', async () => {
    const backend = await cpuProvider.create(model, {});
    try {
      await expectSamePaths(backend, events(3, 3000, false));
      // A key that ends and returns within a micro-batch: that micro-batch goes wave by wave.
      await expectSamePaths(backend, events(4, 1500, true));
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
      const before = backend.transfers!;
      await run(backend, input, false);
      const mid = backend.transfers!;
      await run(backend, input, true);
      const after = backend.transfers!;
      const waves = { up: mid.bytesUp - before.bytesUp, down: mid.bytesDown - before.bytesDown, readBacks: mid.readBacks - before.readBacks };
      const whole = { up: after.bytesUp - mid.bytesUp, down: after.bytesDown - mid.bytesDown, readBacks: after.readBacks - mid.readBacks };
      process.stderr.write(`headless-gl, 3000 events: wave by wave ${JSON.stringify(waves)}, per micro-batch ${JSON.stringify(whole)}\n`);
      expect(whole.up).toBeLessThan(waves.up);
      expect(whole.readBacks).toBeLessThan(waves.readBacks);
      await expectSamePaths(backend, input);
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
