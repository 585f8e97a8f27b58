/**
 * What `npm run bench:peers` measures of one contender run: throughput, CPU seconds per million
 * events and peak RSS over a saturated run; end-to-end latency at a fixed rate; and whether its
 * predictions are rnnstream replay's.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Admin, Kafka, Producer } from 'kafkajs';
import { logOf, type Contender, type RunTopics, type StartOptions } from './contenders.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds (user + system, all threads) and peak RSS (bytes) of a live process, from /proc. */
export function processStats(pid: number): { cpuSeconds: number; peakRssBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuSeconds, peakRssBytes: Number(hwm?.[1] ?? 0) * 1024 };
}

export async function createTopic(admin: Admin, topic: string, partitions: number): Promise<void> {
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
}

const highWatermarks = async (admin: Admin, topic: string): Promise<number> => (await admin.fetchTopicOffsets(topic)).reduce((n, o) => n + Number(o.high), 0);

const committed = async (admin: Admin, group: string, topic: string): Promise<number> => {
  const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  return (t?.partitions ?? []).reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
};

/** Stops a contender: SIGTERM, then SIGKILL after 30 s. */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  if ((await Promise.race([exited.then(() => 'exited'), sleep(30_000).then(() => 'timeout')])) === 'timeout') {
    child.kill('SIGKILL');
    await exited;
  }
}

export interface ThroughputRun {
  readonly eventsPerSecond: number;
  readonly cpuSecondsPerMillion: number;
  readonly peakRssBytes: number;
  /** Events the contender had processed (committed) when the run ended. */
  readonly processed: number;
  /** True when it processed every event before the time limit. */
  readonly complete: boolean;
}

/**
 * Starts `c` on a pre-loaded input of `events` events and measures it over the window from 5 %
 * to 95 % of the outputs (start-up and the last commit left out), or until `limitSeconds`.
 * Done when its group has committed every input offset (exactly once: its transactions).
 */
export async function throughputRun(c: Contender, t: RunTopics, o: StartOptions & { admin: Admin; events: number; limitSeconds: number }): Promise<ThroughputRun> {
  const { admin, events } = o;
  await createTopic(admin, t.output, 4);
  const child = c.start(t, o);
  const started = performance.now();
  let from: { at: number; outputs: number; cpu: number } | undefined;
  let to: { at: number; outputs: number; cpu: number } | undefined;
  let done = 0;
  let stats = { cpuSeconds: 0, peakRssBytes: 0 };
  try {
    for (;;) {
      await sleep(100);
      if (child.exitCode !== null) throw new Error(`${c.id} exited with ${child.exitCode}: ${logOf(child).slice(-2000)}`);
      const outputs = await highWatermarks(admin, t.output);
      stats = processStats(child.pid!);
      const now = performance.now();
      if (!from && outputs >= 0.05 * events) from = { at: now, outputs, cpu: stats.cpuSeconds };
      if (from && !to && (outputs >= 0.95 * events || now - started > o.limitSeconds * 1000)) to = { at: now, outputs, cpu: stats.cpuSeconds };
      if (to) {
        done = await committed(admin, c.group(t), t.input);
        if (done >= events || now - started > (o.limitSeconds + 30) * 1000) break;
      } else if (now - started > o.limitSeconds * 1000) {
        throw new Error(`${c.id}: fewer than 5 % of the outputs in ${o.limitSeconds} s: ${logOf(child).slice(-2000)}`);
      }
    }
  } finally {
    await stopProcess(child);
  }
  const window = to!.outputs - from!.outputs;
  return {
    eventsPerSecond: window / ((to!.at - from!.at) / 1000),
    cpuSecondsPerMillion: ((to!.cpu - from!.cpu) / window) * 1e6,
    peakRssBytes: stats.peakRssBytes,
    processed: done,
    complete: done >= events,
  };
}

export interface ReadRecord {
  readonly key: string;
  readonly value: string;
  readonly partition: number;
}

/** Every record of `topic` below the high watermarks taken first, read_committed. */
export async function readAll(kafka: Kafka, admin: Admin, topic: string): Promise<ReadRecord[]> {
  const ends = new Map((await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, BigInt(o.high)]));
  const pending = new Set([...ends].filter(([, end]) => end > 0n).map(([p]) => p));
  const out: ReadRecord[] = [];
  if (pending.size === 0) return out;
  const consumer = kafka.consumer({ groupId: `peers-reader-${randomUUID()}`, maxWaitTimeInMs: 100, maxBytes: 64 << 20 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
        if (BigInt(e.payload.lastOffset) + 1n >= ends.get(e.payload.partition)!) pending.delete(e.payload.partition);
        if (pending.size === 0) resolve();
      });
      consumer
        .run({
          eachBatch: async ({ batch }) => {
            for (const m of batch.messages) if (BigInt(m.offset) < ends.get(batch.partition)!) out.push({ key: m.key?.toString() ?? '', value: m.value?.toString() ?? '', partition: batch.partition });
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/** Replay's probabilities per key: `labels.length` floats per event, in the key's order. */
export type Expected = Map<string, Float32Array[]>;

export interface Agreement {
  readonly predictions: number;
  /** Records whose source offset another record already had (at least once after a restart). */
  readonly duplicates: number;
  /** Largest absolute difference of a probability from replay's. */
  readonly worst: number;
  /** Records that name no known key and seq. */
  readonly unmatched: number;
}

/** Compares a contender's output records with replay's predictions, by key and seq. */
export function agreement(records: readonly ReadRecord[], expected: Expected, labels: readonly string[]): Agreement {
  const seen = new Set<string>();
  let worst = 0;
  let duplicates = 0;
  let unmatched = 0;
  for (const r of records) {
    const p = JSON.parse(r.value) as { key: string; seq: number; probabilities: Record<string, number>; source: { partition: number; offset: string } };
    const id = `${p.source.partition}/${p.source.offset}`;
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    const want = expected.get(p.key)?.[p.seq - 1];
    if (!want) {
      unmatched++;
      continue;
    }
    labels.forEach((l, i) => (worst = Math.max(worst, Math.abs((p.probabilities[l] ?? Infinity) - want[i]!))));
  }
  return { predictions: seen.size, duplicates, worst, unmatched };
}

export interface LatencyRun {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly measured: number;
  /** Outputs still missing when the run ended (it did not keep up with the rate). */
  readonly missing: number;
}

const percentile = (sorted: readonly number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;

/**
 * End-to-end latency at a fixed rate: from just before an event is sent to the moment a
 * read_committed reader receives its prediction (matched by key and seq), after a warm-up.
 */
export async function latencyRun(
  c: Contender,
  t: RunTopics,
  o: StartOptions & { kafka: Kafka; admin: Admin; producer: Producer; lines: readonly string[]; rate: number; seconds: number },
): Promise<LatencyRun> {
  await createTopic(o.admin, t.input, 4);
  await createTopic(o.admin, t.output, 4);
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  let received = 0;
  let measuring = false;
  const reader = o.kafka.consumer({ groupId: `peers-latency-${t.id}`, maxWaitTimeInMs: 10 });
  await reader.connect();
  await reader.subscribe({ topic: t.output, fromBeginning: true });
  await reader.run({
    eachMessage: async ({ message }) => {
      const now = performance.now();
      received++;
      const p = JSON.parse(message.value!.toString()) as { key: string; seq: number };
      const at = sentAt.get(`${p.key}/${p.seq}`);
      if (at !== undefined && measuring) latencies.push(now - at);
    },
  });
  const child = c.start(t, o);
  const seqs = new Map<string, number>();
  let next = 0;
  const send = async (n: number): Promise<void> => {
    const messages = o.lines.slice(next, next + n).map((value) => {
      const e = JSON.parse(value) as { ballId: string };
      const seq = (seqs.get(e.ballId) ?? 0) + 1;
      seqs.set(e.ballId, seq);
      sentAt.set(`${e.ballId}/${seq}`, performance.now());
      return { key: e.ballId, value };
    });
    next += n;
    await o.producer.send({ topic: t.input, acks: -1, messages });
  };
  try {
    // Warm-up: the contender has joined, restored nothing, and compiled its hot paths.
    await send(500);
    const warm = performance.now();
    while (received < 500) {
      if (child.exitCode !== null || performance.now() - warm > 120_000) throw new Error(`${c.id} did not answer the warm-up: ${logOf(child).slice(-2000)}`);
      await sleep(50);
    }
    measuring = true;
    const tick = 10;
    const perTick = (o.rate * tick) / 1000;
    const start = performance.now();
    for (let i = 0; performance.now() - start < o.seconds * 1000; i++) {
      await send(perTick);
      const wait = start + (i + 1) * tick - performance.now();
      if (wait > 0) await sleep(wait);
    }
    const deadline = performance.now() + 30_000;
    while (received < next && performance.now() < deadline) await sleep(50);
  } finally {
    await stopProcess(child);
    await reader.disconnect();
  }
  const sorted = latencies.sort((a, b) => a - b);
  return { p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), measured: sorted.length, missing: Math.max(0, next - received) };
}
