/** StallWatch: a failing send or a missing fetch becomes a problem only once it has lasted. */
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
});
