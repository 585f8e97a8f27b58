/**
 * `npm run bench:peers`: rnnstream beside what users would build instead, on the same broker and
 * the same input (bench/peers/README.md):
 * - Kafka Streams with ONNX Runtime for Java, per record (peer A, RocksDB and in-memory stores)
 *   and batching across keys (peer B), at least once and exactly once;
 * - the plain Node loop (peer C: kafkajs eachMessage + onnxruntime-node).
 *
 * Each contender runs alone, in rotating order, `--runs` times (medians): a saturated run over the
 * input topic (4 partitions, the ball fixture repeated to `--events`), then a run at a fixed
 * `--rate` for end-to-end latency. Every contender's predictions are compared with rnnstream
 * replay's (largest probability difference, must be <= 1e-4). `--sweep` adds the exactly-once
 * commit interval sweep (100, 250, 1000 ms); `--cluster3` a row on a 3-node cluster.
 *
 *   node dist/bench/peers/harness.js [--runs 5] [--events 500000] [--rate 2000] [--latency-seconds 20]
 *        [--only id,id] [--sweep] [--cluster3] [--limit-seconds 150] [--out results.json]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';
import { Kafka, logLevel, Partitioners, type Admin, type Producer } from 'kafkajs';
import { projectPath } from '../../src/paths.js';
import { replay } from '../../src/replay/replay.js';
import { CONTENDERS, type Contender, type RunTopics } from './contenders.js';
import { agreement, createTopic, latencyRun, readAll, throughputRun, type Expected, type LatencyRun, type ThroughputRun } from './measure.js';
import { printReport, type ContenderResult, type SweepRow } from './report.js';
import { median } from '../stats.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    events: { type: 'string', default: '500000' },
    rate: { type: 'string', default: '2000' },
    'latency-seconds': { type: 'string', default: '20' },
    'limit-seconds': { type: 'string', default: '150' },
    only: { type: 'string' },
    sweep: { type: 'boolean', default: false },
    cluster3: { type: 'boolean', default: false },
    'skip-latency': { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const runs = Number(args.runs);
const minEvents = Number(args.events);
const LABELS = ['E', 'NE', 'N', 'NW', 'W', 'SW', 'S', 'SE'];
const TOLERANCE = 1e-4;

type KafkaBroker = typeof import('../../scripts/kafka-broker.mjs');

async function startCluster(nodes: number): Promise<{ brokers: string; kind: string; stop: () => void }> {
  if (process.env.KAFKA_BROKERS && nodes === 1) return { brokers: process.env.KAFKA_BROKERS, kind: 'KAFKA_BROKERS', stop: () => {} };
  const { startJarCluster } = (await import(projectPath('scripts', 'kafka-broker.mjs'))) as KafkaBroker;
  const cluster = await startJarCluster({ nodes });
  return { brokers: cluster.values.KAFKA_BROKERS!, kind: `Apache Kafka ${cluster.values.KAFKA_VERSION} (jar broker, ${nodes} node${nodes > 1 ? 's' : ''})`, stop: () => cluster.stop() };
}

/** The Java peers and the exported model, built once. */
function prepare(): string {
  if (!existsSync(projectPath('bench', 'peers', 'kstreams', 'target', 'classes', 'dev', 'rnnstream', 'peers', 'BallPeer.class'))) {
    process.stderr.write('building the Kafka Streams peers (mvn)\n');
    execFileSync('mvn', ['-q', '-B', '-f', projectPath('bench', 'peers', 'kstreams', 'pom.xml'), 'package', 'dependency:copy-dependencies'], { stdio: 'inherit' });
  }
  const model = join(tmpdir(), 'rnnstream-peers-ball.onnx');
  execFileSync(process.execPath, [projectPath('dist', 'src', 'cli', 'main.js'), 'export', projectPath('pipelines', 'ball-direction', 'model.json'), '--out', model], { stdio: 'inherit' });
  return model;
}

/** The ball fixture repeated (keys suffixed per copy) to at least `minEvents` lines. */
function inputLines(): string[] {
  const base = gunzipSync(readFileSync(projectPath('fixtures', 'ball.jsonl.gz'))).toString('utf8').trim().split('\n');
  const lines: string[] = [];
  for (let copy = 0; lines.length < minEvents; copy++) {
    for (const l of base) {
      const e = JSON.parse(l) as { ballId: string };
      lines.push(JSON.stringify({ ...e, ballId: `${e.ballId}-${copy}` }));
    }
  }
  return lines;
}

/** What replay predicts for the same lines, per key. */
async function expectedOf(lines: readonly string[]): Promise<Expected> {
  const file = join(tmpdir(), 'rnnstream-peers-input.jsonl');
  writeFileSync(file, lines.join('\n') + '\n');
  const expected: Expected = new Map();
  await replay({ pipeline: 'ball-direction', input: file, backend: 'onnx' }, {
    onPrediction: (p) => {
      const list = expected.get(p.key) ?? [];
      expected.set(p.key, list);
      list[p.seq - 1] = Float32Array.from(p.output);
    },
  });
  return expected;
}

async function load(producer: Producer, topic: string, lines: readonly string[]): Promise<void> {
  for (let i = 0; i < lines.length; i += 5000) {
    const messages = lines.slice(i, i + 5000).map((value) => ({ key: (JSON.parse(value) as { ballId: string }).ballId, value }));
    await producer.send({ topic, acks: -1, messages });
  }
}

interface Bench {
  readonly kafka: Kafka;
  readonly admin: Admin;
  readonly producer: Producer;
  readonly brokers: string;
  readonly model: string;
  readonly input: string;
  readonly lines: readonly string[];
  readonly expected: Expected;
}

let runCounter = 0;
const topicsFor = (c: Contender, input: string): RunTopics => {
  const id = `peers-${c.id}-${Date.now().toString(36)}-${runCounter++}`;
  return { input, output: `${id}.out`, id };
};

/** Every contender `runs` times, rotating the order each round; the first run of each is checked against replay. */
async function mainTable(b: Bench, contenders: readonly Contender[]): Promise<ContenderResult[]> {
  const results = new Map(contenders.map((c) => [c.id, { contender: c, throughput: [] as ThroughputRun[], latency: [] as LatencyRun[], agreement: undefined as ReturnType<typeof agreement> | undefined }]));
  for (let round = 0; round < runs; round++) {
    const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
    for (const c of order) {
      const r = results.get(c.id)!;
      const t = topicsFor(c, b.input);
      const run = await throughputRun(c, t, { ...b, events: b.lines.length, limitSeconds: Number(args['limit-seconds']) });
      r.throughput.push(run);
      if (!r.agreement) r.agreement = agreement(await readAll(b.kafka, b.admin, t.output), b.expected, LABELS);
      await b.admin.deleteTopics({ topics: [t.output] }).catch(() => undefined);
      if (!args['skip-latency']) {
        const lt = topicsFor(c, `peers-latency-${c.id}-${round}-${Date.now().toString(36)}.input`);
        r.latency.push(await latencyRun(c, { ...lt, input: lt.input }, { ...b, lines: b.lines, rate: Number(args.rate), seconds: Number(args['latency-seconds']) }));
      }
      const last = r.throughput.at(-1)!;
      process.stderr.write(`round ${round + 1}/${runs} ${c.id}: ${Math.round(last.eventsPerSecond)} events/s${last.complete ? '' : ` (stopped at the time limit, ${last.processed} processed)`}, ${last.cpuSecondsPerMillion.toFixed(1)} CPU s/M, peak RSS ${(last.peakRssBytes / 2 ** 20).toFixed(0)} MiB${r.latency.length ? `, p50 ${r.latency.at(-1)!.p50Ms.toFixed(0)} ms p99 ${r.latency.at(-1)!.p99Ms.toFixed(0)} ms` : ''}\n`);
    }
  }
  return [...results.values()].map((r) => ({ ...r, agreement: r.agreement! }));
}

/** Exactly once, commit intervals 100, 250 and 1000 ms: throughput against p99 latency (3 runs each). */
async function sweep(b: Bench, contenders: readonly Contender[]): Promise<SweepRow[]> {
  const rows: SweepRow[] = [];
  for (const commitIntervalMs of [100, 250, 1000]) {
    for (const c of contenders) {
      const throughput: number[] = [];
      const p99: number[] = [];
      for (let i = 0; i < 3; i++) {
        const t = topicsFor(c, b.input);
        throughput.push((await throughputRun(c, t, { ...b, commitIntervalMs, events: b.lines.length, limitSeconds: Number(args['limit-seconds']) })).eventsPerSecond);
        const lt = topicsFor(c, `peers-sweep-${c.id}-${commitIntervalMs}-${i}-${Date.now().toString(36)}.input`);
        p99.push((await latencyRun(c, lt, { ...b, commitIntervalMs, rate: Number(args.rate), seconds: Number(args['latency-seconds']) })).p99Ms);
      }
      rows.push({ contender: c.label, commitIntervalMs, throughput, p99 });
      process.stderr.write(`sweep ${c.id} @ ${commitIntervalMs} ms: ${throughput.map(Math.round).join(', ')} events/s, p99 ${p99.map(Math.round).join(', ')} ms\n`);
    }
  }
  return rows;
}

async function withBench<T>(nodes: number, model: string, lines: readonly string[], expected: Expected, work: (b: Bench) => Promise<T>): Promise<{ kind: string; value: T }> {
  const cluster = await startCluster(nodes);
  const kafka = new Kafka({ clientId: 'rnnstream-peers', brokers: cluster.brokers.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  try {
    await Promise.all([admin.connect(), producer.connect()]);
    const input = `peers-input-${Date.now().toString(36)}`;
    await createTopic(admin, input, 4);
    await load(producer, input, lines);
    return { kind: cluster.kind, value: await work({ kafka, admin, producer, brokers: cluster.brokers, model, input, lines, expected }) };
  } finally {
    await Promise.allSettled([admin.disconnect(), producer.disconnect()]);
    cluster.stop();
  }
}

async function main(): Promise<void> {
  const model = prepare();
  const lines = inputLines();
  process.stderr.write(`input: ${lines.length} events (the ball fixture repeated); replaying it for the expected predictions\n`);
  const expected = await expectedOf(lines);
  const only = args.only?.split(',');
  const contenders = only ? CONTENDERS.filter((c) => only.includes(c.id)) : CONTENDERS;
  const main1 = await withBench(1, model, lines, expected, (b) => mainTable(b, contenders));
  const best = (guarantee: string): Contender[] => {
    const ks = main1.value.filter((r) => r.contender.guarantee === guarantee && r.contender.id.startsWith('kstreams'));
    const fastest = ks.sort((a, b) => median(b.throughput.map((t) => t.eventsPerSecond)) - median(a.throughput.map((t) => t.eventsPerSecond)))[0];
    return [...contenders.filter((c) => c.id === (guarantee === 'exactly-once' ? 'rnnstream-eos' : 'rnnstream-alos')), ...(fastest ? [fastest.contender] : [])];
  };
  const sweepRows = args.sweep ? (await withBench(1, model, lines, expected, (b) => sweep(b, best('exactly-once')))).value : [];
  const cluster3 = args.cluster3 ? await withBench(3, model, lines, expected, (b) => mainTableOnce(b, [...best('at-least-once'), ...best('exactly-once')])) : undefined;
  const report = printReport({ broker: main1.kind, events: lines.length, runs, rate: Number(args.rate), tolerance: TOLERANCE, results: main1.value, sweep: sweepRows, cluster3 });
  process.stdout.write(report.markdown);
  if (args.out) writeFileSync(args.out, JSON.stringify(report.json, null, 2));
  process.exit(0);
}

/** The 3-node row: 3 runs each, no latency. */
async function mainTableOnce(b: Bench, contenders: readonly Contender[]): Promise<{ rows: { contender: string; throughput: number[] }[] }> {
  const rows = contenders.map((c) => ({ contender: c.label, throughput: [] as number[] }));
  for (let i = 0; i < 3; i++) {
    for (const [k, c] of contenders.entries()) {
      const run = await throughputRun(c, topicsFor(c, b.input), { ...b, events: b.lines.length, limitSeconds: Number(args['limit-seconds']) });
      rows[k]!.throughput.push(run.eventsPerSecond);
      process.stderr.write(`3 nodes ${c.id}: ${Math.round(run.eventsPerSecond)} events/s\n`);
    }
  }
  return { rows };
}

main().catch((err: Error) => {
  process.stderr.write(`bench:peers: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
