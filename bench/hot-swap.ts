/**
 * `npm run bench:swap` (issue 25, item 4): what a hot swap does to the predictions right after
 * it, policy `warm` against `reset`, on a real broker.
 *
 * The ball-direction validation fixture (300 balls, about 70 frames each; the direction of a
 * ball cannot be told from one frame, so a key's state is what makes a prediction good). Each
 * run: a fresh topic; every ball's first `--cut` frames produced; the service (at least once,
 * onnx, --models-topic, the committed model) answers them; a control record names the retrained
 * model (fixtures/models/ball-direction-retrained.json, same architecture, another seed); once
 * the service logs the swap, the rest of every ball is produced. Scored: every ball's first 10
 * predictions from the new model, each against the direction the ball then took (the fixture's
 * label, which its next frame reveals: prequential), by position after the swap. For scale, the
 * same events from the retrained model replayed without a swap (every ball's history in its
 * state: the ceiling), from a local replay.
 *
 * The cost of warming up: the service's own counters (rnnstream_warmup_events_total over
 * rnnstream_warmup_seconds_total: history events stepped per second of warm-up), and the rate at
 * which the second part was answered, warm against reset.
 *
 *   node dist/bench/hot-swap.js [--cut 30] [--history 16] [--runs 1] [--json]
 *
 * Then shadow runs (issue 25 item 5): the same service with the retrained model as a shadow on
 * every key, against none, over the whole fixture: the live prequential accuracy /metrics gives
 * for both models on the same events, and what the shadow costs in events/s.
 *
 *   node dist/bench/hot-swap.js [--cut 30] [--history 16] [--runs 1] [--only swap|shadow] [--json]
 *
 * Policies alternate (warm, reset, warm, reset ...), and so do with and without a shadow, so that
 * the machine's noise falls on both.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Kafka, logLevel } from 'kafkajs';
import { loadModelFile } from '../src/adapters/model-file.js';
import { projectPath } from '../src/paths.js';
import { benchBroker } from './broker.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const cut = opt('--cut', 30);
const historyLength = opt('--history', 16);
const runs = opt('--runs', 1);
const SCORED = 10;
const CLI = projectPath('dist', 'src', 'cli', 'main.js');
const served = projectPath('pipelines', 'ball-direction', 'model.json');
const retrained = projectPath('fixtures', 'models', 'ball-direction-retrained.json');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Ball {
  readonly ballId: string;
  readonly frame: number;
}
interface Prediction {
  readonly key: string;
  readonly seq: number;
  readonly model?: string;
  readonly warm?: boolean;
  readonly prediction: string;
  readonly label?: string;
  /** Its input position: {topic, partition, offset} from Kafka, "file:line" from a replay. */
  readonly source: unknown;
}

/** The fixture split by each ball's frame: its first `cut` frames, then the rest (input order kept in each). */
function splitFixture(dir: string): { first: string; rest: string; lines: number; keys: number } {
  const lines = gunzipSync(readFileSync(projectPath('fixtures', 'ball-validation.jsonl.gz'))).toString('utf8').split('\n').filter(Boolean);
  const seen = new Map<string, number>();
  const first: string[] = [];
  const rest: string[] = [];
  for (const line of lines) {
    const { ballId } = JSON.parse(line) as Ball;
    const n = seen.get(ballId) ?? 0;
    seen.set(ballId, n + 1);
    (n < cut ? first : rest).push(line);
  }
  const write = (name: string, part: string[]): string => {
    const file = join(dir, name);
    writeFileSync(file, part.join('\n') + '\n');
    return file;
  };
  return { first: write('first.jsonl', first), rest: write('rest.jsonl', rest), lines: lines.length, keys: seen.size };
}

function startService(config: string): ChildProcess & { log: () => string } {
  const child = spawn(process.execPath, [CLI, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  return Object.assign(child, { log: () => log });
}

const logged = (log: string, msg: string): Record<string, unknown>[] =>
  log
    .split('\n')
    .filter((l) => l.includes(`"msg":"${msg}`))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, log: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}\n${log().split('\n').slice(-8).join('\n')}`);
}

/** Records in a topic now (high watermarks summed; the output is not transactional here). */
async function topicSize(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  } finally {
    await admin.disconnect();
  }
}

async function readAll(kafka: Kafka, topic: string, count: number): Promise<Prediction[]> {
  const consumer = kafka.consumer({ groupId: `bench-read-${randomUUID()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const out: Prediction[] = [];
  await new Promise<void>((resolve) => {
    void consumer.run({
      eachMessage: async ({ message }) => {
        out.push(JSON.parse(message.value!.toString()) as Prediction);
        if (out.length >= count) resolve();
      },
    });
  });
  await consumer.disconnect();
  return out;
}

const metric = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);

/** Per position after the swap (1..SCORED), the share of balls whose prediction was their label. */
function scoreAfterSwap(predictions: Iterable<Prediction>, isNew: (p: Prediction) => boolean): { byPosition: number[]; overall: number; coldFlags: number } {
  const byKey = new Map<string, Prediction[]>();
  const distinct = new Map<string, Prediction>();
  // At least once: a redelivered event may be answered twice; one answer per source offset.
  for (const p of predictions) distinct.set(JSON.stringify(p.source), p);
  for (const p of distinct.values()) if (isNew(p)) (byKey.get(p.key) ?? byKey.set(p.key, []).get(p.key)!).push(p);
  const right = new Array<number>(SCORED).fill(0);
  const total = new Array<number>(SCORED).fill(0);
  let coldFlags = 0;
  for (const list of byKey.values()) {
    list.sort((a, b) => a.seq - b.seq);
    list.slice(0, SCORED).forEach((p, i) => {
      total[i]!++;
      if (p.prediction === p.label) right[i]!++;
      if (p.warm === false) coldFlags++;
    });
  }
  const byPosition = right.map((r, i) => r / total[i]!);
  return { byPosition, overall: right.reduce((a, b) => a + b, 0) / total.reduce((a, b) => a + b, 0), coldFlags };
}

interface RunResult {
  readonly policy: 'warm' | 'reset';
  readonly byPosition: number[];
  readonly overall: number;
  readonly coldFlags: number;
  readonly swapSeconds: number;
  readonly warmUpEvents: number;
  readonly warmUpSeconds: number;
  readonly warmUpKeys: number;
  readonly restPerSecond: number;
}

async function runOnce(policy: 'warm' | 'reset', brokers: string, parts: ReturnType<typeof splitFixture>, dir: string): Promise<RunResult> {
  const kafka = new Kafka({ clientId: 'bench-swap', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const id = randomUUID().slice(0, 8);
  const t = { inputTopic: `swap-${id}.in`, outputTopic: `swap-${id}.out`, dlqTopic: `swap-${id}.dlq`, changelogTopic: `swap-${id}.changelog`, group: `swap-${id}` };
  const modelsTopic = `swap-${id}.models`;
  const produceFile = (file: string): void => {
    execFileSync(process.execPath, [CLI, 'produce', '--pipeline', 'ball-direction', '--brokers', brokers, '--input', file, '--topic', t.inputTopic], { stdio: 'ignore' });
  };
  produceFile(parts.first);
  const firstCount = readFileSync(parts.first, 'utf8').split('\n').filter(Boolean).length;
  const config = join(dir, `${id}.json`);
  writeFileSync(config, JSON.stringify({ ...t, pipeline: 'ball-direction', brokers: brokers.split(','), http: { port: 0 }, logLevel: 'info', backend: 'onnx', model: served, modelsTopic, swapPolicy: policy, warmHistory: historyLength }));
  const service = startService(config);
  try {
    await until('the first part answered', async () => (await topicSize(kafka, t.outputTopic).catch(() => 0)) >= firstCount, 180_000, service.log);
    const producer = kafka.producer();
    await producer.connect();
    const sha256 = createHash('sha256').update(readFileSync(retrained)).digest('hex');
    await producer.send({ topic: modelsTopic, messages: [{ key: 'ball-direction', value: JSON.stringify({ pipeline: 'ball-direction', path: retrained, sha256 }) }] });
    await producer.disconnect();
    await until('the swap', () => logged(service.log(), 'model swapped').length > 0, 60_000, service.log);
    const swap = logged(service.log(), 'model swapped')[0]! as { seconds: number };
    const started = performance.now();
    produceFile(parts.rest);
    await until('every event answered', async () => (await topicSize(kafka, t.outputTopic)) >= parts.lines, 300_000, service.log);
    const restPerSecond = (parts.lines - firstCount) / ((performance.now() - started) / 1000);
    const http = logged(service.log(), 'service started')[0]!['http'] as string;
    const metrics = await (await fetch(`${http}/metrics`)).text();
    const newHash = loadModelFile(retrained).hash.slice(0, 16);
    const score = scoreAfterSwap(await readAll(kafka, t.outputTopic, await topicSize(kafka, t.outputTopic)), (p) => p.model === newHash);
    return {
      policy,
      ...score,
      swapSeconds: swap.seconds,
      warmUpEvents: metric(metrics, 'rnnstream_warmup_events_total'),
      warmUpSeconds: metric(metrics, 'rnnstream_warmup_seconds_total'),
      warmUpKeys: metric(metrics, 'rnnstream_warmup_keys_total'),
      restPerSecond,
    };
  } finally {
    service.kill('SIGKILL');
  }
}

/** The retrained model replayed over the whole fixture (no swap: every ball's state built from its first frame), scored on the same events. */
function ceiling(dir: string): { byPosition: number[]; overall: number } {
  const out = join(dir, 'ceiling.jsonl');
  const fixture = join(dir, 'all.jsonl');
  writeFileSync(fixture, gunzipSync(readFileSync(projectPath('fixtures', 'ball-validation.jsonl.gz'))));
  execFileSync(process.execPath, [CLI, 'replay', '--pipeline', 'ball-direction', '--model', retrained, '--input', fixture, '--out', out], { stdio: 'ignore' });
  const predictions = readFileSync(out, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Prediction);
  return scoreAfterSwap(predictions, (p) => p.seq > cut);
}

interface ShadowResult {
  readonly shadow: boolean;
  readonly perSecond: number;
  readonly accuracy: { readonly shadow: number; readonly serving: number; readonly servingAll: number };
  readonly scored: number;
  readonly shadowPredictions: number;
  readonly dropped: number;
}

/** The whole fixture through the service, with the retrained model as a shadow on every key or without one. */
async function shadowOnce(withShadow: boolean, brokers: string, lines: number, dir: string): Promise<ShadowResult> {
  const kafka = new Kafka({ clientId: 'bench-shadow', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const id = randomUUID().slice(0, 8);
  const t = { inputTopic: `shadow-${id}.in`, outputTopic: `shadow-${id}.out`, dlqTopic: `shadow-${id}.dlq`, changelogTopic: `shadow-${id}.changelog`, group: `shadow-${id}` };
  const modelsTopic = `shadow-${id}.models`;
  const config = join(dir, `${id}.json`);
  writeFileSync(config, JSON.stringify({ ...t, pipeline: 'ball-direction', brokers: brokers.split(','), http: { port: 0 }, logLevel: 'info', backend: 'onnx', model: served, modelsTopic }));
  const service = startService(config);
  try {
    await until('the start', () => logged(service.log(), 'service started').length > 0, 60_000, service.log);
    if (withShadow) {
      const producer = kafka.producer();
      await producer.connect();
      const sha256 = createHash('sha256').update(readFileSync(retrained)).digest('hex');
      await producer.send({ topic: modelsTopic, messages: [{ key: 'ball-direction/shadow', value: JSON.stringify({ pipeline: 'ball-direction', path: retrained, sha256, role: 'shadow', share: 1 }) }] });
      await producer.disconnect();
      await until('the shadow', () => logged(service.log(), 'shadow model started').length > 0, 60_000, service.log);
    }
    const fixture = join(dir, 'all.jsonl');
    writeFileSync(fixture, gunzipSync(readFileSync(projectPath('fixtures', 'ball-validation.jsonl.gz'))));
    const started = performance.now();
    execFileSync(process.execPath, [CLI, 'produce', '--pipeline', 'ball-direction', '--brokers', brokers, '--input', fixture, '--topic', t.inputTopic], { stdio: 'ignore' });
    await until('every event answered', async () => (await topicSize(kafka, t.outputTopic)) >= lines, 300_000, service.log);
    const perSecond = lines / ((performance.now() - started) / 1000);
    // The shadow steps after the served outputs: let it finish what it was given.
    if (withShadow) await sleep(2000);
    const http = logged(service.log(), 'service started')[0]!['http'] as string;
    const text = await (await fetch(`${http}/metrics`)).text();
    const labelled = (name: string, model: string): number => Number(new RegExp(`^${name}\\{model="${model}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    return {
      shadow: withShadow,
      perSecond,
      accuracy: { shadow: labelled('rnnstream_shadow_prequential_accuracy', 'shadow'), serving: labelled('rnnstream_shadow_prequential_accuracy', 'serving'), servingAll: metric(text, 'rnnstream_prequential_accuracy') },
      scored: labelled('rnnstream_shadow_prequential_scored', 'shadow'),
      shadowPredictions: metric(text, 'rnnstream_shadow_predictions_total'),
      dropped: metric(text, 'rnnstream_shadow_dropped_total'),
    };
  } finally {
    service.kill('SIGKILL');
  }
}

const pct = (x: number): string => `${(100 * x).toFixed(1)} %`;

async function main(): Promise<void> {
  const broker = await benchBroker();
  const dir = mkdtempSync(join(tmpdir(), 'bench-swap-'));
  try {
    const parts = splitFixture(dir);
    const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
    const shadows: ShadowResult[] = [];
    if (only !== 'swap') for (let r = 0; r < runs; r++) for (const withShadow of [false, true]) shadows.push(await shadowOnce(withShadow, broker.list, parts.lines, dir));
    if (shadows.length > 0) reportShadows(shadows, parts.lines);
    if (only === 'shadow') return;
    const results: RunResult[] = [];
    for (let r = 0; r < runs; r++) for (const policy of ['warm', 'reset'] as const) results.push(await runOnce(policy, broker.list, parts, dir));
    const top = ceiling(dir);
    const of = (policy: string): RunResult[] => results.filter((x) => x.policy === policy);
    const med = (policy: string, f: (x: RunResult) => number): number => median(of(policy).map(f));
    if (args.includes('--json')) {
      process.stdout.write(JSON.stringify({ broker: broker.kind, cut, history: historyLength, keys: parts.keys, results, ceiling: top }) + '\n');
      return;
    }
    process.stdout.write(`hot swap to a retrained ball model on ${broker.kind}: ${parts.keys} balls, swap after each ball's ${cut}th frame, warm history ${historyLength}; ${runs} run(s) per policy, medians\n\n`);
    process.stdout.write(`| prediction after the swap | ${Array.from({ length: SCORED }, (_, i) => i + 1).join(' | ')} | all ${SCORED} |\n|---|${'---|'.repeat(SCORED + 1)}\n`);
    for (const policy of ['warm', 'reset']) {
      const byPosition = Array.from({ length: SCORED }, (_, i) => med(policy, (x) => x.byPosition[i]!));
      process.stdout.write(`| ${policy} | ${byPosition.map(pct).join(' | ')} | ${pct(med(policy, (x) => x.overall))} |\n`);
    }
    process.stdout.write(`| no swap (the retrained model from each ball's first frame) | ${top.byPosition.map(pct).join(' | ')} | ${pct(top.overall)} |\n\n`);
    const warm = of('warm');
    process.stdout.write(
      `warm-up: ${med('warm', (x) => x.warmUpKeys)} keys, ${med('warm', (x) => x.warmUpEvents)} history events in ${med('warm', (x) => x.warmUpSeconds).toFixed(3)} s: ` +
        `${Math.round(median(warm.map((x) => x.warmUpEvents / x.warmUpSeconds)))} history events/s; "warm": false on ${med('warm', (x) => x.coldFlags)} of the scored predictions (reset: ${med('reset', (x) => x.coldFlags)})\n` +
        `the second part answered at ${Math.round(med('warm', (x) => x.restPerSecond))} events/s (warm) against ${Math.round(med('reset', (x) => x.restPerSecond))} (reset); swap ${med('warm', (x) => x.swapSeconds).toFixed(3)} s (warm), ${med('reset', (x) => x.swapSeconds).toFixed(3)} s (reset)\n`,
    );
  } finally {
    broker.stop();
  }
}

function reportShadows(shadows: readonly ShadowResult[], lines: number): void {
  if (args.includes('--json')) {
    process.stdout.write(JSON.stringify({ shadows }) + '\n');
    return;
  }
  const med = (withShadow: boolean, f: (x: ShadowResult) => number): number => median(shadows.filter((x) => x.shadow === withShadow).map(f));
  process.stdout.write(
    `shadow run of the retrained model on every key, ${lines} events, medians of ${shadows.length / 2} run(s) each, alternating:\n` +
      `  without a shadow ${Math.round(med(false, (x) => x.perSecond))} events/s, with one ${Math.round(med(true, (x) => x.perSecond))} (${(med(true, (x) => x.perSecond) / med(false, (x) => x.perSecond)).toFixed(2)}x)\n` +
      `  live prequential accuracy on the same ${med(true, (x) => x.scored)} scored events: shadow ${pct(med(true, (x) => x.accuracy.shadow))}, serving ${pct(med(true, (x) => x.accuracy.serving))} ` +
      `(serving on all: ${pct(med(true, (x) => x.accuracy.servingAll))}); ${med(true, (x) => x.shadowPredictions)} shadow predictions, ${med(true, (x) => x.dropped)} skipped\n\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:swap failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
