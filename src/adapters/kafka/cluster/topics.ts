/**
 * The service's topics, made and checked before it consumes anything (Kafka Streams does the
 * same for its internal topics):
 *
 * - the input topic, if missing, with the broker's `num.partitions`;
 * - the predictions and dead-letter topics, if missing, partitioned like the input;
 * - the state changelog, if missing, partitioned like the input (the state of input partition p
 *   is in changelog partition p) with `cleanup.policy=compact`, so the latest state of every key
 *   is kept for as long as the key lives, and nothing else is.
 *
 * - the models topic (`--models-topic`, hot swap), if one is named and missing: one partition,
 *   `cleanup.policy=compact` (the latest record per pipeline is kept: a restart serves it).
 *
 * An existing changelog (or models topic) that is not compacted, or whose partition count differs from the
 * input's, is refused: with `delete` the state is gone after `retention.ms`, and with other
 * partitions the state of a key would be restored by the wrong member. Replication is the
 * configured factor, or the broker's `default.replication.factor`.
 */
import kafkajs, { type Admin, type ITopicConfig } from 'kafkajs';
import { RnnStreamError } from '../../../core/errors.js';
import type { Logger } from '../../../observability/logger.js';
import { fetchCommittedOffsets } from '../consumer/committed-offsets.js';

// Node's CommonJS interop does not see this export by name; the package's default object has it.
const { ConfigResourceTypes } = kafkajs;

export class TopicSetupError extends RnnStreamError {
  override readonly name = 'TopicSetupError';
}

/**
 * What an operator reads when the input topic's partitions no longer match its changelog's.
 * State follows partitions: the murmur2 partition of a key changes with the partition count, so a
 * key that moved would find no state in its new partition's changelog, and its old state would
 * sit where nobody reads it. Kafka Streams refuses a repartitioned input for the same reason.
 */
export const INPUT_REPARTITIONED_HELP =
  'State follows partitions, and keys that moved to another partition cannot keep their state, so the service stops rather than serve them wrong ' +
  '(Kafka Streams refuses this too). To go on, start the service with a new changelog topic partitioned like the input ' +
  '(--changelog-topic <new name>: every key starts again from zero state), or see "When a topic changes under the service" in docs/operations.md';

export interface TopicPlan {
  readonly inputTopic: string;
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly changelogTopic: string;
  /** Replication of the topics created here; undefined: the broker's default.replication.factor. */
  readonly replicationFactor?: number | undefined;
  /** Extra topic configs for a changelog created here (e.g. segment.ms, min.compaction.lag.ms). */
  readonly changelogTopicConfig?: Readonly<Record<string, string>>;
  /** The consumer group: a missing changelog is made only if the group has committed nothing (see ensureTopics). */
  readonly group?: string;
  /** The hot swap's control topic, if any (see the module doc). */
  readonly modelsTopic?: string | undefined;
  /** Where shadow models' predictions go (hot swap), if anywhere: made like the output topic. */
  readonly shadowTopic?: string | undefined;
}

export interface TopicLayout {
  readonly inputPartitions: number;
  /** Dead letters of input partition p go to partition p modulo this. */
  readonly dlqPartitions: number;
  /**
   * The smallest `max.message.bytes` of the topics the service writes (output, DLQ, changelog):
   * the broker refuses a record batch above it, so no produce request may be larger.
   */
  readonly maxMessageBytes: number;
  /** Topics this call created. */
  readonly created: readonly string[];
}

/** The broker defaults that topics created here inherit. */
async function brokerDefaults(admin: Admin): Promise<{ partitions: number; replicationFactor: number }> {
  const { brokers } = await admin.describeCluster();
  const broker = brokers[0];
  if (!broker) throw new TopicSetupError('the cluster lists no brokers');
  const described = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.BROKER, name: String(broker.nodeId), configNames: ['num.partitions', 'default.replication.factor'] }],
  });
  const entries = described.resources[0]?.configEntries ?? [];
  const value = (name: string, fallback: number): number => {
    const v = Number(entries.find((e) => e.configName === name)?.configValue);
    return Number.isInteger(v) && v > 0 ? v : fallback;
  };
  // A replication factor above the cluster's size cannot be met; the broker would refuse it.
  return { partitions: value('num.partitions', 1), replicationFactor: Math.min(value('default.replication.factor', 1), brokers.length) };
}

async function partitionCounts(admin: Admin, topics: readonly string[]): Promise<Map<string, number>> {
  const existing = new Set(await admin.listTopics());
  const present = topics.filter((t) => existing.has(t));
  if (present.length === 0) return new Map();
  const { topics: metadata } = await admin.fetchTopicMetadata({ topics: present });
  return new Map(metadata.map((t) => [t.name, t.partitions.length]));
}

/** Kafka's default `max.message.bytes`, should a broker not say. */
const KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1048588;

/** The topics' `cleanup.policy` and `max.message.bytes` (the effective values, defaults included). */
/** How long a topic just made (by this instance or another) may stay unknown to the broker asked, and the wait between asks. */
const NEW_TOPIC_KNOWN_WITHIN_MS = 15_000;
const NEW_TOPIC_RETRY_MS = 200;

/**
 * topicConfigs, asked again while a broker does not know one of the topics yet: one made a
 * moment ago (by another instance starting beside this one, whose createTopics won the race)
 * reaches every broker's metadata a little later, and until then describeConfigs answers
 * UNKNOWN_TOPIC_OR_PARTITION ("This server does not host this topic-partition").
 */
async function topicConfigs(admin: Admin, topics: readonly string[]): Promise<Map<string, { cleanupPolicy: string; maxMessageBytes: number }>> {
  const deadline = Date.now() + NEW_TOPIC_KNOWN_WITHIN_MS;
  for (;;) {
    try {
      return await describeTopicConfigs(admin, topics);
    } catch (err) {
      if ((err as { type?: string }).type !== 'UNKNOWN_TOPIC_OR_PARTITION' || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, NEW_TOPIC_RETRY_MS));
    }
  }
}

async function describeTopicConfigs(admin: Admin, topics: readonly string[]): Promise<Map<string, { cleanupPolicy: string; maxMessageBytes: number }>> {
  const described = await admin.describeConfigs({
    includeSynonyms: false,
    resources: topics.map((name) => ({ type: ConfigResourceTypes.TOPIC, name, configNames: ['cleanup.policy', 'max.message.bytes'] })),
  });
  return new Map(
    described.resources.map((r) => {
      const value = (name: string): string | undefined => r.configEntries.find((e) => e.configName === name)?.configValue;
      const maxMessageBytes = Number(value('max.message.bytes'));
      return [r.resourceName, { cleanupPolicy: value('cleanup.policy') ?? 'delete', maxMessageBytes: Number.isInteger(maxMessageBytes) && maxMessageBytes > 0 ? maxMessageBytes : KAFKA_DEFAULT_MAX_MESSAGE_BYTES }];
    }),
  );
}

/**
 * A changelog that is missing while the group has committed input offsets held state that is
 * gone (deleted under a running service, say). Making an empty one would restart every key from
 * zero state without a word; the operator decides instead.
 */
async function refuseLostChangelog(admin: Admin, plan: TopicPlan, counts: ReadonlyMap<string, number>): Promise<void> {
  if (counts.has(plan.changelogTopic) || !counts.has(plan.inputTopic) || plan.group === undefined) return;
  const committed = await fetchCommittedOffsets(admin, { group: plan.group, topic: plan.inputTopic });
  if (committed.size === 0) return;
  throw new TopicSetupError(
    `changelog topic ${plan.changelogTopic} does not exist, but group ${plan.group} has committed offsets on ${plan.inputTopic} (${committed.size} partition(s)): ` +
      'the state of its keys is lost (was the changelog deleted?), and an empty changelog would restart every key from zero state without a word. ' +
      `To accept that, create it yourself (kafka-topics --create --topic ${plan.changelogTopic} --partitions ${counts.get(plan.inputTopic)} --config cleanup.policy=compact) and start again; ` +
      'or start from the beginning with a new --group',
  );
}

/** Creates what is missing and checks the changelog; throws TopicSetupError with what to change. */
export async function ensureTopics(admin: Admin, plan: TopicPlan, logger: Logger): Promise<TopicLayout> {
  const all = [plan.inputTopic, plan.outputTopic, plan.dlqTopic, plan.changelogTopic, ...(plan.shadowTopic !== undefined ? [plan.shadowTopic] : [])];
  const counts = await partitionCounts(admin, all);
  await refuseLostChangelog(admin, plan, counts);
  const missing = all.filter((t) => !counts.has(t));
  const created: string[] = [];
  if (missing.length > 0) {
    const defaults = await brokerDefaults(admin);
    const replicationFactor = plan.replicationFactor ?? defaults.replicationFactor;
    const inputPartitions = counts.get(plan.inputTopic) ?? defaults.partitions;
    const topics: ITopicConfig[] = missing.map((topic) => ({
      topic,
      numPartitions: inputPartitions,
      replicationFactor,
      ...(topic === plan.changelogTopic
        ? { configEntries: Object.entries({ ...plan.changelogTopicConfig, 'cleanup.policy': 'compact' }).map(([name, value]) => ({ name, value })) }
        : {}),
    }));
    let made: boolean;
    try {
      // false when another instance created them first: fine, they are checked below.
      made = await admin.createTopics({ topics, waitForLeaders: true });
    } catch (err) {
      throw new TopicSetupError(`cannot create topics ${missing.join(', ')} (replication factor ${replicationFactor}, ${inputPartitions} partitions): ${(err as Error).message}`, { cause: err });
    }
    if (made) {
      created.push(...missing);
      logger.info({ topics: missing, partitions: inputPartitions, replicationFactor }, 'topics created');
    }
    for (const [t, n] of await partitionCounts(admin, missing)) counts.set(t, n);
  }
  const inputPartitions = counts.get(plan.inputTopic)!;
  const changelogPartitions = counts.get(plan.changelogTopic)!;
  if (changelogPartitions !== inputPartitions) {
    throw new TopicSetupError(
      `changelog topic ${plan.changelogTopic} has ${changelogPartitions} partitions, but the input topic ${plan.inputTopic} has ${inputPartitions}: ` +
        `the changelog must be partitioned like the input. ${INPUT_REPARTITIONED_HELP}`,
    );
  }
  const written = [plan.outputTopic, plan.dlqTopic, plan.changelogTopic];
  const configs = await topicConfigs(admin, written);
  const policy = configs.get(plan.changelogTopic)?.cleanupPolicy ?? 'delete';
  if (policy !== 'compact') {
    throw new TopicSetupError(
      `changelog topic ${plan.changelogTopic} has cleanup.policy=${policy}, expected compact: with deletion the state of keys is lost after retention.ms ` +
        `(set it with: kafka-configs --alter --entity-type topics --entity-name ${plan.changelogTopic} --add-config cleanup.policy=compact)`,
    );
  }
  const maxMessageBytes = Math.min(...written.map((t) => configs.get(t)?.maxMessageBytes ?? KAFKA_DEFAULT_MAX_MESSAGE_BYTES));
  if (plan.modelsTopic !== undefined && (await ensureModelsTopic(admin, { ...plan, modelsTopic: plan.modelsTopic }, logger))) created.push(plan.modelsTopic);
  return { inputPartitions, dlqPartitions: counts.get(plan.dlqTopic)!, created, maxMessageBytes };
}

/** Makes the models topic if missing (one partition, compacted) and refuses one that is not compacted; true when made here. */
async function ensureModelsTopic(admin: Admin, plan: TopicPlan & { readonly modelsTopic: string }, logger: Logger): Promise<boolean> {
  const topic = plan.modelsTopic;
  let made = false;
  if (!(await partitionCounts(admin, [topic])).has(topic)) {
    const replicationFactor = plan.replicationFactor ?? (await brokerDefaults(admin)).replicationFactor;
    try {
      // false: another instance made it first (checked below like any existing one).
      made = await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] }], waitForLeaders: true });
    } catch (err) {
      throw new TopicSetupError(`cannot create the models topic ${topic} (replication factor ${replicationFactor}): ${(err as Error).message}`, { cause: err });
    }
    if (made) logger.info({ topic, replicationFactor }, 'models topic created (compacted, one partition)');
  }
  const policy = (await topicConfigs(admin, [topic])).get(topic)?.cleanupPolicy ?? 'delete';
  if (policy !== 'compact') {
    throw new TopicSetupError(
      `models topic ${topic} has cleanup.policy=${policy}, expected compact: with deletion the record naming the model served is gone after retention.ms, and a restart would serve --model ` +
        `(set it with: kafka-configs --alter --entity-type topics --entity-name ${topic} --add-config cleanup.policy=compact)`,
    );
  }
  return made;
}
