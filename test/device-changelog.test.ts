/**
 * The changelog with keys' state on the device: each micro-batch's every-row states stay there,
 * and the Kafka sink reads only the rows it writes, at its commit points, in one read-back each
 * (deferred-captures.ts). Its changelog records are byte for byte those written with the state
 * on the host (the same kernels, state going up and down each micro-batch), through the real
 * at-least-once sink with an in-memory producer; no kept block outlives the captures that need it.
 * Run on GPU.js's cpu kernels everywhere and on headless-gl where a display is present (CI).
 */
import { asyncScheduler, from, lastValueFrom, toArray, type SchedulerLike } from 'rxjs';
import type { Consumer } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { unpackMessages } from '../src/adapters/kafka/producer/record-packer.js';
import type { RecordProducer } from '../src/adapters/kafka/producer/producer-thread.js';
import { atLeastOnce } from '../src/adapters/kafka/sinks/at-least-once.js';
import { KafkaSink } from '../src/adapters/kafka/sinks/kafka-sink.js';
import { cpuProvider, gpuProvider } from '../src/backends/gpujs.js';
import type { BackendProvider, StepBackend } from '../src/backends/types.js';
import { createRng } from '../src/core/prng.js';
import { randomModel } from '../src/core/random-model.js';
import { silentLogger } from '../src/observability/logger.js';
import { rnnByKey, type KeyedStep } from '../src/operators/rnn-by-key.js';
import type { PredictionRecord } from '../src/pipeline/predict.js';
import { DeferredCapture } from '../src/state/deferred-captures.js';
import { KeyStateStore } from '../src/state/key-state-store.js';

const model = randomModel({
  features: ['v'],
  layers: [
    { cell: 'lstm', hiddenSize: 5 },
    { cell: 'gru', hiddenSize: 4 },
  ],
  head: { kind: 'softmax', labels: ['a', 'b'] },
  seed: 9,
});

interface Ev {
  readonly k: string;
  readonly v: number;
  readonly partition: number;
  readonly offset: number;
  readonly last: boolean;
}

/** 50 keys over 2 partitions, events interleaved at random; a fifth of the keys end at their last event. */
function events(count: number): Ev[] {
  const rng = createRng(11);
  const offsets = [0, 0];
  const out: Ev[] = [];
  for (let i = 0; i < count; i++) {
    const n = Math.floor(rng.next() ** 1.5 * 50);
    const partition = n % 2;
    out.push({ k: `k${n}`, v: rng.normal(), partition, offset: offsets[partition]!++, last: false });
  }
  for (let n = 0; n < 50; n += 5) {
    const at = out.map((e) => e.k).lastIndexOf(`k${n}`);
    if (at >= 0) out[at] = { ...out[at]!, last: true };
  }
  return out;
}

const stillClock: SchedulerLike = { now: () => 0, schedule: asyncScheduler.schedule.bind(asyncScheduler) as SchedulerLike['schedule'] };

function step(backend: StepBackend, input: readonly Ev[], stateOnDevice: boolean): Promise<KeyedStep<Ev>[]> {
  const store = new KeyStateStore(model);
  return lastValueFrom(
    from(input).pipe(
      rnnByKey<Ev, Ev>({
        backend,
        store,
        keyOf: (e) => e.k,
        eventOf: (e) => e,
        positionOf: (e) => ({ partition: e.partition, offset: e.offset }),
        features: (e, _prev, out) => {
          out[0] = e.v;
        },
        ends: (e) => e.last,
        captureState: true,
        maxBatchSize: 128,
        maxWaitMs: 5,
        scheduler: stillClock,
        microBatch: true,
        stateOnDevice,
      }),
      toArray(),
    ),
  );
}

/** An at-least-once sink whose producer acknowledges at once; what it wrote to the changelog, in order. */
function sinkWithChangelog(): { sink: KafkaSink; changelog: string[]; batches: { count: number } } {
  const changelog: string[] = [];
  const batches = { count: 0 };
  const producer: RecordProducer = {
    connect: async () => {},
    disconnect: async () => {},
    abort: () => {},
    sendPacked: (packed) => {
      for (const t of packed) {
        if (t.topic !== 'changelog') continue;
        batches.count++;
        for (const m of unpackMessages(t)) changelog.push(`${String(m.key)}@${m.partition}=${m.value ? Buffer.from(m.value as Buffer).toString('base64') : 'tombstone'}`);
      }
      return Promise.resolve();
    },
  };
  const consumer = { commitOffsets: async () => {} } as unknown as Consumer;
  const store = new KeyStateStore(model);
  const topics = { outputTopic: 'out', dlqTopic: 'dlq', changelogTopic: 'changelog' };
  const sink = new KafkaSink(atLeastOnce({ producer, consumer, topics, changelog: () => store.changelogBatch(), logger: silentLogger, commitIntervalMs: 0, produceBatchSize: 100, deadLetters: { partitions: 1 } }));
  return { sink, changelog, batches };
}

function prediction(r: Extract<KeyedStep<Ev>, { kind: 'step' }>): PredictionRecord {
  return {
    kind: 'prediction',
    key: r.key,
    seq: r.seq,
    prediction: r.output[0]! > r.output[1]! ? 'a' : 'b',
    head: 'softmax',
    names: ['a', 'b'],
    output: r.output,
    state: r.captured,
    ended: r.ended,
    source: { kind: 'kafka', topic: 'in', partition: r.item.partition, offset: String(r.item.offset) },
  };
}

/** The results through the sink, flushed every `every` outputs: each flush writes the latest state of each key it saw. */
async function changelogOf(results: KeyedStep<Ev>[], every: number): Promise<{ records: string[]; batches: number }> {
  const { sink, changelog, batches } = sinkWithChangelog();
  for (let i = 0; i < results.length; i += every) {
    for (const r of results.slice(i, i + every)) if (r.kind === 'step') sink.write(prediction(r));
    await sink.flush();
  }
  return { records: changelog, batches: batches.count };
}

async function expectSameChangelog(provider: BackendProvider): Promise<void> {
  const backend = await provider.create(model, {});
  try {
    const input = events(3000);
    const t0 = backend.transfers;
    const { records: host } = await changelogOf(await step(backend, input, false), 400);
    const t1 = backend.transfers;
    const deviceResults = await step(backend, input, true);
    const { records: device, batches } = await changelogOf(deviceResults, 400);
    const t2 = backend.transfers;
    expect(host.length).toBeGreaterThan(100);
    expect(host.some((r) => r.endsWith('=tombstone'))).toBe(true);
    expect(device).toEqual(host);
    const ledger = deviceResults.map((r) => (r.kind === 'step' ? r.captured : undefined)).find((c) => c instanceof DeferredCapture)!.ledger;
    const stats = ledger.stats;
    // Every kept block was freed once its captures were written or replaced; none was read back whole.
    expect(stats.liveBytes).toBe(0);
    expect(stats.spilledBlocks).toBe(0);
    // One read-back per changelog batch the sink wrote, for only the rows it wrote.
    expect(stats.reads).toBeGreaterThan(0);
    expect(stats.reads).toBeLessThanOrEqual(batches);
    expect(stats.rowsRead).toBe(host.filter((r) => !r.endsWith('=tombstone')).length);
    if (t0 && t1 && t2) {
      const down = { host: t1.bytesDown - t0.bytesDown, device: t2.bytesDown - t1.bytesDown };
      process.stderr.write(`${provider.name}: changelog of 3000 events, bytes down with state on the host ${down.host}, on the device ${down.device}\n`);
      expect(down.device).toBeLessThan(down.host / 2);
    }
  } finally {
    backend.dispose();
  }
}

describe('the changelog with keys’ state on the device', () => {
  it('writes the same bytes as with the state on the host, reading back only the rows it writes (gpu.js cpu kernels)', async () => {
    await expectSameChangelog(cpuProvider);
  });

  it.runIf(process.env.DISPLAY !== undefined)('writes the same bytes as with the state on the host on WebGL (headless-gl), with a fraction of the bytes read back', async () => {
    await expectSameChangelog(gpuProvider);
  }, 120_000);
});
