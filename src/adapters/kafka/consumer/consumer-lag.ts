/**
 * Consumer lag as Kafka defines it, per assigned input partition: the log end offset minus the
 * group's committed offset (the log start where nothing is committed), polled through the admin
 * client. Every assigned partition has a value, also one that has had no record yet or cannot be
 * served: lag measured from batches handed on (as before) said nothing of a partition that was
 * never fetched, which is where an operator most needs to look.
 */
import type { Admin } from 'kafkajs';
import type { Logger } from '../../../observability/logger.js';
import { fetchCommittedOffsets } from './committed-offsets.js';
import type { Serial } from '../cluster/serial.js';

export interface ConsumerLagParts {
  readonly admin: Pick<Admin, 'fetchTopicOffsets' | 'fetchOffsets'>;
  /** The admin client's calls, one at a time (shared with the cluster health checks). */
  readonly adminCalls: Serial;
  readonly group: string;
  readonly topic: string;
  readonly intervalMs: number;
  /** The input partitions this member owns now. */
  readonly owned: () => readonly number[];
  /** Each owned partition's lag, every poll (partitions not in the map are not owned). */
  readonly onLag: (lag: ReadonlyMap<number, PartitionLag>) => void;
  readonly logger: Logger;
}

/** One owned partition's lag in one poll. */
export interface PartitionLag {
  /** Records after the committed offset: the log end minus the committed offset. */
  readonly records: number;
  /** The group's committed offset (the log start where nothing is committed): whether it moves tells progress. */
  readonly committed: number;
  /** The log end offset (the high watermark). */
  readonly end: number;
}

/** One poll: lag per owned partition. */
export async function consumerLag(parts: Pick<ConsumerLagParts, 'admin' | 'adminCalls' | 'group' | 'topic' | 'owned'>): Promise<Map<number, PartitionLag>> {
  const owned = parts.owned();
  if (owned.length === 0) return new Map();
  // Committed offsets first: read the other way, a commit between the two reads could make the lag negative.
  const committed = await fetchCommittedOffsets(parts.admin, { group: parts.group, topic: parts.topic }, { adminCalls: parts.adminCalls, deadlineMs: 0 });
  const ends = await parts.adminCalls(() => parts.admin.fetchTopicOffsets(parts.topic));
  const byPartition = new Map(ends.map((o) => [o.partition, o]));
  const lag = new Map<number, PartitionLag>();
  for (const p of owned) {
    const end = byPartition.get(p);
    if (!end) continue;
    const from = committed.get(p) ?? Number(end.low);
    lag.set(p, { records: Math.max(0, Number(end.high) - from), committed: from, end: Number(end.high) });
  }
  return lag;
}

/** Polls consumerLag every intervalMs until stop(); a failed poll is logged at debug (the health checks report outages). */
export class ConsumerLagMonitor {
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;

  constructor(private readonly parts: ConsumerLagParts) {}

  start(): void {
    this.timer = setInterval(() => void (this.polling ??= this.poll().finally(() => (this.polling = undefined))), this.parts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Polls once now. */
  async poll(): Promise<void> {
    try {
      this.parts.onLag(await consumerLag(this.parts));
    } catch (err) {
      this.parts.logger.debug({ err: (err as Error).message }, 'consumer lag not read this time');
    }
  }
}
