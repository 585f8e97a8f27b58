/**
 * The Kafka service against a real broker (see kafka-global-setup.ts: KAFKA_BROKERS, a
 * testcontainers Kafka, or Apache Kafka's jar broker): end to end, kill -9, two instances, bad
 * messages. Failover, compaction, rebalancing and security have files of their own.
 */
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { silentLogger } from '../src/observability/logger.js';
import { resolveServiceConfig } from '../src/service/config.js';
import { startService } from '../src/service/run.js';
import { ballHarness, type BallHarness } from './support/harness.js';
import {
  comparePredictions,
  dedupeByKey,
  exited,
  freshTopics,
  produce,
  readTopic,
  spawnService,
  topicSize,
  waitFor,
  type Prediction,
  type Topics,
} from './support/kafka.js';

let h: BallHarness;
let brokers: string;
let events: number;
let expected: Map<string, Prediction[]>;

beforeAll(async () => {
  h = await ballHarness();
  ({ brokers, events, expected } = h);
}, 60_000);

const throttled = (t: Topics): string => h.throttled(t);
const distinctPredictions = (t: Topics): Promise<number> => h.distinctPredictions(t);
const produceFixture = async (t: Topics): Promise<void> => h.produceFixture(t);

describe(`rnnstream run against ${inject('kafkaKind')}`, () => {
  it('end to end: produce + run gives exactly the predictions replay gives', async () => {
    const t = freshTopics('e2e');
    await produceFixture(t);
    const service = await startService(
      resolveServiceConfig({ env: {}, flags: { ...t, pipeline: 'ball-direction', brokers: brokers.split(','), backend: 'onnx', http: { port: 0 }, sessionTimeoutMs: 6000 } }),
      silentLogger,
    );
    try {
      const out = await readTopic(brokers, t.outputTopic, events);
      expect(out).toHaveLength(events);
      // Output records are keyed like the input and carry their source position.
      for (const m of out) expect(m.key).toBe((JSON.parse(m.value) as Prediction).key);
      expect(comparePredictions(dedupeByKey(out), expected)).toBeLessThan(1e-5);
      const metrics = await (await fetch(`${service.httpAddress}/metrics`)).text();
      expect(metrics).toMatch(new RegExp(`rnnstream_predictions_out_total ${events}`));
      expect(metrics).toContain('rnnstream_prequential_accuracy');
      expect((await fetch(`${service.httpAddress}/healthz`)).status).toBe(200);
    } finally {
      await service.stop();
    }
  });

  it('kill -9 mid-stream, then a restart: every event predicted, and after dropping duplicates the predictions equal replay', async () => {
    const t = freshTopics('crash');
    await produceFixture(t);
    const config = throttled(t);
    const first = spawnService(['--config', config]);
    await waitFor('a quarter of the predictions', async () => (await topicSize(brokers, t.outputTopic)) >= events / 4);
    first.kill('SIGKILL');
    await exited(first);
    const before = await topicSize(brokers, t.outputTopic);
    expect(before).toBeLessThan(events); // it really died mid-stream

    const second = spawnService(['--config', config]);
    try {
      await waitFor('every event to have a prediction', async () => (await distinctPredictions(t)) === events, 90_000);
    } finally {
      second.kill('SIGTERM');
      expect(await exited(second)).toBe(0);
    }
    const out = await readTopic(brokers, t.outputTopic, await topicSize(brokers, t.outputTopic));
    expect(comparePredictions(dedupeByKey(out), expected)).toBeLessThan(1e-5);
    expect(second.output()).not.toMatch(/pipeline failed/);
  }, 180_000);

  it('two instances in one group, one stopped mid-stream: the survivor takes over with restored state', async () => {
    const t = freshTopics('pair');
    await produceFixture(t);
    const config = throttled(t);
    const a = spawnService(['--config', config]);
    const b = spawnService(['--config', config]);
    try {
      await waitFor('both instances to be working', async () => (await topicSize(brokers, t.outputTopic)) >= events / 5, 60_000);
      a.kill('SIGTERM');
      expect(await exited(a)).toBe(0);
      await waitFor('the survivor to finish every partition', async () => (await distinctPredictions(t)) === events, 90_000).catch((err: Error) => {
        throw new Error(`${err.message}; survivor's last log lines:\n${b.output().split('\n').slice(-25).join('\n')}`);
      });
    } finally {
      a.kill('SIGKILL');
      b.kill('SIGTERM');
      await exited(b);
    }
    const out = await readTopic(brokers, t.outputTopic, await topicSize(brokers, t.outputTopic));
    expect(comparePredictions(dedupeByKey(out), expected)).toBeLessThan(1e-5);
    expect(b.output()).toMatch(/"msg":"state restored"/);
  }, 180_000);

  it('dead-letters every kind of bad message with its reason and source, and predicts every good one (in-process producer)', async () => {
    const t = freshTopics('mixed');
    const good = [0.1, 0.2, 0.3, 0.4, 0.5].map((x, i) => ({ key: 'b-good', value: JSON.stringify({ ballId: 'b-good', frame: i, t: i / 30, x, y: 0.5 }) }));
    const bad = [
      { key: 'b-1', value: 'not json at all', why: /^not JSON/ },
      { key: 'b-2', value: JSON.stringify({ ballId: 'b-2', frame: 0, t: 0, x: 'left', y: 0.5 }), why: /^x: Invalid input: expected number, received string/ },
      { key: 'b-3', value: '{"ballId":"b-3","frame":0,"t":0,"x":NaN,"y":0.5}', why: /^not JSON/ },
      { key: 'b-4', value: '{"ballId":"b-4","frame":0,"t":0,"x":1e999,"y":0.5}', why: /^x: .*Infinity/ },
      { key: null, value: JSON.stringify({ frame: 0, t: 0, x: 0.1, y: 0.5 }), why: /^ballId: Invalid input: expected string, received undefined/ },
      { key: 'b-6', value: JSON.stringify({ ballId: 6, frame: 0, t: 0, x: 0.1, y: 0.5 }), why: /^ballId: Invalid input: expected string, received number/ },
      { key: 'b-7', value: JSON.stringify({ ballId: 'b-7', frame: 0, t: 0, x: 0.1, y: 0.5, pad: 'x'.repeat(5000) }), why: /^message too large: \d+ bytes, the limit is 4096/ },
      { key: 'b-8', value: Buffer.from([0xff, 0xfe, 0xfd]), why: /^not valid UTF-8/ },
    ];
    const mixed = [...good.slice(0, 2), ...bad.slice(0, 4), ...good.slice(2), ...bad.slice(4)];
    await produce(brokers, t.inputTopic, mixed.map(({ key, value }) => ({ key, value })));
    // The in-process producer (producerThread: false) here; the other tests use the producer thread.
    const service = await startService(
      resolveServiceConfig({ env: {}, flags: { ...t, pipeline: 'ball-direction', brokers: brokers.split(','), backend: 'onnx', maxMessageBytes: 4096, producerThread: false, http: { port: 0 } } }),
      silentLogger,
    );
    try {
      const dead = await readTopic(brokers, t.dlqTopic, bad.length);
      const predictions = await readTopic(brokers, t.outputTopic, good.length);
      expect(predictions.map((m) => (JSON.parse(m.value) as Prediction).seq).sort()).toEqual([1, 2, 3, 4, 5]);
      const records = dead.map((m) => ({ ...(JSON.parse(m.value) as { reason: string; source: { offset: string }; raw?: string; rawBase64?: string }), key: m.key, header: m.headers['rnnstream-reason'] }));
      for (const b of bad) {
        const r = records.find((x) => x.key === b.key);
        expect(r, `the dead letter of message key ${b.key}`).toBeDefined();
        expect(r!.reason).toMatch(b.why);
        expect(r!.header).toBe(r!.reason.slice(0, 200));
        expect(r!.key).toBe(b.key);
        expect(r!.source.offset).toMatch(/^\d+$/);
        if (typeof b.value === 'string') expect(r!.raw).toBe(b.value);
        else expect(Buffer.from(r!.rawBase64!, 'base64')).toEqual(b.value);
      }
    } finally {
      await service.stop();
    }
  });
});
