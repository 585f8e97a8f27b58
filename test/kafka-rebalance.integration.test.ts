/**
 * Rebalancing a real consumer group mid-stream: one instance, then three, then one again. State
 * follows the partitions (each new owner restores its partitions' keys from the changelog; the
 * old owner drops them), and the output equals replay once duplicates are dropped.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ballHarness, type BallHarness } from './support/harness.js';
import { assignedTo, exited, freshTopics, spawnService, splitFixture, topicSize, waitFor } from './support/kafka.js';

let h: BallHarness;
beforeAll(async () => {
  h = await ballHarness();
}, 60_000);

describe('rebalancing a real consumer group', () => {
  it('1 instance, then 3, then 1 again, mid-stream: state follows partitions and the output equals replay', async () => {
    const t = freshTopics('rebalance');
    const config = h.throttled(t);
    const [first, rest] = splitFixture(h.fixture, 1 / 3);
    const [second, third] = splitFixture(rest, 0.5);
    h.produceFixture(t, first);
    const a = spawnService(['--config', config]);
    const extra: ReturnType<typeof spawnService>[] = [];
    try {
      await waitFor('instance a to predict', async () => (await topicSize(h.brokers, t.outputTopic)) > 100, 60_000);
      extra.push(spawnService(['--config', config]), spawnService(['--config', config]));
      h.produceFixture(t, second);
      // Scaled out: all three own partitions, so each has a share of the input's four. Two
      // newcomers mean up to two rebalances, and each instance logs its own assignment when its
      // part of a rebalance ends: read the logs only once they agree (every partition owned
      // exactly once, by three owners), or the earlier generation is read beside the later one.
      const spreadNow = (): number[][] => [a, ...extra].map((s) => assignedTo(s) ?? []);
      const settled = (spread: number[][]): boolean =>
        spread.every((p) => p.length > 0) && JSON.stringify(spread.flat().sort()) === JSON.stringify([0, 1, 2, 3]);
      await waitFor('the group to spread over three instances', async () => settled(spreadNow()), 60_000);
      expect(spreadNow().flat().sort()).toEqual([0, 1, 2, 3]);
      await waitFor('the three to work on the second part', async () => (await topicSize(h.brokers, t.outputTopic)) > h.events / 2, 90_000);
      // Scaled in: two leave gracefully; a takes every partition back with its state.
      for (const s of extra) s.kill('SIGTERM');
      for (const s of extra) expect(await exited(s)).toBe(0);
      await waitFor('instance a to own every partition again', async () => (assignedTo(a)?.length ?? 0) === 4, 60_000);
      h.produceFixture(t, third);
      await waitFor('every event to have a prediction', async () => (await h.distinctPredictions(t)) === h.events, 120_000);
    } finally {
      for (const s of extra) s.kill('SIGKILL');
      a.kill('SIGTERM');
      expect(await exited(a)).toBe(0);
    }
    await h.expectOutputEqualsReplay(t);
    // State followed the partitions: the newcomers restored keys, and a dropped then restored its own.
    const restoredKeys = (s: { output: () => string }): number =>
      s.output().split('\n').filter((l) => l.includes('"msg":"state restored"')).reduce((n, l) => n + (JSON.parse(l) as { keys: number }).keys, 0);
    expect(extra.map(restoredKeys).reduce((x, y) => x + y, 0)).toBeGreaterThan(0);
    expect(a.output()).toMatch(/"msg":"partitions revoked"/);
    expect(restoredKeys(a)).toBeGreaterThan(0);
  }, 300_000);
});
