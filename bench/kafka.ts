/**
 * `npm run bench:kafka`: end-to-end events/s of the Kafka service beside a pass-through that only
 * consumes, parses and validates (JSON + zod) and produces the same number of records, on the
 * same broker, in one run. The broker is KAFKA_BROKERS when set, else one KRaft node of Apache
 * Kafka's own broker from kafka/libs (scripts/kafka.mjs; started here and stopped at the end),
 * and librdkafka's mock cluster (kcat) only where there is no java, with a warning.
 * The volume is large enough that JIT warm-up and the first metadata round trips are not most
 * of a run (with 500 balls a run lasted about one second).
 *
 *   node dist/bench/kafka.js [--keys 1000] [--runs 5] [--json] [--only service|pass-through]
 *
 * `--only` runs one side (to profile it: `node --cpu-prof dist/bench/kafka.js --only service`);
 * the ratio is then not printed.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { generateBallEvents } from '../src/fixtures/ball.js';
import { projectPath } from '../src/paths.js';
import { silentLogger } from '../src/observability/logger.js';
import { loadPipeline } from '../src/pipeline/registry.js';
import { resolveServiceConfig } from '../src/service/config.js';
import { startService } from '../src/service/run.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const json = args.includes('--json');
const keys = opt('--keys', 1000);
const runs = opt('--runs', 5);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
if (only !== undefined && only !== 'service' && only !== 'pass-through') {
  process.stderr.write(`--only: expected "service" or "pass-through", got ${JSON.stringify(only)}\n`);
  process.exit(2);
}

const median = (xs: number[]): number => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

type KafkaBroker = typeof import('../scripts/kafka-broker.mjs');

/** KAFKA_BROKERS when set; else one KRaft node of the jar broker; the kcat mock only without java. */
async function brokers(): Promise<{ list: string; kind: string; stop: () => void }> {
  if (process.env.KAFKA_BROKERS) return { list: process.env.KAFKA_BROKERS, kind: 'KAFKA_BROKERS', stop: () => {} };
  const { javaAvailable, startJarCluster, startMockCluster } = (await import(projectPath('scripts', 'kafka-broker.mjs'))) as KafkaBroker;
  if (javaAvailable()) {
    const cluster = await startJarCluster({ nodes: 1 });
    const list = cluster.values.KAFKA_BROKERS;
    if (!list) throw new Error('scripts/kafka.mjs printed no KAFKA_BROKERS line');
    return { list, kind: `Apache Kafka ${cluster.values.KAFKA_VERSION} (jar broker, 1 node)`, stop: () => cluster.stop() };
  }
  process.stderr.write('bench:kafka: no java, so on librdkafka\'s mock cluster (kcat), which is not a real broker; install Java 17 and run `mvn -f kafka/pom.xml dependency:copy-dependencies`\n');
  const mock = await startMockCluster();
  return { list: mock.brokers, kind: 'librdkafka mock cluster (kcat, 3 brokers)', stop: () => mock.stop() };
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

  /** rnnstream run (in process): predictions, changelog and commits, all acknowledged. */
  const service = async (): Promise<number> => {
    const id = randomUUID().slice(0, 8);
    const topics = { inputTopic: `svc-${id}.input`, outputTopic: `svc-${id}.out`, dlqTopic: `svc-${id}.dlq`, changelogTopic: `svc-${id}.changelog`, group: `svc-${id}` };
    await load(topics.inputTopic);
    const svc = await startService(
      resolveServiceConfig({ env: {}, flags: { ...topics, pipeline: 'ball-direction', brokers: broker.list.split(','), http: { port: 0 }, backend: 'onnx' } }),
      silentLogger,
    );
    const value = async (c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> => (await c.get()).values[0]?.value ?? 0;
    let started = 0;
    for (;;) {
      const inCount = await value(svc.metrics.eventsIn);
      if (inCount > 0 && !started) started = performance.now();
      if ((await value(svc.metrics.predictionsOut)) >= events.length) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const seconds = (performance.now() - started) / 1000;
    await svc.stop();
    return events.length / seconds;
  };

  const pass: number[] = [];
  const svc: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (only === 'service') svc.push(await service());
    else if (only === 'pass-through') pass.push(await passThrough());
    // Alternate which goes first, so neither always runs on a warmer broker.
    else if (i % 2 === 0) {
      pass.push(await passThrough());
      svc.push(await service());
    } else {
      svc.push(await service());
      pass.push(await passThrough());
    }
    if (!json) {
      const parts = [pass.length > i ? `pass-through ${Math.round(pass.at(-1)!)} events/s` : '', svc.length > i ? `service ${Math.round(svc.at(-1)!)} events/s` : ''];
      process.stderr.write(`  run ${i + 1}: ${parts.filter(Boolean).join(', ')}\n`);
    }
  }
  await producer.disconnect();
  const result = { broker: broker.kind, events: events.length, keys, runs, passThrough: median(pass), service: median(svc), ratio: median(svc) / median(pass), passRuns: pass, serviceRuns: svc };
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
      `| rnnstream run (predictions + changelog + commit) | ${Math.round(result.service)} | ${svc.map(Math.round).join(', ')} |`,
      '',
      only ? `service / pass-through: not measured (--only ${only})` : `service / pass-through: ${result.ratio.toFixed(2)}x`,
    ].join('\n') + '\n',
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:kafka failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
