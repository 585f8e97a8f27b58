/**
 * Peer C of `npm run bench:peers`: the Node loop a user writes first. kafkajs `eachMessage`,
 * onnxruntime-node running the exported ball model (`rnnstream export`) for one key per call,
 * each key's state in a Map, and each prediction sent and acknowledged before its message counts
 * as processed: at least once (kafkajs commits the offsets of messages whose eachMessage has
 * resolved). The partitions are consumed side by side.
 *
 *   node dist/bench/peers/node-loop.js --brokers h:p --input t --output t --group g --model ball.onnx
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { Kafka, logLevel, Partitioners } from 'kafkajs';

const require = createRequire(import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const ort = require('onnxruntime-node') as any;
const { onnx } = require('onnx-proto') as typeof import('onnx-proto');

const { values: o } = parseArgs({
  options: { brokers: { type: 'string' }, input: { type: 'string' }, output: { type: 'string' }, group: { type: 'string' }, model: { type: 'string' }, partitions: { type: 'string', default: '4' } },
});
for (const name of ['brokers', 'input', 'output', 'group', 'model'] as const) if (!o[name]) throw new Error(`--${name} is required`);

interface StateInput {
  readonly input: string;
  readonly output: string;
  readonly size: number;
}

const bytes = readFileSync(o.model!);
// What the graph's state inputs are, from the metadata `rnnstream export` writes.
const meta = new Map(onnx.ModelProto.decode(bytes).metadataProps.map((p) => [p.key, p.value]));
const stateInputs = JSON.parse(meta.get('rnnstream.state')!) as StateInput[];
const labels = JSON.parse(meta.get('rnnstream.outputs')!) as string[];
const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, executionProviders: ['cpu'] });

const kafka = new Kafka({ clientId: 'peer-c', brokers: o.brokers!.split(','), logLevel: logLevel.WARN });
const consumer = kafka.consumer({ groupId: o.group!, maxWaitTimeInMs: 100 });
const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
const states = new Map<string, { seq: number; state: Float32Array[] }>();

await Promise.all([consumer.connect(), producer.connect()]);
await consumer.subscribe({ topic: o.input!, fromBeginning: true });
await consumer.run({
  partitionsConsumedConcurrently: Number(o.partitions),
  eachMessage: async ({ topic, partition, message }) => {
    const key = message.key!.toString();
    const event = JSON.parse(message.value!.toString()) as { x: number; y: number; direction?: string };
    const held = states.get(key) ?? { seq: 0, state: stateInputs.map((s) => new Float32Array(s.size)) };
    const feeds: Record<string, unknown> = { features: new ort.Tensor('float64', Float64Array.from([event.x, event.y]), [1, 2]) };
    stateInputs.forEach((s, i) => (feeds[s.input] = new ort.Tensor('float32', held.state[i], [1, 1, s.size])));
    const out = await session.run(feeds);
    const seq = held.seq + 1;
    states.set(key, { seq, state: stateInputs.map((s) => out[s.output].data as Float32Array) });
    const p = out.probabilities.data as Float32Array;
    let best = 0;
    for (let i = 1; i < p.length; i++) if (p[i]! > p[best]!) best = i;
    const prediction = {
      key,
      seq,
      prediction: labels[best],
      probabilities: Object.fromEntries(labels.map((l, i) => [l, p[i]])),
      ...(event.direction === undefined ? {} : { label: event.direction }),
      source: { topic, partition, offset: message.offset },
    };
    await producer.send({ topic: o.output!, acks: -1, messages: [{ key, value: JSON.stringify(prediction) }] });
  },
});

const stop = async (): Promise<void> => {
  await consumer.disconnect();
  await producer.disconnect();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
