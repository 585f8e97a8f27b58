/**
 * `npm run bench:kafka`: end-to-end events/s of the Kafka service beside a pass-through that only
 * consumes, parses and validates (JSON + zod) and produces the same number of records, on the
 * same broker, in one run. The broker is KAFKA_BROKERS when set, else one KRaft node of Apache
 * Kafka's own broker from kafka/libs (scripts/kafka.mjs; started here and stopped at the end),
 * and librdkafka's mock cluster (kcat) only where there is no java, with a warning.
 * The volume is large enough that JIT warm-up and the first metadata round trips are not most
 * of a run (with 500 balls a run lasted about one second).
 *
 * Each run measures the pass-through, the service at least once and the service exactly once
 * (one transaction per input partition every 100 ms), in rotating order; then the end-to-end
 * latency of both guarantees at a steady rate the service keeps up with.
 *
 *   node dist/bench/kafka.js [--keys 1000] [--runs 5] [--json] [--only service|exactly-once|pass-through]
 *                            [--latency-rate 2000] [--latency-seconds 10]
 *
 * `--only` runs one side (to profile it: `node --cpu-prof dist/bench/kafka.js --only service`);
 * the ratio is then not printed.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { generateBallEvents } from '../src/fixtures/ball.js';
import { silentLogger } from '../src/observability/logger.js';
import { loadPipeline } from '../src/pipeline/registry.js';
import { COMMIT_INTERVAL_MS, resolveServiceConfig, type Guarantee } from '../src/service/config.js';
import { startService } from '../src/service/run.js';
import { benchBroker as brokers } from './broker.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const json = args.includes('--json');
const keys = opt('--keys', 1000);
const runs = opt('--runs', 5);
const latencyRate = opt('--latency-rate', 2000);
const latencySeconds = opt('--latency-seconds', 10);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
if (only !== undefined && only !== 'service' && only !== 'exactly-once' && only !== 'pass-through') {
  process.stderr.write(`--only: expected "service", "exactly-once" or "pass-through", got ${JSON.stringify(only)}\n`);
  process.exit(2);
}


async function main(): Promise<void> {
  const broker = await brokers();
  try {
    await measure(broker);
  } finally {
    broker.stop();
  }
  process.exit(0);
}

async function measure(broker: { list: string; kind: string }): Promise<void> {
  const kafka = new Kafka({ clientId: 'rnnstream-bench', brokers: broker.list.split(','), logLevel: logLevel.NOTHING });
  const pipeline = await loadPipeline('ball-direction');
  const events = generateBallEvents({ keys, seed: 4242 }).map((e) => ({ key: e.ballId, value: JSON.stringify(e) }));
  const producer = kafka.producer({ allowAutoTopicCreation: true, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const load = async (topic: string): Promise<void> => {
    for (let i = 0; i < events.length; i += 2000) await producer.send({ topic, messages: events.slice(i, i + 2000), acks: -1 });
  };

  /** consume -> JSON.parse + zod -> produce the same number of records, acks all, commit. */
  const passThrough = async (): Promise<number> => {
    const id = randomUUID().slice(0, 8);
    await load(`pass-${id}.input`);
    const consumer = kafka.consumer({ groupId: `pass-${id}` });
    const out = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await Promise.all([consumer.connect(), out.connect()]);
    await consumer.subscribe({ topic: `pass-${id}.input`, fromBeginning: true });
    let done = 0;
    let started = 0;
    const seconds = await new Promise<number>((resolve, reject) => {
      consumer
        .run({
          autoCommit: false,
          // One batch per partition at a time, the partitions side by side: what a careful
          // hand-written consumer->producer does (one at a time left the broker idle between acks).
          partitionsConsumedConcurrently: 4,
          eachBatch: async ({ batch, resolveOffset }) => {
            started ||= performance.now();
            const messages = [];
            for (const m of batch.messages) {
              const parsed = pipeline.schema.safeParse(JSON.parse(m.value!.toString()));
              messages.push({ key: m.key, value: parsed.success ? m.value : Buffer.from('invalid') });
            }
            await out.send({ topic: `pass-${id}.out`, messages, acks: -1 });
            const last = batch.messages.at(-1)!;
            await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() }]);
            resolveOffset(last.offset);
            done += batch.messages.length;
            if (done >= events.length) resolve((performance.now() - started) / 1000);
          },
        })
        .catch(reject);
    });
    await consumer.disconnect();
    await out.disconnect();
    return events.length / seconds;
  };

  const freshTopics = (label: string) => {
    const id = `${label}-${randomUUID().slice(0, 8)}`;
    return { inputTopic: `${id}.input`, outputTopic: `${id}.out`, dlqTopic: `${id}.dlq`, changelogTopic: `${id}.changelog`, group: id };
  };
  const startFor = (topics: ReturnType<typeof freshTopics>, guarantee: Guarantee) =>
    startService(
      resolveServiceConfig({ env: {}, flags: { ...topics, pipeline: 'ball-direction', brokers: broker.list.split(','), http: { port: 0 }, backend: 'onnx', guarantee, commitIntervalMs: COMMIT_INTERVAL_MS[guarantee] } }),
      silentLogger,
    );

  /** rnnstream run (in process): predictions, changelog and commits, all durable (exactly once: committed). */
  const service = async (guarantee: Guarantee): Promise<number> => {
    const topics = freshTopics(guarantee === 'exactly-once' ? 'eos' : 'svc');
    await load(topics.inputTopic);
    const svc = await startFor(topics, guarantee);
    const value = async (c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> => (await c.get()).values[0]?.value ?? 0;
    let started = 0;
    let lastReport = performance.now();
    for (;;) {
      const inCount = await value(svc.metrics.eventsIn);
      if (inCount > 0 && !started) started = performance.now();
      const out = await value(svc.metrics.predictionsOut);
      if (out >= events.length) break;
      if (process.env.RNNSTREAM_BENCH_TRACE && performance.now() - lastReport > 5000) {
        lastReport = performance.now();
        process.stderr.write(`    ${guarantee}: in ${inCount}, out ${out}\n${await svc.metrics.registry.getSingleMetricAsString('rnnstream_transactions_open')}\n`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const seconds = (performance.now() - started) / 1000;
    if (guarantee === 'exactly-once' && !json) {
      const h = await svc.metrics.transactionSeconds.get();
      const sum = h.values.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;
      const count = h.values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
      process.stderr.write(`    exactly once: ${count} transactions, ${((sum / Math.max(1, count)) * 1000).toFixed(0)} ms each on average (first record sent to commit)\n`);
    }
    await svc.stop();
    return events.length / seconds;
  };

  /**
   * End-to-end latency at a steady rate the service keeps up with (so it is not queueing): each
   * input is stamped when produced, and its prediction when a read_committed reader receives it.
   */
  const latency = async (guarantee: Guarantee): Promise<{ p50: number; p99: number }> => {
    const topics = freshTopics(guarantee === 'exactly-once' ? 'lat-eos' : 'lat-svc');
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: topics.inputTopic, numPartitions: 4 }], waitForLeaders: true });
    await admin.disconnect();
    const svc = await startFor(topics, guarantee);
    const reader = kafka.consumer({ groupId: `reader-${topics.group}`, maxWaitTimeInMs: 10 });
    await reader.connect();
    const arrived = new Map<string, number>();
    const sample = events.slice(0, latencyRate * latencySeconds);
    let readerReady!: () => void;
    const ready = new Promise<void>((r) => (readerReady = r));
    reader.on(reader.events.GROUP_JOIN, () => readerReady());
    await reader.subscribe({ topic: topics.outputTopic, fromBeginning: true });
    await reader.run({
      eachMessage: async ({ message }) => {
        const p = JSON.parse(message.value!.toString()) as { source: { partition: number; offset: string } };
        arrived.set(`${p.source.partition}@${p.source.offset}`, Date.now());
      },
    });
    await ready;
    const sent = new Map<string, number>();
    const tickMs = 10;
    const perTick = (latencyRate * tickMs) / 1000;
    for (let i = 0; i < sample.length; i += perTick) {
      const at = Date.now();
      await producer.send({ topic: topics.inputTopic, messages: sample.slice(i, i + perTick).map((m) => ({ ...m, timestamp: String(at) })), acks: 1 });
      const wait = at + tickMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    const input = kafka.consumer({ groupId: `input-${topics.group}` });
    await input.connect();
    await input.subscribe({ topic: topics.inputTopic, fromBeginning: true });
    await input.run({ eachMessage: async ({ partition, message }) => void sent.set(`${partition}@${message.offset}`, Number(message.timestamp)) });
    for (const end = Date.now() + 60_000; Date.now() < end && (arrived.size < sample.length || sent.size < sample.length); ) await new Promise((r) => setTimeout(r, 50));
    await Promise.all([reader.disconnect(), input.disconnect()]);
    await svc.stop();
    const ms = [...sent].filter(([id]) => arrived.has(id)).map(([id, t]) => arrived.get(id)! - t).sort((a, b) => a - b);
    if (ms.length < sample.length) throw new Error(`latency (${guarantee}): ${ms.length} of ${sample.length} predictions arrived`);
    return { p50: ms[Math.floor(ms.length * 0.5)]!, p99: ms[Math.floor(ms.length * 0.99)]! };
  };

  const pass: number[] = [];
  const svc: number[] = [];
  const eos: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (only === 'service') svc.push(await service('at-least-once'));
    else if (only === 'exactly-once') eos.push(await service('exactly-once'));
    else if (only === 'pass-through') pass.push(await passThrough());
    // Rotate which goes first, so none always runs on a warmer broker.
    else {
      const order = [() => passThrough().then((v) => pass.push(v)), () => service('at-least-once').then((v) => svc.push(v)), () => service('exactly-once').then((v) => eos.push(v))];
      for (let k = 0; k < order.length; k++) await order[(i + k) % order.length]!();
    }
    if (!json) {
      const parts = [
        pass.length > i ? `pass-through ${Math.round(pass.at(-1)!)} events/s` : '',
        svc.length > i ? `at least once ${Math.round(svc.at(-1)!)} events/s` : '',
        eos.length > i ? `exactly once ${Math.round(eos.at(-1)!)} events/s` : '',
      ];
      process.stderr.write(`  run ${i + 1}: ${parts.filter(Boolean).join(', ')}\n`);
    }
  }
  const latencies = only ? undefined : { atLeastOnce: await latency('at-least-once'), exactlyOnce: await latency('exactly-once') };
  await producer.disconnect();
  const result = {
    broker: broker.kind,
    events: events.length,
    keys,
    runs,
    passThrough: median(pass),
    service: median(svc),
    exactlyOnce: median(eos),
    ratio: median(svc) / median(pass),
    exactlyOnceRatio: median(eos) / median(svc),
    latencyRate,
    latencies,
    passRuns: pass,
    serviceRuns: svc,
    exactlyOnceRuns: eos,
  };
  if (json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  process.stdout.write(
    [
      `Kafka end to end, ${events.length} ball events (${keys} keys), ${broker.kind}, median of ${runs} runs:`,
      '',
      '| path | events/s (median) | runs |',
      '|---|---|---|',
      `| pass-through (consume, JSON + zod, produce, commit) | ${Math.round(result.passThrough)} | ${pass.map(Math.round).join(', ')} |`,
      `| rnnstream run, at least once (predictions, then changelog, then commit; 1 s interval) | ${Math.round(result.service)} | ${svc.map(Math.round).join(', ')} |`,
      `| rnnstream run, exactly once (a transaction per partition every 100 ms) | ${Math.round(result.exactlyOnce)} | ${eos.map(Math.round).join(', ')} |`,
      '',
      only ? `ratios: not measured (--only ${only})` : `at least once / pass-through: ${result.ratio.toFixed(2)}x; exactly once / at least once: ${result.exactlyOnceRatio.toFixed(2)}x`,
      ...(latencies
        ? [
            '',
            `End-to-end latency at ${latencyRate} events/s for ${latencySeconds} s (produced -> prediction received by a read_committed reader):`,
            '',
            '| guarantee | p50 | p99 |',
            '|---|---|---|',
            `| at least once | ${latencies.atLeastOnce.p50} ms | ${latencies.atLeastOnce.p99} ms |`,
            `| exactly once | ${latencies.exactlyOnce.p50} ms | ${latencies.exactlyOnce.p99} ms |`,
            `| added by exactly once | ${latencies.exactlyOnce.p50 - latencies.atLeastOnce.p50} ms | ${latencies.exactlyOnce.p99 - latencies.atLeastOnce.p99} ms |`,
          ]
        : []),
    ].join('\n') + '\n',
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:kafka failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
