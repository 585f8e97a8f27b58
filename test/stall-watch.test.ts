/** StallWatch: a failing send, a missing fetch or a partition not moving becomes a problem only once it has lasted. */
import { describe, expect, it } from 'vitest';
import { StallWatch } from '../src/service/stall-watch.js';

describe('StallWatch', () => {
  it('reports a send failing and no fetch only past the limit, and forgets them once things move', () => {
    let now = 1_000;
    const w = new StallWatch(() => now);
    w.sendFailed();
    now += 20_000;
    w.sendFailed(); // still the same outage: the clock runs from the first failure
    expect(w.problems(30_000)).toEqual([]);
    now += 11_000;
    expect(w.problems(30_000)).toEqual(['produce requests failing for 31 s (retrying)', 'no fetch from the brokers for 31 s']);
    w.fetched();
    expect(w.problems(30_000)).toEqual(['produce requests failing for 31 s (retrying)']);
    w.sendSucceeded();
    expect(w.problems(30_000)).toEqual([]);
  });

  it('reports a lagging partition whose committed offset has not moved past the limit, however live the consumer', () => {
    let now = 0;
    const w = new StallWatch(() => now);
    const poll = (lag: Record<number, [records: number, committed: number]>): void =>
      w.lagPolled(new Map(Object.entries(lag).map(([p, [records, committed]]) => [Number(p), { records, committed, end: committed + records }])));
    poll({ 0: [100, 5_000], 1: [0, 7_000], 2: [50, 9_000] });
    for (let i = 0; i < 31; i++) {
      now += 1_000;
      w.fetched(); // fetching all along (a paused consumer still fetches): no help
      poll({ 0: [100 + i, 5_000], 1: [0, 7_000], 2: [50, 9_000 + i] });
    }
    // 0 has waited 31 s without a commit; 1 has nothing waiting; 2 commits every second.
    expect(w.problems(30_000)).toEqual(['no progress on input partition(s) 0: 130 record(s) waiting and the committed offset unchanged for 31 s']);
    now += 1_000;
    poll({ 0: [10, 5_200], 1: [3, 7_000], 2: [50, 9_031] });
    expect(w.problems(30_000)).toEqual([]);
    // A partition no longer owned is forgotten, however long it waited.
    now += 40_000;
    w.fetched();
    poll({ 2: [0, 9_081] });
    expect(w.problems(30_000)).toEqual([]);
    now += 40_000;
    w.fetched();
    poll({ 0: [10, 5_200], 2: [0, 9_081] }); // given back: its clock starts now
    expect(w.problems(30_000)).toEqual([]);
  });

  it('does not take the commit marker a transactional input ends on (a lag of 1 that never grows) for a stall', () => {
    let now = 0;
    const w = new StallWatch(() => now);
    const poll = (records: number, committed: number, end: number): void => w.lagPolled(new Map([[0, { records, committed, end }]]));
    for (let i = 0; i < 40; i++, now += 1_000) {
      w.fetched();
      poll(1, 700, 701);
    }
    expect(w.problems(30_000)).toEqual([]);
    // One new record after it, never committed: a stall after all.
    for (let i = 0; i < 31; i++, now += 1_000) {
      w.fetched();
      poll(3, 700, 703);
    }
    expect(w.problems(30_000)).toEqual(['no progress on input partition(s) 0: 3 record(s) waiting and the committed offset unchanged for 71 s']);
  });
});
