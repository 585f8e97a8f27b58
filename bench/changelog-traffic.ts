/**
 * What the service's changelog costs a device backend between host and device: the ball fixture
 * through the service's pipeline (captureState: each prediction carries its key's state) into
 * the at-least-once Kafka sink on an in-memory producer that acknowledges at once, committing
 * every `--commit-interval` ms. Alternating runs with the keys' state on the device (every row's
 * state kept there, the changelog's rows read back at each commit) and on the host (every row's
 * state read back with each micro-batch). Prints events/s and the backend's counted transfers per
 * micro-batch, per run.
 *
 *   xvfb-run -a node dist/bench/changelog-traffic.js [--backend gpu] [--commit-interval 1000] [--runs 2] [--json]
 */
import type { Consumer } from 'kafkajs';
import { FixtureSource } from '../src/adapters/fixture-source.js';
import type { RecordProducer } from '../src/adapters/kafka/producer/producer-thread.js';
import { atLeastOnce } from '../src/adapters/kafka/sinks/at-least-once.js';
import { KafkaSink } from '../src/adapters/kafka/sinks/kafka-sink.js';
import { resolveBackend } from '../src/backends/registry.js';
import type { BackendName } from '../src/backends/types.js';
import { loadModelFile } from '../src/adapters/model-file.js';
import { silentLogger } from '../src/observability/logger.js';
import { BoundedQueue } from '../src/operators/bounded-queue.js';
import { stateStoreFor } from '../src/pipeline/predict.js';
import { loadPipeline } from '../src/pipeline/registry.js';
import { runPipeline } from '../src/runner/run-pipeline.js';

const args = process.argv.slice(2);
const valueOf = (flag: string): string | undefined => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};
const backendName = (valueOf('--backend') ?? 'gpu') as BackendName;
const commitIntervalMs = Number(valueOf('--commit-interval') ?? 1000);
const runs = Number(valueOf('--runs') ?? 2);

const pipeline = await loadPipeline('ball-direction');
const model = loadModelFile(pipeline.modelFile);
const { backend } = await resolveBackend(backendName, model);

interface RunFigures {
  readonly state: 'device' | 'host';
  readonly events: number;
  readonly eventsPerSecond: number;
  readonly changelogRecords: number;
  readonly microBatches: number;
  /** Counted by a device backend; undefined on a host one. */
  readonly perMicroBatch: { readonly bytesUp: number; readonly bytesDown: number; readonly readBacks: number } | undefined;
}

async function once(stateOnDevice: boolean): Promise<RunFigures> {
  let changelogRecords = 0;
  const producer: RecordProducer = {
    connect: async () => {},
    disconnect: async () => {},
    abort: () => {},
    sendPacked: (packed) => {
      for (const t of packed) if (t.topic === 'changelog') changelogRecords += t.count;
      return Promise.resolve();
    },
  };
  const consumer = { commitOffsets: async () => {} } as unknown as Consumer;
  const store = stateStoreFor(pipeline, model);
  const topics = { outputTopic: 'out', dlqTopic: 'dlq', changelogTopic: 'changelog' };
  const sink = new KafkaSink(atLeastOnce({ producer, consumer, topics, changelog: () => store.changelogBatch(), logger: silentLogger, commitIntervalMs, produceBatchSize: 5000, deadLetters: { partitions: 1 } }));
  const queue = new BoundedQueue(4096 * 4);
  let microBatches = 0;
  let events = 0;
  const before = backend.transfers;
  const started = performance.now();
  await runPipeline({
    source: new FixtureSource(pipeline.defaultFixture, { queue }),
    sink,
    pipeline,
    model,
    store,
    predict: {
      backend,
      queue,
      captureState: true,
      // The device path even on GPU.js's host kernels (webasm, cpu), which check this script without a GPU.
      microBatch: true,
      stateOnDevice,
      maxBatchSize: 4096,
      maxWaitMs: 2,
      onBatch: (n) => {
        microBatches++;
        events += n;
      },
    },
    logger: silentLogger,
  }).done;
  await sink.flush();
  const seconds = (performance.now() - started) / 1000;
  const after = backend.transfers;
  const per = (n: number): number => Math.round(n / microBatches);
  const perMicroBatch = before && after ? { bytesUp: per(after.bytesUp - before.bytesUp), bytesDown: per(after.bytesDown - before.bytesDown), readBacks: per(after.readBacks - before.readBacks) } : undefined;
  return {
    state: stateOnDevice ? 'device' : 'host',
    events,
    eventsPerSecond: Math.round(events / seconds),
    changelogRecords,
    microBatches,
    perMicroBatch,
  };
}

const results: RunFigures[] = [];
for (let r = 0; r < runs; r++) for (const onDevice of [true, false]) results.push(await once(onDevice));
backend.dispose();
if (args.includes('--json')) console.log(JSON.stringify({ backend: backend.name, detail: backend.detail, commitIntervalMs, results }));
else {
  console.log(`${backend.name} (${backend.detail}), ball fixture, changelog every ${commitIntervalMs} ms`);
  console.log('| state | events/s | changelog records | micro-batches | per micro-batch: up | down | read-backs |');
  console.log('|---|---|---|---|---|---|---|');
  const per = (f: RunFigures): string => (f.perMicroBatch ? `${f.perMicroBatch.bytesUp} B | ${f.perMicroBatch.bytesDown} B | ${f.perMicroBatch.readBacks}` : '- | - | -');
  for (const f of results) console.log(`| ${f.state} | ${f.eventsPerSecond} | ${f.changelogRecords} | ${f.microBatches} | ${per(f)} |`);
}
