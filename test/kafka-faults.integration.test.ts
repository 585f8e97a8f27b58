/**
 * Faults and bad input on a real broker: an oversized input that is not UTF-8 and a key too long
 * to be one become bounded dead letters while the stream goes on; a broker outage shows in
 * /healthz and /readyz and does not stop SIGTERM from ending the process in time; a start with
 * no reachable broker is one line and exit code 1.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { ConfigResourceTypes } from 'kafkajs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { projectPath } from '../src/paths.js';
import { cli } from './support/cli.js';
import { ballHarness, type BallHarness } from './support/harness.js';
import { brokerControl, comparePredictions, kafkaClient, readToEnd, dedupeByKey, exited, freshTopics, healthOf, httpAddressOf, produce, readTopic, spawnService, topicSize, waitFor, type Prediction } from './support/kafka.js';

type KafkaBroker = typeof import('../scripts/kafka-broker.mjs');

let h: BallHarness;
const frame = (ballId: string, i: number) => JSON.stringify({ ballId, frame: i, t: i / 30, x: 0.1 * i, y: 0.5 });

/** Sets a topic's max.message.bytes and waits until the broker reports it. */
async function lowerMaxMessageBytes(brokers: string, topic: string, bytes: number): Promise<void> {
  const admin = kafkaClient(brokers).admin();
  await admin.connect();
  try {
    await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'max.message.bytes', value: String(bytes) }] }] });
    await waitFor(`${topic}'s max.message.bytes to be ${bytes}`, async () => {
      const d = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }] });
      return d.resources[0]?.configEntries[0]?.configValue === String(bytes);
    });
  } finally {
    await admin.disconnect();
  }
}

/** A counter's value from /metrics. */
async function metric(http: string, name: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? NaN : Number(line.slice(name.length + 1));
}
beforeAll(async () => {
  h = await ballHarness();
}, 60_000);

describe('faults and bad input on a real broker', () => {
  it('a 900 KB input of \\xff bytes and a 1000-byte key become bounded dead letters; the good events around them are predicted', async () => {
    const t = freshTopics('oversized');
    const longKey = 'k'.repeat(1000);
    await produce(h.brokers, t.inputTopic, [
      { key: 'b-good', value: frame('b-good', 0) },
      { key: 'b-bin', value: Buffer.alloc(900_000, 0xff) },
      { key: 'b-long', value: frame(longKey, 0) },
      { key: 'b-good', value: frame('b-good', 1) },
    ]);
    const service = spawnService(['--config', h.config(t)]);
    try {
      await httpAddressOf(service); // the service has created its topics
      const dead = await readTopic(h.brokers, t.dlqTopic, 2);
      const predictions = await readTopic(h.brokers, t.outputTopic, 2);
      expect(predictions.map((m) => m.key)).toEqual(['b-good', 'b-good']);
      const bin = dead.find((m) => m.key === 'b-bin')!;
      const record = JSON.parse(bin.value) as { reason: string; rawBytes: number; rawBase64: string; rawTruncated: boolean; rawSha256: string };
      expect(record.reason).toBe('not valid UTF-8');
      expect([record.rawBytes, record.rawTruncated, Buffer.from(record.rawBase64, 'base64').length]).toEqual([900_000, true, 64 * 1024]);
      expect(bin.value.length).toBeLessThan(100_000);
      const long = JSON.parse(dead.find((m) => m.key === 'b-long')!.value) as { reason: string };
      expect(long.reason).toBe('key too long: 1000 bytes (ballId), the limit is 256');
    } finally {
      service.kill('SIGTERM');
      await exited(service);
    }
    expect(service.exitCode, service.output().slice(-2000)).toBe(0);
  }, 120_000);

  it('a dead letter the broker refuses (its topic\'s max.message.bytes lowered while the service runs) is replaced by a minimal one, and the stream goes on', async () => {
    const t = freshTopics('refused');
    const service = spawnService(['--config', h.config(t)]);
    try {
      const http = await httpAddressOf(service); // the service has created its topics and read their limits
      await lowerMaxMessageBytes(h.brokers, t.dlqTopic, 2000);
      const big = `not json ${'x'.repeat(50_000)}`;
      await produce(h.brokers, t.inputTopic, [
        { key: 'k', value: frame('b-good', 0) },
        { key: 'k', value: big },
        { key: 'k', value: frame('b-good', 1) },
      ]);
      const predictions = await readTopic(h.brokers, t.outputTopic, 2);
      expect(predictions.map((m) => m.key)).toEqual(['b-good', 'b-good']);
      const [dead] = await readTopic(h.brokers, t.dlqTopic, 1);
      const record = JSON.parse(dead!.value) as { reason: string; source: { offset: string }; rawBytes: number; rawSha256: string; raw?: string; refused: { topic: string; bytes: number } };
      process.stderr.write(`refused: a ${record.refused.bytes}-byte dead letter replaced by a ${dead!.value.length}-byte one: ${record.reason}\n`);
      expect(record.reason).toMatch(/^not JSON: .* \(its dead letter refused by the broker: MESSAGE_TOO_LARGE: /);
      expect([record.source.offset, record.rawBytes, record.rawSha256, record.raw]).toEqual(['1', big.length, createHash('sha256').update(big).digest('hex'), undefined]);
      expect(record.refused.topic).toBe(t.dlqTopic);
      expect(record.refused.bytes).toBeGreaterThan(50_000);
      expect(await metric(http, 'rnnstream_records_refused_total')).toBe(1);
    } finally {
      service.kill('SIGTERM');
      await exited(service);
    }
    expect(service.exitCode, service.output().slice(-2000)).toBe(0);
  }, 120_000);

  it('exactly once: the transaction with a refused dead letter is aborted and sent again isolated, with the minimal dead letter in its place; nothing twice', async () => {
    const t = freshTopics('refused-eos');
    const service = spawnService(['--config', h.config(t, { guarantee: 'exactly-once' })]);
    const big = `not json ${'x'.repeat(50_000)}`;
    let refused = NaN;
    try {
      const http = await httpAddressOf(service);
      await lowerMaxMessageBytes(h.brokers, t.dlqTopic, 2000);
      await produce(h.brokers, t.inputTopic, [
        { key: 'k', value: frame('b-good', 0) },
        { key: 'k', value: big },
        { key: 'k', value: frame('b-good', 1) },
      ]);
      await readTopic(h.brokers, t.outputTopic, 2);
      await readTopic(h.brokers, t.dlqTopic, 1);
      refused = await metric(http, 'rnnstream_records_refused_total');
    } finally {
      service.kill('SIGTERM');
      await exited(service);
      // Kept for a failure's post-mortem (an exactly-once stall says nothing in the assertion).
      writeFileSync(join(h.dir, `${t.group}.log`), service.output());
      process.stderr.write(`refused (exactly once): the instance's log is in ${join(h.dir, `${t.group}.log`)}\n`);
    }
    expect(service.exitCode, service.output().slice(-2000)).toBe(0);
    expect(service.output()).toMatch(/the transaction was aborted and is sent again isolated/);
    const predictions = (await readToEnd(h.brokers, t.outputTopic)).messages;
    const dead = (await readToEnd(h.brokers, t.dlqTopic)).messages;
    expect(predictions.map((m) => m.key)).toEqual(['b-good', 'b-good']);
    expect(dead).toHaveLength(1);
    const record = JSON.parse(dead[0]!.value) as { reason: string; rawBytes: number; raw?: string; refused: { bytes: number } };
    process.stderr.write(`refused (exactly once): a ${record.refused.bytes}-byte dead letter replaced by a ${dead[0]!.value.length}-byte one\n`);
    expect(record.reason).toMatch(/\(its dead letter refused by the broker: MESSAGE_TOO_LARGE: /);
    expect([record.rawBytes, record.raw]).toEqual([big.length, undefined]);
    expect(refused).toBe(1);
  }, 120_000);

  it('when the minimal dead letter is refused too, the service stops with one line and exit code 1, committing nothing past the record', async () => {
    const t = freshTopics('refused-twice');
    const service = spawnService(['--config', h.config(t)]);
    try {
      await httpAddressOf(service);
      await lowerMaxMessageBytes(h.brokers, t.dlqTopic, 150);
      await produce(h.brokers, t.inputTopic, [
        { key: 'k', value: frame('b-good', 0) },
        { key: 'k', value: 'not json' },
        { key: 'k', value: frame('b-good', 1) },
      ]);
      expect(await exited(service)).toBe(1);
    } finally {
      service.kill('SIGKILL');
    }
    const lines = service.output().trim().split('\n').filter((l) => !l.startsWith('{'));
    expect(lines).toEqual([expect.stringMatching(new RegExp(`^rnnstream: producing to ${t.dlqTopic} failed and cannot succeed by retrying: MESSAGE_TOO_LARGE: The request included a message larger than`))]);
    const admin = kafkaClient(h.brokers).admin();
    await admin.connect();
    try {
      const [offsets] = await admin.fetchOffsets({ groupId: t.group, topics: [t.inputTopic] });
      // The refused record is offset 1 (one partition: one message key): nothing at or past it is committed.
      for (const p of offsets!.partitions) expect(Number(p.offset)).toBeLessThanOrEqual(1);
    } finally {
      await admin.disconnect();
    }
  }, 120_000);

  it('one decoder for both modes: the same bytes through replay and through the service give the same predictions and dead letters', async () => {
    const frame = (ballId: string, i: number) => JSON.stringify({ ballId, frame: i, t: i / 30, x: 0.1 * i, y: 0.5 - 0.05 * i });
    const lines: Buffer[] = [
      Buffer.from(`\ufeff${frame('b-1', 0)}`), // a byte-order mark: skipped by replay; produce sends the line without it
      Buffer.from(frame('b-2', 0)),
      Buffer.from(''), // blank: skipped by both
      Buffer.concat([Buffer.from('{"ballId":"b-'), Buffer.from([0xff, 0xfe]), Buffer.from('3","frame":0,"t":0,"x":0.1,"y":0.5}')]),
      Buffer.from(frame('b-1', 1)),
      Buffer.from('not json'),
      Buffer.from(frame('k'.repeat(300), 0)),
      Buffer.from(JSON.stringify({ ballId: 'b-2', frame: 1, t: 0.03, x: 'left', y: 0.5 })),
      Buffer.from(frame('b-2', 2)),
      Buffer.from(frame('b-1', 2)),
    ];
    const file = join(h.dir, 'same-bytes.jsonl');
    writeFileSync(file, Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
    const out = join(h.dir, 'same-bytes.predictions.jsonl');
    const dead = join(h.dir, 'same-bytes.dead.jsonl');
    const r = cli(['replay', '--pipeline', 'ball-direction', '--backend', 'onnx', '--input', file, '--out', out, '--dead-letters', dead, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { predictions: number; deadLettered: number; blankLines: number })).toMatchObject({ predictions: 5, deadLettered: 4, blankLines: 1 });
    const jsonLines = (f: string) => readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

    const t = freshTopics('samebytes');
    h.produceFixture(t, file);
    const service = spawnService(['--config', h.config(t)]);
    try {
      await httpAddressOf(service); // the service has created its topics
      const predictions = await readTopic(h.brokers, t.outputTopic, 5);
      const deadLetters = await readTopic(h.brokers, t.dlqTopic, 4);
      // Per key, the same predictions (probabilities to float32 precision).
      const replayed = new Map<string, Prediction[]>();
      for (const p of jsonLines(out) as unknown as Prediction[]) replayed.set(p.key, [...(replayed.get(p.key) ?? []), p]);
      expect(comparePredictions(dedupeByKey(predictions), replayed)).toBeLessThan(1e-6);
      // The same dead letters: reason, bytes and hash; only the source position differs (file:line, offset).
      const essence = (d: Record<string, unknown>) => JSON.stringify([d.reason, d.raw ?? null, d.rawBase64 ?? null, d.rawBytes, d.rawSha256]);
      expect(deadLetters.map((m) => essence(JSON.parse(m.value) as Record<string, unknown>)).sort()).toEqual(jsonLines(dead).map(essence).sort());
      expect(jsonLines(dead).map((d) => d.reason)).toEqual([
        'not valid UTF-8',
        expect.stringMatching(/^not JSON: /),
        'key too long: 300 bytes (ballId), the limit is 256',
        'x: Invalid input: expected number, received string',
      ]);
    } finally {
      service.kill('SIGTERM');
      await exited(service);
    }
  }, 120_000);

  it('a broker outage: /healthz degraded and /readyz 503 with the reason, and SIGTERM ends the process within shutdownTimeoutMs', async () => {
    const { startJarCluster } = (await import(projectPath('scripts', 'kafka-broker.mjs'))) as KafkaBroker;
    const cluster = await startJarCluster({ nodes: 1 });
    const brokers = cluster.values.KAFKA_BROKERS!;
    const t = freshTopics('outage');
    const shutdownTimeoutMs = 8000;
    let service: ReturnType<typeof spawnService> | undefined;
    try {
      const p = cli(['produce', '--pipeline', 'ball-direction', '--brokers', brokers, '--input', h.fixture, '--topic', t.inputTopic]);
      expect(p.code, p.stderr).toBe(0);
      service = spawnService(['--config', h.throttled(t, { brokers: brokers.split(','), stallTimeoutMs: 3000, healthCheckIntervalMs: 500, shutdownTimeoutMs })]);
      const http = await httpAddressOf(service);
      await waitFor('the first predictions', async () => (await topicSize(brokers, t.outputTopic)) > 50, 60_000);
      expect((await healthOf(http, '/readyz')).code).toBe(200);
      brokerControl(cluster.dir, 'kill', 1);
      const downAt = Date.now();
      // First "no fetch" (3 s, stallTimeoutMs), then the health check's "brokers unreachable" (5 s).
      await waitFor('/healthz to say the brokers are unreachable', async () => (await healthOf(http)).reasons.some((r) => r.startsWith('brokers unreachable')), 30_000);
      const live = await healthOf(http);
      const ready = await healthOf(http, '/readyz');
      process.stderr.write(`outage: degraded after ${((Date.now() - downAt) / 1000).toFixed(1)} s: ${live.reasons.join('; ')}\n`);
      expect([live.code, live.status]).toEqual([200, 'degraded']);
      expect(ready.code).toBe(503);
      const signalledAt = Date.now();
      service.kill('SIGTERM');
      const code = await exited(service);
      const seconds = (Date.now() - signalledAt) / 1000;
      process.stderr.write(`outage: SIGTERM to exit ${seconds.toFixed(1)} s, exit code ${code}\n`);
      expect(seconds).toBeLessThan(shutdownTimeoutMs / 1000 + 2);
      // Events were in flight with the broker gone: not flushed, so exit code 1, saying so.
      expect(code, service.output().slice(-2000)).toBe(1);
      expect(service.output()).toMatch(/not flushed; they were not committed and will be redelivered/);
    } finally {
      service?.kill('SIGKILL');
      cluster.stop();
    }
  }, 180_000);

  it('a start with no reachable broker is one line and exit code 1, no stack trace', async () => {
    const t = freshTopics('nobroker');
    const service = spawnService(['--config', h.config(t, { brokers: ['127.0.0.1:1'] })]);
    expect(await exited(service)).toBe(1);
    // kafkajs's own retries are log lines (JSON); the service's verdict is the one plain line.
    const lines = service.output().trim().split('\n').filter((l) => !l.startsWith('{'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^rnnstream: cannot reach the Kafka brokers: Connection error: connect ECONNREFUSED 127\.0\.0\.1:1 \(check the broker list/);
  }, 120_000);
});
