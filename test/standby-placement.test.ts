/** Standby placement: every member computes the same copies from the group's assignments. */
import { describe, expect, it } from 'vitest';
import { standbyPartitions } from '../src/adapters/kafka/state/standby.js';

const owners = new Map<string, number[]>([
  ['m-c', [4, 5]],
  ['m-a', [0, 1]],
  ['m-b', [2, 3]],
]);
const place = (member: string, replicas: number): number[] => standbyPartitions({ owners, member, replicas });

describe('standbyPartitions', () => {
  it('gives each partition its copies on the members after its owner, in member-id order, wrapping, never on the owner', () => {
    expect(place('m-a', 1)).toEqual([4, 5]);
    expect(place('m-b', 1)).toEqual([0, 1]);
    expect(place('m-c', 1)).toEqual([2, 3]);
    // Two copies: every other member's partitions.
    expect(place('m-a', 2)).toEqual([2, 3, 4, 5]);
    // More copies than other members: one per other member, no more.
    expect(place('m-b', 5)).toEqual([0, 1, 4, 5]);
  });

  it('places every partition exactly `replicas` times over the members, none on its owner', () => {
    for (const replicas of [1, 2]) {
      const copies = [...owners.keys()].flatMap((m) => place(m, replicas).map((p) => [m, p] as const));
      for (const [member, p] of copies) expect(owners.get(member)).not.toContain(p);
      for (let p = 0; p < 6; p++) expect(copies.filter(([, q]) => q === p)).toHaveLength(replicas);
    }
  });

  it('places nothing with no copies asked, for a member not in the group, or alone', () => {
    expect(place('m-a', 0)).toEqual([]);
    expect(place('m-x', 1)).toEqual([]);
    expect(standbyPartitions({ owners: new Map([['m-a', [0, 1, 2]]]), member: 'm-a', replicas: 1 })).toEqual([]);
  });
});
