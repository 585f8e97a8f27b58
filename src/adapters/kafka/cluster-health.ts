/**
 * What the broker side looks like from the service, checked every few seconds: whether the
 * cluster answers metadata at all, whether a broker that was in the cluster has left it, and
 * whether any partition of the service's topics is offline (no leader) or under-replicated
 * (fewer in-sync replicas than replicas: a broker is down or behind, and one more failure could
 * stop writes at min.insync.replicas). kafkajs hides broker failures behind reconnects and
 * retries, which is right for the data path and wrong for an operator, who must hear of them.
 */
import type { Admin } from 'kafkajs';

/** One check's verdict. */
export interface ClusterCheck {
  /** False when the cluster did not answer metadata at all (then `problems` says why). */
  readonly reachable: boolean;
  /** Empty when all is well; otherwise one line per problem, for /healthz and the logs. */
  readonly problems: readonly string[];
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

/** One check: what is wrong now, judged from one describeCluster and one metadata request. */
export async function checkCluster(admin: Admin, topics: readonly string[], knownBrokers: Map<number, string>): Promise<ClusterCheck> {
  const problems: string[] = [];
  let cluster: Awaited<ReturnType<Admin['describeCluster']>>;
  try {
    cluster = await admin.describeCluster();
  } catch (err) {
    return { reachable: false, problems: [`brokers unreachable: ${(err as Error).message}`] };
  }
  const live = new Set(cluster.brokers.map((b) => b.nodeId));
  for (const b of cluster.brokers) knownBrokers.set(b.nodeId, `${b.host}:${b.port}`);
  const gone = [...knownBrokers].filter(([id]) => !live.has(id)).map(([id, at]) => `${id} (${at})`);
  if (gone.length) problems.push(listed('broker(s) left the cluster', gone));
  let metadata: Awaited<ReturnType<Admin['fetchTopicMetadata']>>;
  try {
    metadata = await admin.fetchTopicMetadata({ topics: [...topics] });
  } catch (err) {
    problems.push(`topic metadata unavailable: ${(err as Error).message}`);
    return { reachable: true, problems };
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
  return { reachable: true, problems };
}

/** Runs checkCluster every `intervalMs` and keeps the latest answer. */
export class ClusterHealthMonitor {
  private latest: ClusterHealth = { reachable: true, problems: [], checkedAt: 0 };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly knownBrokers = new Map<number, string>();

  constructor(
    private readonly admin: Admin,
    private readonly topics: readonly string[],
    private readonly intervalMs: number,
    /**
     * A check that has not answered by then counts as "brokers unreachable": kafkajs retries a
     * request to an unreachable cluster for half a minute and more, and until then the last answer
     * (ok) would stand.
     */
    private readonly checkTimeoutMs: number,
    private readonly onChange: (now: ClusterHealth, before: ClusterHealth) => void = () => {},
  ) {}

  get health(): ClusterHealth {
    return this.latest;
  }

  /** Checks once now, then every intervalMs until stop(). */
  async start(): Promise<void> {
    await this.check();
    this.timer = setInterval(() => void (this.running ??= this.check().finally(() => (this.running = undefined))), this.intervalMs);
    this.timer.unref();
  }

  /** No more checks. One in flight is not awaited: in an outage it could take half a minute. */
  stop(): void {
    clearInterval(this.timer);
  }

  private async check(): Promise<void> {
    const answer = checkCluster(this.admin, this.topics, this.knownBrokers);
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const timeout = new Promise<ClusterCheck>((resolve) => {
      timer = setTimeout(() => {
        timedOut = true;
        resolve({ reachable: false, problems: [`brokers unreachable: no answer to metadata within ${this.checkTimeoutMs / 1000} s`] });
      }, this.checkTimeoutMs);
    });
    this.record(await Promise.race([answer, timeout]).finally(() => clearTimeout(timer)));
    // Timed out: the late answer, when it comes, is the newest news of the cluster.
    if (timedOut) this.record(await answer);
  }

  private record(check: ClusterCheck): void {
    const before = this.latest;
    this.latest = { ...check, checkedAt: Date.now() };
    if (check.problems.join('\n') !== before.problems.join('\n')) this.onChange(this.latest, before);
  }
}
