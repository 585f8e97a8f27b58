/**
 * The consumer group as every member sees it after a rebalance: its members, the input
 * partitions each owns and the HTTP endpoint each advertises (Kafka Streams' StreamsMetadata).
 * Read with the admin client's DescribeGroups once the group is stable, after every rebalance
 * this member takes part in. Standby placement and per-key queries read it.
 *
 * The endpoint rides in the member's subscription (its userData), as Kafka Streams carries
 * `application.server`: advertisingAssigner is kafkajs's round robin with that added, same name
 * and same assignment, so members with and without it share a group.
 */
import { AssignerProtocol, PartitionAssigners, type Admin, type PartitionAssigner } from 'kafkajs';
import type { Logger } from '../../../observability/logger.js';
import { sleep } from '../../sleep.js';
import type { Serial } from '../cluster/serial.js';

export interface GroupMember {
  readonly memberId: string;
  /** Its input partitions. */
  readonly partitions: readonly number[];
  /** The HTTP endpoint it advertises (/metrics, /keys), if any. */
  readonly endpoint: string | undefined;
}

export interface GroupView {
  /** This member's id. */
  readonly self: string;
  readonly members: readonly GroupMember[];
}

/** kafkajs's round robin, whose subscription also carries this member's HTTP endpoint. */
export function advertisingAssigner(endpoint: string | undefined): PartitionAssigner {
  return (config) => {
    const roundRobin = PartitionAssigners.roundRobin(config);
    return {
      ...roundRobin,
      protocol: ({ topics }: { topics: string[] }) => ({
        name: roundRobin.name,
        metadata: AssignerProtocol.MemberMetadata.encode({ version: roundRobin.version, topics, userData: Buffer.from(JSON.stringify({ endpoint })) }),
      }),
    };
  };
}

/** The endpoint a member's subscription carries (undefined: none, or not ours). */
function endpointOf(memberMetadata: Buffer): string | undefined {
  try {
    const userData = AssignerProtocol.MemberMetadata.decode(memberMetadata)?.userData;
    const endpoint = userData?.length ? (JSON.parse(userData.toString()) as { endpoint?: unknown }).endpoint : undefined;
    return typeof endpoint === 'string' ? endpoint : undefined;
  } catch {
    return undefined;
  }
}

export interface GroupWatchParts {
  readonly admin: Pick<Admin, 'describeGroups'>;
  /** Admin calls one at a time (shared with the service's other admin calls). */
  readonly adminCalls: Serial;
  readonly group: string;
  readonly topic: string;
  /** The group, after each rebalance once it is stable. */
  readonly onDescribed: (view: GroupView) => void;
  readonly logger: Logger;
}

const FIRST_RETRY_MS = 200;
const MOST_RETRY_MS = 5000;

export class GroupWatch {
  /** Bumped by every join and by stop: a description under way for an older one gives up. */
  private generation = 0;
  private current: GroupView | undefined;

  constructor(private readonly parts: GroupWatchParts) {}

  /** The group as last described (undefined until the first rebalance is described). */
  get view(): GroupView | undefined {
    return this.current;
  }

  /**
   * This member joined (a rebalance ended for it): describes the group until it is stable with
   * this member in it (the other members may still be syncing).
   */
  joined(memberId: string): void {
    const generation = ++this.generation;
    this.current = undefined;
    void this.describe(memberId, generation);
  }

  stop(): void {
    this.generation++;
  }

  private async describe(memberId: string, generation: number): Promise<void> {
    const { admin, adminCalls, group, topic, logger } = this.parts;
    for (let attempt = 0; generation === this.generation; attempt++) {
      try {
        const { groups } = await adminCalls(() => admin.describeGroups([group]));
        const g = groups.find((x) => x.groupId === group);
        if (generation !== this.generation) return;
        if (g?.state === 'Stable' && g.members.some((m) => m.memberId === memberId)) {
          const members = g.members.map((m) => ({
            memberId: m.memberId,
            partitions: AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment[topic] ?? [],
            endpoint: endpointOf(m.memberMetadata),
          }));
          this.current = { self: memberId, members };
          this.parts.onDescribed(this.current);
          return;
        }
      } catch (err) {
        logger.debug({ err: (err as Error).message }, 'group not described this time; trying again');
      }
      await sleep(Math.min(FIRST_RETRY_MS * 2 ** attempt, MOST_RETRY_MS));
    }
  }
}
