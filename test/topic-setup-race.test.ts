/**
 * ensureTopics when instances start together: another instance's createTopics wins the race, and
 * the broker asked does not know the topics yet for a moment (describeConfigs answers
 * UNKNOWN_TOPIC_OR_PARTITION). Each instance must wait for them, not stop; and only the instance
 * that made a topic says it did. A fake admin plays the broker; the real race is in the
 * three-instance hot-swap test.
 */
import type { Admin } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ensureTopics } from '../src/adapters/kafka/cluster/topics.js';
import { silentLogger } from '../src/observability/logger.js';

const plan = { inputTopic: 'in', outputTopic: 'out', dlqTopic: 'dlq', changelogTopic: 'cl', modelsTopic: 'models' };

/** A broker where the topics exist after the first createTopics, but stay unknown to describeConfigs for `unknownFor` asks. */
function lateBroker(options: { createdByAnother: boolean; unknownFor: number; policy?: string }): Admin & { describes: number } {
  const topics = new Set<string>();
  let unknown = options.unknownFor;
  const admin = {
    describes: 0,
    listTopics: async () => [...topics],
    fetchTopicMetadata: async ({ topics: names }: { topics: string[] }) => ({ topics: names.map((name) => ({ name, partitions: name === 'models' ? [{}] : [{}, {}, {}, {}] })) }),
    describeCluster: async () => ({ brokers: [{ nodeId: 1 }] }),
    createTopics: async ({ topics: made }: { topics: { topic: string }[] }) => {
      for (const t of made) topics.add(t.topic);
      return !options.createdByAnother;
    },
    describeConfigs: async ({ resources }: { resources: { type: number; name: string }[] }) => {
      admin.describes++;
      if (resources[0]!.type === 4) return { resources: [{ resourceName: '1', configEntries: [{ configName: 'num.partitions', configValue: '4' }, { configName: 'default.replication.factor', configValue: '1' }] }] };
      if (unknown-- > 0) throw Object.assign(new Error('This server does not host this topic-partition'), { type: 'UNKNOWN_TOPIC_OR_PARTITION' });
      return {
        resources: resources.map((r) => ({ resourceName: r.name, configEntries: [{ configName: 'cleanup.policy', configValue: r.name === 'cl' ? 'compact' : r.name === 'models' ? (options.policy ?? 'compact') : 'delete' }] })),
      };
    },
  };
  return admin as unknown as Admin & { describes: number };
}

describe('topic set-up beside other instances', () => {
  it('waits while the broker asked does not know the topics another instance made, and does not claim to have made them', async () => {
    const admin = lateBroker({ createdByAnother: true, unknownFor: 3 });
    const layout = await ensureTopics(admin, plan, silentLogger);
    expect(layout.inputPartitions).toBe(4);
    expect(layout.created).toEqual([]);
    expect(admin.describes).toBeGreaterThan(3);
  });

  it('names the topics it made itself', async () => {
    const layout = await ensureTopics(lateBroker({ createdByAnother: false, unknownFor: 0 }), plan, silentLogger);
    expect(layout.created).toEqual(['in', 'out', 'dlq', 'cl', 'models']);
  });

  it('still refuses a models topic that is not compacted, with the command that fixes it', async () => {
    await expect(ensureTopics(lateBroker({ createdByAnother: true, unknownFor: 0, policy: 'delete' }), plan, silentLogger)).rejects.toThrow(/models topic models has cleanup.policy=delete, expected compact[\s\S]*kafka-configs --alter/);
  });
});
