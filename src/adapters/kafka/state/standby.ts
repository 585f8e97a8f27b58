/**
 * Standby replicas (Kafka Streams' `num.standby.replicas`): a member keeps a warm copy of
 * partitions it does not own by tailing their changelog partitions (the restorer's standby
 * store), so that when their owner dies it serves them after reading only the changelog's tail,
 * not all of it.
 *
 * Placement without an assignment of our own (kafkajs's round robin stays): after every
 * rebalance each member reads the group's description (consumer/group-watch.ts: its members and
 * their assignments) and computes the same placement from it: in member-id order, a partition's
 * standby copies go to the `replicas` members after its owner, wrapping around, never to the
 * owner. With n members there are at most
 * n - 1 copies. Kafka Streams weighs hosts and racks; one process per host is assumed here.
 */
import type { GroupView } from '../consumer/group-watch.js';

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

/** This member's standby partitions in a described group. */
export const standbyPartitionsIn = (view: GroupView, replicas: number): number[] =>
  standbyPartitions({ owners: new Map(view.members.map((m) => [m.memberId, m.partitions])), member: view.self, replicas });
