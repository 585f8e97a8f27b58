import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { projectPath } from '../../src/paths.js';
import { replay } from '../../src/replay/replay.js';

export interface Topics {
  readonly inputTopic: string;
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly changelogTopic: string;
  readonly group: string;
}

/** Fresh topic names and group per test, so tests never see each other's data. */
export function freshTopics(label: string): Topics {
  const id = `${label}-${randomUUID().slice(0, 8)}`;
  return { inputTopic: `${id}.input`, outputTopic: `${id}.predictions`, dlqTopic: `${id}.dead-letters`, changelogTopic: `${id}.changelog`, group: `${id}.group` };
}

export const kafkaClient = (brokers: string): Kafka => new Kafka({ clientId: 'rnnstream-tests', brokers: brokers.split(','), logLevel: logLevel.NOTHING });

export async function produce(brokers: string, topic: string, messages: { key: string | null; value: string | Buffer }[]): Promise<void> {
  // Created first, with its leaders known: a first send that auto-creates the topic can fail
  // with UNKNOWN_TOPIC_OR_PARTITION from a broker that has not heard of it yet.
  const admin = kafkaClient(brokers).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  const producer = kafkaClient(brokers).producer({ allowAutoTopicCreation: true, createPartitioner: Partitioners.DefaultPartitioner, retry: { retries: 10, initialRetryTime: 300 } });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 500) await producer.send({ topic, messages: messages.slice(i, i + 500), acks: -1 });
  } finally {
    await producer.disconnect();
  }
}

/** Sum of the partitions' high watermarks: how many messages a topic holds. */
export async function topicSize(brokers: string, topic: string): Promise<number> {
  const admin = kafkaClient(brokers).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((n, o) => n + Number(o.high), 0);
  } catch {
    return 0;
  } finally {
    await admin.disconnect();
  }
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

export interface ReadMessage {
  readonly key: string | null;
  readonly value: string;
  /** The value as stored (a bad input's bytes need not be UTF-8). */
  readonly bytes: Buffer;
  readonly partition: number;
  readonly offset: string;
  readonly headers: Record<string, string>;
  /** The record's timestamp (ms; the producer's create time). */
  readonly timestamp: number;
}

/** Reads a topic from the beginning until it has `count` messages (or fails after the timeout). */
export async function readTopic(brokers: string, topic: string, count: number, timeoutMs = 60_000): Promise<ReadMessage[]> {
  const consumer = kafkaClient(brokers).consumer({ groupId: `reader-${randomUUID()}` });
  await consumer.connect();
  const out: ReadMessage[] = [];
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`read ${out.length} of ${count} messages from ${topic} in ${timeoutMs} ms`)), timeoutMs);
      if (count === 0) {
        clearTimeout(timer);
        resolve();
      }
      consumer
        .run({
          eachMessage: async ({ partition, message }) => {
            out.push({
              key: message.key?.toString() ?? null,
              value: message.value?.toString() ?? '',
              bytes: message.value ?? Buffer.alloc(0),
              partition,
              offset: message.offset,
              headers: Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)])),
              timestamp: Number(message.timestamp),
            });
            if (out.length >= count) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out;
}

export interface Prediction {
  readonly key: string;
  readonly seq: number;
  readonly prediction: string;
  readonly probabilities: Record<string, number>;
  readonly source?: { topic: string; partition: number; offset: string };
}

/** What `rnnstream replay` predicts for a fixture (on `backend`, onnx by default), per key in order. */
export async function replayPredictions(pipeline: string, input: string, backend: 'onnx' | 'gpu' = 'onnx', model?: string): Promise<Map<string, Prediction[]>> {
  const byKey = new Map<string, Prediction[]>();
  await replay(
    { pipeline, input, backend, ...(model ? { model } : {}) },
    {
      onPrediction: (p) => {
        const list = byKey.get(p.key) ?? [];
        byKey.set(p.key, list);
        // What the output record carries: every class, or the pipeline's top k.
        const written = p.top ?? p.names.map((_, k) => k);
        list.push({ key: p.key, seq: p.seq, prediction: String(p.prediction), probabilities: Object.fromEntries(written.map((k) => [p.names[k]!, p.output[k]!])) });
      },
    },
  );
  return byKey;
}

/** Output-topic predictions with duplicates (same source offset) dropped, per key in offset order. */
export function dedupeByKey(messages: readonly ReadMessage[]): Map<string, Prediction[]> {
  const seen = new Set<string>();
  const byKey = new Map<string, Prediction[]>();
  const parsed = messages.map((m) => JSON.parse(m.value) as Prediction);
  parsed.sort((a, b) => a.source!.partition - b.source!.partition || Number(BigInt(a.source!.offset) - BigInt(b.source!.offset)));
  for (const p of parsed) {
    const id = `${p.source!.topic}/${p.source!.partition}/${p.source!.offset}`;
    if (seen.has(id)) continue;
    seen.add(id);
    const list = byKey.get(p.key) ?? [];
    byKey.set(p.key, list);
    list.push(p);
  }
  return byKey;
}

/** Largest absolute difference between two per-key prediction sets; throws on a structural mismatch. */
export function comparePredictions(actual: Map<string, Prediction[]>, expected: Map<string, Prediction[]>): number {
  if ([...actual.keys()].sort().join() !== [...expected.keys()].sort().join()) throw new Error('the predicted keys differ');
  let worst = 0;
  for (const [key, want] of expected) {
    const got = actual.get(key)!;
    if (got.length !== want.length) throw new Error(`key ${key}: ${got.length} predictions, expected ${want.length}`);
    want.forEach((w, i) => {
      const g = got[i]!;
      if (g.seq !== w.seq) throw new Error(`key ${key}: prediction ${i} has seq ${g.seq}, expected ${w.seq}`);
      // A class missing from the actual prediction (another top k) counts as the whole probability.
      for (const [label, p] of Object.entries(w.probabilities)) worst = Math.max(worst, Math.abs(p - (g.probabilities[label] ?? 0)), label in g.probabilities ? 0 : 1);
    });
  }
  return worst;
}

/** Starts `rnnstream run` as its own process (so a test can kill -9 it). */
export function spawnService(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, [projectPath('dist', 'src', 'cli', 'main.js'), 'run', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  return Object.assign(child, { output: () => log });
}

export const exited = (child: ChildProcess): Promise<number | null> =>
  child.exitCode !== null ? Promise.resolve(child.exitCode) : new Promise((r) => child.once('exit', (code) => r(code)));

export interface TopicContents {
  readonly messages: ReadMessage[];
  /** Sum over partitions of high watermark - log start offset: what the offsets span. */
  readonly offsetsSpanned: number;
}

/**
 * Every record of a topic from its log start to the high watermarks taken first, as a
 * read_committed consumer sees them (kafkajs's default): records of aborted transactions are
 * not among them. On a compacted topic `messages.length < offsetsSpanned`: the cleaner removed
 * superseded records; on a transactional one, markers and aborted records take offsets too.
 */
export async function readToEnd(brokers: string, topic: string, timeoutMs = 60_000): Promise<TopicContents> {
  const admin = kafkaClient(brokers).admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic).finally(() => admin.disconnect());
  const ends = new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
  const offsetsSpanned = offsets.reduce((n, o) => n + Number(BigInt(o.high) - BigInt(o.low)), 0);
  const pending = new Set(offsets.filter((o) => BigInt(o.high) > BigInt(o.low)).map((o) => o.partition));
  const messages: ReadMessage[] = [];
  if (pending.size === 0) return { messages, offsetsSpanned };
  const consumer = kafkaClient(brokers).consumer({ groupId: `reader-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${topic}: partitions ${[...pending].join(',')} not read to their end in ${timeoutMs} ms`)), timeoutMs);
      // After every fetched batch, those kafkajs hands to eachBatch and those that held only
      // transaction markers or aborted records, which it does not.
      consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
        if (BigInt(e.payload.lastOffset) + 1n >= ends.get(e.payload.partition)!) pending.delete(e.payload.partition);
        if (pending.size === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
      consumer
        .run({
          eachBatch: async ({ batch }) => {
            for (const m of batch.messages) {
              if (BigInt(m.offset) >= ends.get(batch.partition)!) break;
              messages.push({
                key: m.key?.toString() ?? null,
                value: m.value?.toString() ?? '',
                bytes: m.value ?? Buffer.alloc(0),
                partition: batch.partition,
                offset: m.offset,
                headers: Object.fromEntries(Object.entries(m.headers ?? {}).map(([k, v]) => [k, String(v)])),
                timestamp: Number(m.timestamp),
              });
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return { messages, offsetsSpanned };
}

/** Writes the first `share` of a JSON Lines fixture's lines to one file and the rest to another. */
export function splitFixture(file: string, share: number): [string, string] {
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  const cut = Math.round(lines.length * share);
  const [a, b] = [`${file}.part1.jsonl`, `${file}.part2.jsonl`];
  writeFileSync(a, lines.slice(0, cut).join('\n') + '\n');
  writeFileSync(b, lines.slice(cut).join('\n') + '\n');
  return [a, b];
}

/** `node scripts/kafka.mjs kill|restart --dir DIR --broker K`: one broker of the test cluster. */
export function brokerControl(dir: string, action: 'kill' | 'restart', broker: number): void {
  const r = spawnSync(process.execPath, [projectPath('scripts', 'kafka.mjs'), action, '--dir', dir, '--broker', String(broker)], { encoding: 'utf8', timeout: 180_000 });
  if (r.status !== 0) throw new Error(`kafka.mjs ${action} --broker ${broker} failed: ${r.stderr}`);
}

/** The broker (node id) leading each partition of a topic. */
export async function partitionLeaders(brokers: string, topic: string): Promise<Map<number, number>> {
  const admin = kafkaClient(brokers).admin();
  await admin.connect();
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    return new Map(topics[0]!.partitions.map((p) => [p.partitionId, p.leader]));
  } finally {
    await admin.disconnect();
  }
}

/** The service's /healthz (or /readyz) answer (a spawned service logs its endpoint in "service started"). */
export function healthOf(httpAddress: string, path: '/healthz' | '/readyz' = '/healthz'): Promise<{ code: number; status: string; reasons: string[] }> {
  // A fresh connection per call (agent: false): polling with fetch reuses keep-alive sockets that
  // the server closes after 5 s idle, and a request racing that close fails with "other side closed".
  return new Promise((resolve, reject) => {
    httpGet(`${httpAddress}${path}`, { agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        const body = JSON.parse(text) as { status: string; reasons: string[] };
        resolve({ code: res.statusCode ?? 0, status: body.status, reasons: body.reasons });
      });
    }).on('error', reject);
  });
}

/** The partitions of a service's latest assignment, from its log (undefined before its first). */
export function assignedTo(service: { output: () => string }): number[] | undefined {
  const last = service
    .output()
    .split('\n')
    .filter((l) => l.includes('"msg":"partitions assigned"'))
    .at(-1);
  return last ? (JSON.parse(last) as { partitions: number[] }).partitions : undefined;
}

/** The http address a spawned service logged at start-up, once it has. */
export async function httpAddressOf(service: { output: () => string }, timeoutMs = 60_000): Promise<string> {
  let address: string | undefined;
  await waitFor('the service to start', async () => {
    address = /"msg":"service started"/.test(service.output()) ? /"http":"([^"]+)"/.exec(service.output().split('\n').find((l) => l.includes('"msg":"service started"'))!)?.[1] : undefined;
    return address !== undefined;
  }, timeoutMs);
  return address!;
}
