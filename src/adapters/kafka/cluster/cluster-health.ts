/**
 * What the broker side looks like from the service, checked every few seconds: whether the
 * cluster answers metadata at all, whether a broker that was in the cluster has left it, and
 * whether any partition of the service's topics is offline (no leader) or under-replicated
 * (fewer in-sync replicas than replicas: a broker is down or behind, and one more failure could
 * stop writes at min.insync.replicas). kafkajs hides broker failures behind reconnects and
 * retries, which is right for the data path and wrong for an operator, who must hear of them.
 *
 * It also watches the service's own topics for changes made under it (topics.ts checked them at
 * start-up): a topic deleted, the input or changelog given other partitions, the changelog no
 * longer compacted. Those are `broken`: the service cannot go on correctly, and stops.
 */
import kafkajs, { type Admin } from 'kafkajs';
import { createSerial, type Serial } from './serial.js';
import { INPUT_REPARTITIONED_HELP } from './topics.js';

// Node's CommonJS interop does not see this export by name; the package's default object has it.
const { ConfigResourceTypes } = kafkajs;

/** The service's topics as they were at start-up. */
export interface WatchedTopics {
  readonly inputTopic: string;
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly changelogTopic: string;
  /** The input's (and so the changelog's) partition count at start-up. */
  readonly inputPartitions: number;
}

/** One check's verdict. */
export interface ClusterCheck {
  /** False when the cluster did not answer metadata at all (then `problems` says why). */
  readonly reachable: boolean;
  /** Empty when all is well; otherwise one line per problem, for /healthz and the logs. */
  readonly problems: readonly string[];
  /**
   * What the service cannot go on with: its topics changed under it (deleted, repartitioned, the
   * changelog no longer compacted). One line each, saying what changed and what to do.
   */
  readonly broken: readonly string[];
}

export interface ClusterHealth extends ClusterCheck {
  readonly checkedAt: number;
}

const MAX_LISTED = 5;

/** Sorted, so that the same problems read the same from one check to the next. */
function listed(what: string, items: readonly string[]): string {
  const shown = [...items].sort().slice(0, MAX_LISTED).join(', ');
  return `${items.length} ${what}: ${shown}${items.length > MAX_LISTED ? ', …' : ''}`;
}

/** What changed in the service's topics since start-up, judged from one metadata answer and the changelog's config. */
async function brokenTopics(admin: Admin, watched: WatchedTopics, existing: ReadonlySet<string>, partitionCounts: ReadonlyMap<string, number>): Promise<string[]> {
  const broken: string[] = [];
  const roles: [string, string][] = [
    [watched.inputTopic, 'input'],
    [watched.outputTopic, 'predictions'],
    [watched.dlqTopic, 'dead-letter'],
    [watched.changelogTopic, 'changelog'],
  ];
  for (const [topic, role] of roles) {
    if (!existing.has(topic)) broken.push(`the ${role} topic ${topic} no longer exists (deleted while the service ran); nothing more is committed. The service never re-creates a topic by producing to it: restart it to have it made again${role === 'changelog' ? ' (it refuses while the group has committed offsets and no changelog, because the state is lost)' : ''}`);
  }
  for (const [topic, role] of [roles[0]!, roles[3]!]) {
    const n = partitionCounts.get(topic);
    if (n !== undefined && n !== watched.inputPartitions) {
      broken.push(`the ${role} topic ${topic} now has ${n} partitions; it had ${watched.inputPartitions} when the service started. ${INPUT_REPARTITIONED_HELP}`);
    }
  }
  if (existing.has(watched.changelogTopic)) {
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: watched.changelogTopic, configNames: ['cleanup.policy'] }],
    });
    const policy = described.resources[0]?.configEntries.find((e) => e.configName === 'cleanup.policy')?.configValue ?? 'delete';
    if (!policy.split(',').includes('compact')) {
      broken.push(`the changelog topic ${watched.changelogTopic} has cleanup.policy=${policy} now, not compact: the state of keys would be deleted after retention.ms; nothing more is committed (set it back with kafka-configs --alter --entity-type topics --entity-name ${watched.changelogTopic} --add-config cleanup.policy=compact, then restart)`);
    }
  }
  return broken;
}

/** One check: what is wrong now, judged from one describeCluster, one topic list and one metadata request. */
export async function checkCluster(admin: Admin, watched: WatchedTopics, knownBrokers: Map<number, string>): Promise<ClusterCheck> {
  const problems: string[] = [];
  let cluster: Awaited<ReturnType<Admin['describeCluster']>>;
  try {
    cluster = await admin.describeCluster();
  } catch (err) {
    return { reachable: false, problems: [`brokers unreachable: ${(err as Error).message}`], broken: [] };
  }
  const live = new Set(cluster.brokers.map((b) => b.nodeId));
  for (const b of cluster.brokers) knownBrokers.set(b.nodeId, `${b.host}:${b.port}`);
  const gone = [...knownBrokers].filter(([id]) => !live.has(id)).map(([id, at]) => `${id} (${at})`);
  if (gone.length) problems.push(listed('broker(s) left the cluster', gone));
  let metadata: Awaited<ReturnType<Admin['fetchTopicMetadata']>>;
  let existing: Set<string>;
  try {
    // Listed first: metadata for a topic that is gone is an error kafkajs retries for half a minute.
    existing = new Set(await admin.listTopics());
    const topics = [watched.inputTopic, watched.outputTopic, watched.dlqTopic, watched.changelogTopic].filter((t) => existing.has(t));
    metadata = await admin.fetchTopicMetadata({ topics });
  } catch (err) {
    problems.push(`topic metadata unavailable: ${(err as Error).message}`);
    return { reachable: true, problems, broken: [] };
  }
  const offline: string[] = [];
  const underReplicated: string[] = [];
  for (const t of metadata.topics) {
    for (const p of t.partitions) {
      if (p.leader < 0 || !live.has(p.leader)) offline.push(`${t.name}/${p.partitionId}`);
      else if (p.isr.length < p.replicas.length) underReplicated.push(`${t.name}/${p.partitionId} (in sync ${p.isr.length} of ${p.replicas.length})`);
    }
  }
  if (offline.length) problems.push(listed('partition(s) offline (no leader)', offline));
  if (underReplicated.length) problems.push(listed('partition(s) under-replicated', underReplicated));
  let broken: string[];
  try {
    broken = await brokenTopics(admin, watched, existing, new Map(metadata.topics.map((t) => [t.name, t.partitions.length])));
  } catch (err) {
    problems.push(`topic configuration unavailable: ${(err as Error).message}`);
    broken = [];
  }
  return { reachable: true, problems, broken };
}

export interface ClusterHealthOptions {
  readonly admin: Admin;
  readonly topics: WatchedTopics;
  readonly intervalMs: number;
  /**
   * A check that has not answered by then counts as "brokers unreachable": kafkajs retries a
   * request to an unreachable cluster for half a minute and more, and until then the last answer
   * (ok) would stand.
   */
  readonly checkTimeoutMs: number;
  /** The admin client's calls, one at a time (shared with the consumer lag polls). */
  readonly adminCalls?: Serial;
  /** Called when the problems or the broken topics change. */
  readonly onChange?: (now: ClusterHealth, before: ClusterHealth) => void;
}

/** Runs checkCluster every `intervalMs` and keeps the latest answer. */
export class ClusterHealthMonitor {
  private latest: ClusterHealth = { reachable: true, problems: [], broken: [], checkedAt: 0 };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly knownBrokers = new Map<number, string>();
  private readonly adminCalls: Serial;

  constructor(private readonly options: ClusterHealthOptions) {
    this.adminCalls = options.adminCalls ?? createSerial();
  }

  get health(): ClusterHealth {
    return this.latest;
  }

  /** Checks once now, then every intervalMs until stop(). */
  async start(): Promise<void> {
    await this.check();
    this.timer = setInterval(() => void (this.running ??= this.check().finally(() => (this.running = undefined))), this.options.intervalMs);
    this.timer.unref();
  }

  /** No more checks. One in flight is not awaited: in an outage it could take half a minute. */
  stop(): void {
    clearInterval(this.timer);
  }

  private async check(): Promise<void> {
    const { admin, topics, checkTimeoutMs } = this.options;
    const answer = this.adminCalls(() => checkCluster(admin, topics, this.knownBrokers));
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const timeout = new Promise<ClusterCheck>((resolve) => {
      timer = setTimeout(() => {
        timedOut = true;
        resolve({ reachable: false, problems: [`brokers unreachable: no answer to metadata within ${checkTimeoutMs / 1000} s`], broken: this.latest.broken });
      }, checkTimeoutMs);
    });
    this.record(await Promise.race([answer, timeout]).finally(() => clearTimeout(timer)));
    // Timed out: the late answer, when it comes, is the newest news of the cluster.
    if (timedOut) this.record(await answer);
  }

  private record(check: ClusterCheck): void {
    const before = this.latest;
    this.latest = { ...check, checkedAt: Date.now() };
    if ([...check.problems, ...check.broken].join('\n') !== [...before.problems, ...before.broken].join('\n')) this.options.onChange?.(this.latest, before);
  }
}
