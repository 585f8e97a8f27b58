/**
 * Durable state on a real broker: the service creates its changelog compacted and partitioned
 * like the input, refuses one that is not, and restores from a changelog the broker has
 * actually compacted (offset gaps where the cleaner removed superseded records).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/observability/logger.js';
import { resolveServiceConfig } from '../src/service/config.js';
import { startService } from '../src/service/run.js';
import { ballHarness, type BallHarness } from './support/harness.js';
import { exited, freshTopics, kafkaClient, readToEnd, spawnService, splitFixture, topicSize, waitFor, type Topics } from './support/kafka.js';
import kafkajs from 'kafkajs';

const { ConfigResourceTypes } = kafkajs;

let h: BallHarness;
beforeAll(async () => {
  h = await ballHarness();
}, 60_000);

async function topicConfig(t: string, name: string): Promise<string | undefined> {
  const admin = kafkaClient(h.brokers).admin();
  await admin.connect();
  try {
    const d = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: t, configNames: [name] }] });
    return d.resources[0]?.configEntries.find((e) => e.configName === name)?.configValue;
  } finally {
    await admin.disconnect();
  }
}

async function createTopic(topic: string, numPartitions: number, configEntries: { name: string; value: string }[] = []): Promise<void> {
  const admin = kafkaClient(h.brokers).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions, configEntries }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

const start = (t: Topics) =>
  startService(resolveServiceConfig({ env: {}, flags: { ...t, pipeline: 'ball-direction', brokers: h.brokers.split(','), backend: 'onnx', http: { port: 0 }, sessionTimeoutMs: 6000 } }), silentLogger);

describe('the state changelog on a real broker', () => {
  it('is created compacted, with as many partitions as the input topic', async () => {
    const t = freshTopics('created');
    await createTopic(t.inputTopic, 3);
    const service = await start(t);
    await service.stop();
    expect(await topicConfig(t.changelogTopic, 'cleanup.policy')).toBe('compact');
    const admin = kafkaClient(h.brokers).admin();
    await admin.connect();
    const { topics } = await admin.fetchTopicMetadata({ topics: [t.changelogTopic, t.outputTopic, t.dlqTopic] }).finally(() => admin.disconnect());
    for (const topic of topics) expect(topic.partitions, topic.name).toHaveLength(3);
  });

  it('refuses an existing changelog that is not compacted, or is partitioned unlike the input', async () => {
    const deleting = freshTopics('not-compacted');
    await createTopic(deleting.inputTopic, 4);
    await createTopic(deleting.changelogTopic, 4, [{ name: 'cleanup.policy', value: 'delete' }]);
    await expect(start(deleting)).rejects.toThrow(`changelog topic ${deleting.changelogTopic} has cleanup.policy=delete, expected compact`);

    const misPartitioned = freshTopics('mis-partitioned');
    await createTopic(misPartitioned.inputTopic, 4);
    await createTopic(misPartitioned.changelogTopic, 2, [{ name: 'cleanup.policy', value: 'compact' }]);
    await expect(start(misPartitioned)).rejects.toThrow(`changelog topic ${misPartitioned.changelogTopic} has 2 partitions, but the input topic ${misPartitioned.inputTopic} has 4`);
  });

  it('restores from a changelog the broker has compacted: after kill -9 and a restart, the predictions equal an uninterrupted replay', async () => {
    const t = freshTopics('compacted');
    // Segments roll every 100 ms and the cleaner takes any dirt, so superseded state records
    // are removed while the test watches; the changelog is written every 50 ms, many times a key
    // (throttled: the run lasts seconds, not the fraction of one it takes at full speed).
    const config = h.throttled(t, {
      commitIntervalMs: 50,
      changelogTopicConfig: { 'segment.ms': '100', 'min.cleanable.dirty.ratio': '0.01', 'min.compaction.lag.ms': '0', 'delete.retention.ms': '100' },
    });
    const [first, second] = splitFixture(h.fixture, 0.5);
    h.produceFixture(t, first);
    const half = await topicSize(h.brokers, t.inputTopic);

    const before = spawnService(['--config', config]);
    let compacted = { records: 0, spanned: 0 };
    try {
      await waitFor('the first half predicted', async () => (await topicSize(h.brokers, t.outputTopic)) >= half, 90_000);
      await waitFor(
        'the broker to compact the changelog',
        async () => {
          const c = await readToEnd(h.brokers, t.changelogTopic);
          compacted = { records: c.messages.length, spanned: c.offsetsSpanned };
          return c.messages.length < c.offsetsSpanned;
        },
        90_000,
      );
    } finally {
      before.kill('SIGKILL');
      await exited(before);
    }
    expect(compacted.records).toBeLessThan(compacted.spanned);

    h.produceFixture(t, second);
    const after = spawnService(['--config', config]);
    try {
      await waitFor('every event to have a prediction', async () => (await h.distinctPredictions(t)) === h.events, 90_000);
    } finally {
      after.kill('SIGTERM');
      expect(await exited(after)).toBe(0);
    }
    await h.expectOutputEqualsReplay(t);
    // The restart really restored state (it did not replay the input from the start).
    const restores = after.output().split('\n').filter((l) => l.includes('"msg":"state restored"')).map((l) => JSON.parse(l) as { keys: number; messages: number });
    expect(restores.reduce((n, r) => n + r.keys, 0), after.output().slice(-2000)).toBeGreaterThan(0);
  }, 240_000);
});
