/**
 * Standby replicas (Kafka Streams' `num.standby.replicas`): a member keeps a warm copy of
 * partitions it does not own by tailing their changelog partitions (the restorer's standby
 * store), so that when their owner dies it serves them after reading only the changelog's tail,
 * not all of it.
 *
 * Placement without an assignor of our own (kafkajs's round robin stays): after every rebalance
 * each member reads the group's description (its members and their assignments) and computes the
 * same placement from it: in member-id order, a partition's standby copies go to the `replicas`
 * members after its owner, wrapping around, never to the owner. With n members there are at most
 * n - 1 copies. Kafka Streams weighs hosts and racks; one process per host is assumed here.
 */
import { AssignerProtocol, type Admin } from 'kafkajs';
import type { Logger } from '../../../observability/logger.js';
import type { Serial } from '../cluster/serial.js';
import { sleep } from '../../sleep.js';

export interface StandbyPlacementInput {
  /** Each member's owned partitions of the input topic. */
  readonly owners: ReadonlyMap<string, readonly number[]>;
  /** The member asking. */
  readonly member: string;
  readonly replicas: number;
}

/** The partitions `member` keeps a standby copy of, ascending. */
export function standbyPartitions({ owners, member, replicas }: StandbyPlacementInput): number[] {
  const members = [...owners.keys()].sort();
  const me = members.indexOf(member);
  const n = members.length;
  if (me < 0 || replicas < 1) return [];
  const out: number[] = [];
  for (const [i, owner] of members.entries()) {
    // How many places after the owner this member is.
    const after = (me - i + n) % n;
    if (after >= 1 && after <= Math.min(replicas, n - 1)) out.push(...owners.get(owner)!);
  }
  return out.sort((a, b) => a - b);
}

export interface StandbyPlacementParts {
  readonly admin: Pick<Admin, 'describeGroups'>;
  /** Admin calls one at a time (shared with the service's other admin calls). */
  readonly adminCalls: Serial;
  readonly group: string;
  readonly topic: string;
  readonly replicas: number;
  /** This member's standby partitions, after each rebalance once the group is stable. */
  readonly onPlaced: (partitions: readonly number[]) => void;
  readonly logger: Logger;
}

const FIRST_RETRY_MS = 200;
const MOST_RETRY_MS = 5000;

/** Places this member's standby copies after each rebalance it takes part in. */
export class StandbyPlacement {
  /** Bumped by every join and by stop: a placement under way for an older one gives up. */
  private generation = 0;

  constructor(private readonly parts: StandbyPlacementParts) {}

  /**
   * This member joined (a rebalance ended for it): reads the group until it is stable with this
   * member in it (the other members may still be syncing), then places.
   */
  joined(memberId: string): void {
    const generation = ++this.generation;
    void this.place(memberId, generation);
  }

  stop(): void {
    this.generation++;
  }

  private async place(memberId: string, generation: number): Promise<void> {
    const { admin, adminCalls, group, topic, replicas, logger } = this.parts;
    for (let attempt = 0; generation === this.generation; attempt++) {
      try {
        const { groups } = await adminCalls(() => admin.describeGroups([group]));
        const g = groups.find((x) => x.groupId === group);
        if (generation !== this.generation) return;
        if (g?.state === 'Stable' && g.members.some((m) => m.memberId === memberId)) {
          const owners = new Map(g.members.map((m) => [m.memberId, AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment[topic] ?? []]));
          const partitions = standbyPartitions({ owners, member: memberId, replicas });
          logger.info({ partitions, members: owners.size }, 'standby partitions placed');
          this.parts.onPlaced(partitions);
          return;
        }
      } catch (err) {
        logger.debug({ err: (err as Error).message }, 'group not described this time; placing standbys later');
      }
      await sleep(Math.min(FIRST_RETRY_MS * 2 ** attempt, MOST_RETRY_MS));
    }
  }
}
