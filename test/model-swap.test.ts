/**
 * Hot swap, piece by piece: the queue drains and holds, the store serves a new model (reset or
 * keep), a candidate is checked against the pipeline, the served model and the float64
 * reference, and the swapper refuses bad models (the served one goes on) and swaps good ones
 * where nothing is in flight.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { referenceProvider } from '../src/backends/reference.js';
import { SwappableBackend } from '../src/backends/swappable.js';
import type { StepBackend } from '../src/backends/types.js';
import { COMPASS } from '../src/fixtures/compass.js';
import { randomModel, randomModelFile, type RandomModelSpec } from '../src/core/random-model.js';
import type { RnnModel } from '../src/core/model.js';
import { silentLogger } from '../src/observability/logger.js';
import { BoundedQueue } from '../src/operators/bounded-queue.js';
import { checkCandidate } from '../src/pipeline/model-check.js';
import { loadPipeline } from '../src/pipeline/registry.js';
import { ServingModel } from '../src/pipeline/serving-model.js';
import { ServiceMetrics } from '../src/service/metrics.js';
import { ModelSwapper } from '../src/service/model-swap.js';
import { KeyStateStore } from '../src/state/key-state-store.js';

const ballSpec = (seed: number, overrides: Partial<RandomModelSpec> = {}): RandomModelSpec => ({
  name: `ball-${seed}`,
  features: ['x', 'y'],
  layers: [
    { cell: 'lstm', hiddenSize: 8 },
    { cell: 'lstm', hiddenSize: 8 },
  ],
  head: { kind: 'softmax', labels: [...COMPASS] },
  seed,
  ...overrides,
});
const ball = (seed: number, overrides: Partial<RandomModelSpec> = {}): RnnModel => randomModel(ballSpec(seed, overrides));
const snapshot = (key: string, model: RnnModel, offset: number) => ({ key, state: new Float32Array(model.stateSize).fill(0.25), steps: 3, lastSeen: 0, position: { partition: 1, offset }, sequence: Number.NaN, carry: new Float64Array(2), lastClass: 2 });

describe('BoundedQueue.hold', () => {
  it('admits nothing while held, resolves once the events in flight have left, and admits again after unhold', async () => {
    const queue = new BoundedQueue(10);
    queue.admit(3);
    let drained = false;
    const hold = queue.hold().then(() => (drained = true));
    expect(queue.hasRoom()).toBe(false);
    queue.release(2);
    await Promise.resolve();
    expect(drained).toBe(false);
    // Below resumeAt, but still held: sources keep waiting.
    expect(queue.hasRoom()).toBe(false);
    let ready = false;
    void queue.whenReady().then(() => (ready = true));
    queue.release(1);
    await hold;
    expect(queue.size).toBe(0);
    await Promise.resolve();
    expect(ready).toBe(false);
    queue.unhold();
    await Promise.resolve();
    expect(ready).toBe(true);
    expect(queue.hasRoom()).toBe(true);
  });
});

describe('KeyStateStore.serve', () => {
  it('reset: every key goes; keep: keys stay, and records of the earlier model are still read', () => {
    const a = ball(1);
    const b = ball(2);
    const store = new KeyStateStore(a, { carrySize: 2 });
    store.set(snapshot('k1', a, 10));
    store.set(snapshot('k2', a, 11));
    const written = store.snapshot();
    expect(store.serve(b, 'keep')).toBe(0);
    expect(store.size).toBe(2);
    expect(store.model).toBe(b);
    // A restore after the swap reads the old model's records as the new model's...
    const fresh = new KeyStateStore(a, { carrySize: 2 });
    fresh.serve(b, 'keep');
    expect(fresh.restore(written).sort()).toEqual(['k1', 'k2']);
    // ...and writes them under the new model's hash, which a store of the old model refuses.
    expect(() => new KeyStateStore(a, { carrySize: 2 }).restore(fresh.snapshot())).toThrow(/refusing foreign state/);
    expect(store.serve(a, 'reset')).toBe(2);
    expect(store.size).toBe(0);
    // After a reset the previous model's records are foreign again.
    expect(() => store.restore(new KeyStateStore(b, { carrySize: 2 }).snapshot())).toThrow(/refusing foreign state/);
  });

  it('refuses a model whose state is laid out differently', () => {
    const store = new KeyStateStore(ball(1), { carrySize: 2 });
    expect(() => store.serve(ball(2, { layers: [{ cell: 'gru', hiddenSize: 8 }] }), 'reset')).toThrow(/lays out its state differently/);
  });
});

describe('checkCandidate', () => {
  const createBackend = (m: RnnModel): Promise<StepBackend> => referenceProvider.create(m, {});
  it('passes a retrained model of the same architecture, and refuses what the pipeline or the served model cannot take', async () => {
    const pipeline = await loadPipeline('ball-direction');
    const served = ball(1);
    const check = (candidate: RnnModel, policy: 'reset' | 'keep' = 'reset') => checkCandidate({ pipeline, served, candidate, policy, createBackend });
    const ok = await check(ball(2), 'keep');
    expect(ok.ok).toBe(true);
    if (ok.ok) ok.backend.dispose();
    expect(await check(ball(2, { features: ['x', 'z'] }))).toEqual({ ok: false, reason: expect.stringMatching(/expects features \[x, z\]/) });
    expect(await check(ball(2, { head: { kind: 'softmax', labels: ['N', 'S'] } }))).toEqual({ ok: false, reason: expect.stringMatching(/its outputs/) });
    expect(await check(ball(2, { layers: [{ cell: 'lstm', hiddenSize: 16 }] }))).toEqual({ ok: false, reason: expect.stringMatching(/laid out differently.*needs a restart/) });
  });

  it('refuses a model whose steps on the backend disagree with the float64 reference', async () => {
    const pipeline = await loadPipeline('ball-direction');
    // A backend that returns zeros: what a broken kernel or a corrupted weight upload would give.
    const zeros: StepBackend = { name: 'cpu', detail: 'zeros', step: () => undefined, dispose: () => undefined };
    const verdict = await checkCandidate({ pipeline, served: ball(1), candidate: ball(2), policy: 'reset', createBackend: async () => zeros });
    expect(verdict).toEqual({ ok: false, reason: expect.stringMatching(/differ from the float64 reference by [0-9.]+ \(tolerance 0\.0001\)/) });
  });
});

describe('ModelSwapper', () => {
  async function setup() {
    const pipeline = await loadPipeline('ball-direction');
    const served = ball(1);
    const dir = mkdtempSync(join(tmpdir(), 'rnnstream-swap-'));
    const store = new KeyStateStore(served, { carrySize: 2 });
    store.set(snapshot('k1', served, 5));
    const queue = new BoundedQueue(100);
    const serving = new ServingModel(pipeline, served);
    const backend = new SwappableBackend(await referenceProvider.create(served, {}));
    const metrics = new ServiceMetrics();
    const events: string[] = [];
    const parts: ConstructorParameters<typeof ModelSwapper>[0] = {
      pipeline,
      serving,
      backend,
      store,
      queue,
      flush: async () => void events.push(`flush with ${queue.size} in flight`),
      positions: () => new Map([[1, 6]]),
      createBackend: (m) => referenceProvider.create(m, {}),
      policy: 'reset',
      logger: silentLogger,
      metrics,
    };
    const swapper = new ModelSwapper(parts);
    const write = (name: string, model: unknown): string => {
      const path = join(dir, name);
      writeFileSync(path, typeof model === 'string' ? model : JSON.stringify(model));
      return path;
    };
    return { pipeline, served, store, queue, serving, backend, metrics, events, swapper, parts, write };
  }
  const counter = async (metrics: ServiceMetrics, name: string): Promise<number> => (await metrics.registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;

  it('swaps a checked model in once the events in flight have left, and records where each partition switched', async () => {
    const { store, queue, serving, backend, metrics, events, swapper, write } = await setup();
    const next = randomModelFile(ballSpec(2));
    const path = write('next.json', next);
    queue.admit(2);
    const swapping = swapper.offer({ path, from: 'test' });
    await new Promise((r) => setTimeout(r, 20));
    // Held: the two events in flight have not left yet.
    expect(events).toEqual([]);
    expect(queue.hasRoom()).toBe(false);
    queue.release(2);
    const outcome = await swapping;
    expect(events).toEqual(['flush with 0 in flight']);
    expect(outcome).toMatchObject({ kind: 'swapped', to: serving.model.hash, keysReset: 1, offsets: { 1: 6 } });
    expect(store.model.hash).toBe(serving.model.hash);
    expect(store.size).toBe(0);
    // The backend steps with the new model's weights now.
    const stepWith = async (b: StepBackend, m: RnnModel): Promise<Float32Array> => {
      const out = new Float32Array(m.outputSize);
      await b.step(1, Float32Array.of(0.3, -0.2), new Float32Array(m.stateSize), new Float32Array(m.stateSize), out);
      return out;
    };
    expect(await stepWith(backend, serving.model)).toEqual(await stepWith(await referenceProvider.create(serving.model, {}), serving.model));
    expect(await stepWith(backend, serving.model)).not.toEqual(await stepWith(await referenceProvider.create(ball(1), {}), ball(1)));
    expect(queue.hasRoom()).toBe(true);
    expect(await counter(metrics, 'rnnstream_model_swaps_total')).toBe(1);
    // The same model again changes nothing.
    expect(await swapper.offer({ path, from: 'test' })).toEqual({ kind: 'unchanged' });
  });

  it('never rejects: a swap whose flush fails resolves as failed, and events flow again', async () => {
    const { queue, serving, served, parts, write } = await setup();
    const failing = new ModelSwapper({ ...parts, flush: async () => Promise.reject(new Error('produce abandoned')) });
    const outcome = await failing.offer({ path: write('next.json', randomModelFile(ballSpec(5))), from: 'test' });
    expect(outcome).toEqual({ kind: 'failed', reason: 'produce abandoned' });
    expect(serving.model).toBe(served);
    expect(queue.hasRoom()).toBe(true);
  });

  it('refuses a bad file, a wrong sha256 and a model that does not fit, and the served model goes on', async () => {
    const { served, serving, metrics, swapper, write } = await setup();
    const good = write('good.json', randomModelFile(ballSpec(3)));
    const outcomes = [
      await swapper.offer({ path: write('broken.json', '{"format":'), from: 'test' }),
      await swapper.offer({ path: good, sha256: createHash('sha256').update('something else').digest('hex'), from: 'test' }),
      await swapper.offer({ path: write('wrong.json', randomModelFile(ballSpec(4, { features: ['speed', 'y'] }))), from: 'test' }),
      await swapper.offer({ path: join('/nonexistent', 'model.json'), from: 'test' }),
    ];
    expect(outcomes.map((o) => o.kind)).toEqual(['refused', 'refused', 'refused', 'refused']);
    expect(outcomes.map((o) => (o.kind === 'refused' ? o.reason : ''))).toEqual([
      expect.stringMatching(/not valid JSON/),
      expect.stringMatching(/its sha256 is [0-9a-f]{64}, expected/),
      expect.stringMatching(/expects features \[speed, y\]/),
      expect.stringMatching(/cannot read the file/),
    ]);
    expect(serving.model).toBe(served);
    expect(await counter(metrics, 'rnnstream_model_refusals_total')).toBe(4);
    // With the right sha256 the good one is taken.
    const sha256 = createHash('sha256').update(JSON.stringify(randomModelFile(ballSpec(3)))).digest('hex');
    expect((await swapper.offer({ path: good, sha256, from: 'test' })).kind).toBe('swapped');
  });
});

describe('the watched model file', () => {
  it('offers the file when it is rewritten or renamed over, and not before', async () => {
    const { startModelSources } = await import('../src/service/model-sources.js');
    const dir = mkdtempSync(join(tmpdir(), 'rnnstream-watch-'));
    const path = join(dir, 'model.json');
    writeFileSync(path, JSON.stringify(randomModelFile(ballSpec(1))));
    const offers: string[] = [];
    const swapper = { offer: async (o: { path: string; from: string }) => void offers.push(`${o.path} (${o.from})`) } as unknown as ModelSwapper;
    const stop = await startModelSources({ swapper, modelFile: path, watch: true, modelsTopic: undefined, shadow: undefined, kafka: undefined as never, admin: undefined as never, group: 'g', pipeline: 'ball-direction', logger: silentLogger, metrics: new ServiceMetrics() });
    try {
      await new Promise((r) => setTimeout(r, 1200));
      expect(offers).toEqual([]);
      // A new model written beside it and renamed over it, as a deployment would.
      writeFileSync(`${path}.tmp`, JSON.stringify(randomModelFile(ballSpec(2))));
      const { renameSync } = await import('node:fs');
      renameSync(`${path}.tmp`, path);
      const until = Date.now() + 5000;
      while (offers.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect(offers).toEqual([`${path} (the watched --model file)`]);
    } finally {
      await stop();
    }
  });
});
