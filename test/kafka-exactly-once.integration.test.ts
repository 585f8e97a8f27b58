/**
 * `--guarantee exactly-once` on a real cluster (3 brokers, replication 3): one Kafka transaction
 * per input partition and commit interval holds the outputs, dead letters, changelog records and
 * offsets. In every case below a read_committed reader of the output topic sees exactly one
 * prediction per input event, with no dedupe, equal per key to an uninterrupted replay, and
 * exactly one dead letter per bad record:
 * - five SIGKILLs of the instance at random moments mid-stream, a restart after each;
 * - a zombie: one of two instances SIGSTOPped past the session timeout, its partitions taken
 *   over by the other, then SIGCONTed: its late writes are fenced and never visible;
 * - the broker leading an output partition killed mid-transaction.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { fetchCommittedOffset } from '../src/adapters/kafka/consumer/committed-offsets.js';
import { createSerial } from '../src/adapters/kafka/cluster/serial.js';
import { createRng } from '../src/core/prng.js';
import { ballHarness, type BallHarness } from './support/harness.js';
import {
  assignedTo,
  brokerControl,
  comparePredictions,
  exited,
  freshTopics,
  httpAddressOf,
  kafkaClient,
  partitionLeaders,
  readToEnd,
  spawnService,
  waitFor,
  type Prediction,
  type Topics,
} from './support/kafka.js';

const clusterDir = inject('kafkaClusterDir');
let h: BallHarness;
/** The fixture with bad records among the good ones; how many are bad. */
let mixed: { file: string; bad: number };

/** A copy of a fixture with a bad record (not JSON, or failing the schema) after every 150th line. */
function withBadRecords(harness: BallHarness): { file: string; bad: number } {
  const lines = readFileSync(harness.fixture, 'utf8').split('\n').filter(Boolean);
  const out: string[] = [];
  let bad = 0;
  lines.forEach((line, i) => {
    out.push(line);
    if (i % 150 === 75) {
      out.push(bad % 2 ? `{"ballId":"b-bad-${bad}","frame":"zero","t":0,"x":0.1,"y":0.2}` : `not json ${bad}`);
      bad++;
    }
  });
  const file = join(harness.dir, 'mixed.jsonl');
  writeFileSync(file, out.join('\n') + '\n');
  return { file, bad };
}

beforeAll(async () => {
  h = await ballHarness(40, 91);
  mixed = withBadRecords(h);
}, 60_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The records of a topic up to its high watermark, as a read_uncommitted reader sees them: those
 * of aborted and of still open transactions too. (The admin's offsets stop at the last stable
 * offset, before any open transaction; the fetches say where the log really ends.)
 */
async function countUncommitted(topic: string): Promise<number> {
  const admin = kafkaClient(h.brokers).admin();
  await admin.connect();
  const partitions = (await admin.fetchTopicMetadata({ topics: [topic] }).finally(() => admin.disconnect())).topics[0]!.partitions.map((p) => p.partitionId);
  const consumer = kafkaClient(h.brokers).consumer({ groupId: `uncommitted-${Math.random()}`, readUncommitted: true, maxWaitTimeInMs: 100 });
  await consumer.connect();
  let n = 0;
  const pending = new Set(partitions);
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
        if (BigInt(e.payload.lastOffset) + 1n >= BigInt(e.payload.highWatermark)) pending.delete(e.payload.partition);
        if (pending.size === 0) resolve();
      });
      consumer.run({ eachBatch: async ({ batch }) => void (n += batch.messages.length) }).catch(reject);
      // A partition with no records has no batch to report its end.
      setTimeout(() => resolve(), 20_000);
    });
  } finally {
    await consumer.disconnect();
  }
  return n;
}

/**
 * Follows a topic as a read_uncommitted reader (it sees records of open transactions too) and
 * keeps, per partition, the log end its fetches report: with the only writer frozen, a log end
 * past the last stable offset means an open transaction with records written.
 */
async function followLogEnd(topic: string): Promise<{ openRecords: () => Promise<boolean>; stop: () => Promise<void> }> {
  const ends = new Map<number, bigint>();
  const consumer = kafkaClient(h.brokers).consumer({ groupId: `log-end-${Math.random()}`, readUncommitted: true, maxWaitTimeInMs: 50 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachBatch: async ({ batch }) => void ends.set(batch.partition, BigInt(batch.highWatermark)) });
  const admin = kafkaClient(h.brokers).admin();
  await admin.connect();
  return {
    openRecords: async () => {
      await sleep(300); // the fetches of what was written before the freeze come in
      const stable = await admin.fetchTopicOffsets(topic); // read_committed: the last stable offsets
      return stable.some((o) => (ends.get(o.partition) ?? 0n) > BigInt(o.high));
    },
    stop: async () => {
      await Promise.allSettled([consumer.disconnect(), admin.disconnect()]);
    },
  };
}

/** Input events committed so far: the consumer group's committed offsets, summed (each transaction commits them with its outputs). */
async function committed(t: Topics): Promise<number> {
  const admin = kafkaClient(h.brokers).admin();
  await admin.connect();
  try {
    const partitions = (await admin.fetchTopicMetadata({ topics: [t.inputTopic] })).topics[0]!.partitions.map((p) => p.partitionId);
    const serial = createSerial();
    let n = 0;
    for (const partition of partitions) n += (await fetchCommittedOffset(admin, serial, { group: t.group, topic: t.inputTopic, partition })) ?? 0;
    return n;
  } finally {
    await admin.disconnect();
  }
}


/**
 * What a read_committed reader of the outputs sees: one prediction per input event (no two with
 * the same source offset) and per key the predictions of an uninterrupted replay, in order, with
 * no dedupe; one dead letter per bad record.
 */
async function expectExactlyOnce(t: Topics, harness = h, input = mixed): Promise<{ predictions: number; deadLetters: number }> {
  const out = await readToEnd(harness.brokers, t.outputTopic);
  const predictions = out.messages.map((m) => JSON.parse(m.value) as Prediction);
  const sources = new Set(predictions.map((p) => `${p.source!.partition}@${p.source!.offset}`));
  expect(sources.size, 'two predictions for one input event').toBe(predictions.length);
  expect(predictions.length).toBe(harness.events);
  // Per key in the order read: a key's predictions are in one output partition, in offset order.
  const byKey = new Map<string, Prediction[]>();
  for (const p of predictions) byKey.set(p.key, [...(byKey.get(p.key) ?? []), p]);
  expect(comparePredictions(byKey, harness.expected)).toBeLessThan(1e-5);
  const dead = await readToEnd(harness.brokers, t.dlqTopic);
  const deadSources = new Set(dead.messages.map((m) => (JSON.parse(m.value) as { source: { offset: string; partition: number } }).source).map((s) => `${s.partition}@${s.offset}`));
  expect(dead.messages.length).toBe(input.bad);
  expect(deadSources.size).toBe(input.bad);
  return { predictions: predictions.length, deadLetters: dead.messages.length };
}

/** Exactly once, throttled so that each test acts mid-stream (about 100 events/s). */
const exactlyOnce = (t: Topics, extra: Record<string, unknown> = {}): string => h.throttled(t, { guarantee: 'exactly-once', ...extra });

describe(`exactly once against ${inject('kafkaKind')}`, () => {
  it('five SIGKILLs inside open transactions (their records written) at random moments mid-stream, a restart after each: exactly one prediction per event, equal to replay', async () => {
    // Enough input (about 28,000 events) that the service always has events waiting: its
    // transactions then follow each other with little between them, and a kill at a random
    // moment mostly finds one open with records in it.
    const big = await ballHarness(400, 92);
    const input = withBadRecords(big);
    const t = freshTopics('eos-kill');
    big.produceFixture(t, input.file);
    const config = big.config(t, { guarantee: 'exactly-once', commitIntervalMs: 20, queueCapacity: 512, maxBatchSize: 128 });
    const rng = createRng(20261202);
    let service = spawnService(['--config', config]);
    const log: string[] = [];
    let logEnd: Awaited<ReturnType<typeof followLogEnd>> | undefined;
    let lastExit: number | null = null;
    try {
      for (let kill = 1; kill <= 5; kill++) {
        const before = await committed(t);
        await waitFor(`instance ${kill} to commit transactions`, async () => (await committed(t)) > before, 90_000);
        await sleep(rng.uniform(200, 1200));
        logEnd ??= await followLogEnd(t.outputTopic); // the service has made its topics by now
        // The kill lands inside an open transaction whose records are already in the log: when
        // /metrics says one is open (asked without pause), the instance is frozen (SIGSTOP) and
        // the log read; with records there that no read_committed reader sees, it is killed,
        // else let go for a random moment and tried again.
        const http = await httpAddressOf(service);
        for (let tries = 0; ; tries++) {
          expect(tries, 'moments with a transaction open and its records written').toBeLessThan(50);
          for (const end = Date.now() + 30_000; Date.now() < end; ) if (/^rnnstream_transactions_open [1-9]/m.test(await (await fetch(`${http}/metrics`)).text())) break;
          await sleep(rng.uniform(0, 40));
          service.kill('SIGSTOP');
          if (await logEnd.openRecords()) break;
          service.kill('SIGCONT');
        }
        service.kill('SIGKILL');
        await exited(service);
        writeFileSync(join(big.dir, `instance-${kill}.log`), service.output());
        log.push(`kill ${kill}: after ${before} committed events, inside a transaction with records written`);
        service = spawnService(['--config', config]);
      }
      expect(await committed(t), 'the stream ended before the last kill').toBeLessThan(big.events + input.bad);
      await waitFor('every event to be committed', async () => (await committed(t)) >= big.events + input.bad, 180_000);
    } finally {
      await logEnd?.stop();
      service.kill('SIGCONT');
      service.kill('SIGTERM');
      lastExit = await exited(service);
      writeFileSync(join(big.dir, 'instance-last.log'), service.output());
      process.stderr.write(`the instances' logs are in ${big.dir}\n`);
    }
    // After the finally block, so that a failure inside the loop is the one reported.
    expect(lastExit, 'the last instance exits cleanly on SIGTERM').toBe(0);
    const seen = await expectExactlyOnce(t, big, input);
    const written = await countUncommitted(t.outputTopic);
    expect(written).toBeGreaterThan(seen.predictions);
    process.stderr.write(`${log.join('\n')}\nexactly once after 5 kills inside open transactions: ${seen.predictions} predictions, ${seen.deadLetters} dead letters; ${written - seen.predictions} aborted prediction records never visible\n`);
  }, 600_000);

  it('a zombie (SIGSTOP past the session timeout, then SIGCONT) is fenced: none of its late writes is visible', async () => {
    const t = freshTopics('eos-zombie');
    h.produceFixture(t, mixed.file);
    const config = exactlyOnce(t);
    const a = spawnService(['--config', config]);
    const b = spawnService(['--config', config]);
    try {
      await waitFor('both instances to own partitions', async () => (assignedTo(a)?.length ?? 0) > 0 && (assignedTo(b)?.length ?? 0) > 0, 60_000);
      await waitFor('some transactions committed', async () => (await committed(t)) > 200, 60_000);
      a.kill('SIGSTOP');
      // Past the session timeout (6 s) the group moves a's partitions to b, which fences a's producers.
      await waitFor('b to own every partition', async () => (assignedTo(b)?.length ?? 0) === 4, 60_000);
      const taken = await committed(t);
      await waitFor('b to commit on the taken partitions', async () => (await committed(t)) > taken + 100, 60_000);
      a.kill('SIGCONT');
      await waitFor('every event to be committed', async () => (await committed(t)) >= h.events + mixed.bad, 180_000);
      // a woke up with outputs of partitions it no longer owned: its transaction was fenced.
      await waitFor("a's fenced transaction", async () => /old epoch|fenced/.test(a.output()), 30_000);
    } finally {
      a.kill('SIGCONT');
      a.kill('SIGTERM');
      b.kill('SIGTERM');
      await Promise.all([exited(a), exited(b)]);
    }
    await expectExactlyOnce(t);
  }, 400_000);

  it.skipIf(!clusterDir)('a broker killed mid-transaction (the leader of an output partition), restarted 10 s later: exactly once', async () => {
    const t = freshTopics('eos-broker');
    h.produceFixture(t, mixed.file);
    const service = spawnService(['--config', exactlyOnce(t)]);
    let victim: number | undefined;
    let exit: number | null = null;
    try {
      await waitFor('some transactions committed', async () => (await committed(t)) > 200, 60_000);
      victim = (await partitionLeaders(h.brokers, t.outputTopic)).get(0)!;
      brokerControl(clusterDir, 'kill', victim);
      await sleep(10_000);
      brokerControl(clusterDir, 'restart', victim);
      victim = undefined;
      await waitFor('every event to be committed', async () => (await committed(t)) >= h.events + mixed.bad, 180_000);
      expect(service.exitCode, service.output().slice(-3000)).toBeNull();
    } finally {
      if (victim !== undefined) brokerControl(clusterDir, 'restart', victim);
      service.kill('SIGTERM');
      exit = await exited(service);
      const log = join(h.dir, `${t.group}.log`);
      writeFileSync(log, service.output());
      process.stderr.write(`the instance's log is in ${log}\n`);
    }
    // After the finally block, so that a failure inside it is the one reported.
    expect(exit, 'the instance exits cleanly on SIGTERM').toBe(0);
    await expectExactlyOnce(t);
  }, 400_000);
});
