/**
 * Broker failover on a 3-node cluster (replication 3, min.insync.replicas 2): the broker leading
 * an input partition is killed mid-stream and restarted 10 s later, then a second broker. The
 * service keeps running, /healthz says degraded while a broker is gone and ok once the cluster
 * has recovered, and the predictions equal replay once duplicates are dropped by source offset.
 * Needs a cluster whose brokers the test can kill (the jar broker that the setup starts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { ballHarness, type BallHarness } from './support/harness.js';
import {
  brokerControl,
  exited,
  freshTopics,
  healthOf,
  httpAddressOf,
  partitionLeaders,
  spawnService,
  splitFixture,
  topicSize,
  waitFor,
} from './support/kafka.js';

const clusterDir = inject('kafkaClusterDir');
let h: BallHarness;
beforeAll(async () => {
  h = await ballHarness();
}, 60_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!clusterDir)('broker failover (3 brokers, replication 3, min.insync.replicas 2)', () => {
  it('kill the leader of an input partition mid-stream, restart it 10 s later, then a second broker: the service goes on, /healthz says degraded then ok, output equals replay', async () => {
    const t = freshTopics('failover');
    const [first, rest] = splitFixture(h.fixture, 1 / 3);
    const [second, third] = splitFixture(rest, 0.5);
    h.produceFixture(t, first);
    const service = spawnService(['--config', h.throttled(t, { healthCheckIntervalMs: 500 })]);
    const killed: number[] = [];
    const seen: string[] = [];
    let passed = false;
    try {
      const http = await httpAddressOf(service);
      await waitFor('the first predictions', async () => (await topicSize(h.brokers, t.outputTopic)) > 50, 60_000);
      for (const [round, more] of [second, third].entries()) {
        const leaders = await partitionLeaders(h.brokers, t.inputTopic);
        // Round 1: the leader of partition 0; round 2: the leader of another partition, not the first victim.
        const victim = round === 0 ? leaders.get(0)! : [...leaders.values()].find((b) => !killed.includes(b)) ?? ((killed[0]! % 3) + 1);
        brokerControl(clusterDir, 'kill', victim);
        killed.push(victim);
        const downAt = Date.now();
        // More input arrives while the broker is down: the producer fails over as well.
        h.produceFixture(t, more);
        await waitFor(`/healthz to report degraded with broker ${victim} down`, async () => (await healthOf(http)).status === 'degraded', 30_000);
        const degraded = await healthOf(http);
        expect(degraded.code).toBe(200);
        seen.push(`round ${round + 1}: broker ${victim} killed; degraded: ${degraded.reasons.join('; ')}`);
        expect(service.exitCode, service.output().slice(-3000)).toBeNull();
        await sleep(Math.max(0, 10_000 - (Date.now() - downAt)));
        brokerControl(clusterDir, 'restart', victim);
        await waitFor(`/healthz ok again after broker ${victim} restarted`, async () => (await healthOf(http)).status === 'ok', 90_000);
        seen.push(`round ${round + 1}: broker ${victim} back; ok after ${((Date.now() - downAt) / 1000).toFixed(1)} s`);
      }
      expect(new Set(killed).size).toBe(2);
      await waitFor('every event to have a prediction', async () => (await h.distinctPredictions(t)) === h.events, 120_000);
      expect(service.exitCode).toBeNull();
      passed = true;
    } finally {
      // The whole log only when it failed: the assertions carry its tail, this the rest.
      if (!passed) {
        writeFileSync(join(h.dir, 'failover-service.log'), `${service.output()}\n(exit code ${service.exitCode}, signal ${service.signalCode})\n`);
        process.stderr.write(`failover: the service's log is in ${join(h.dir, 'failover-service.log')}\n`);
      }
      // Leave the shared cluster whole for the next test file.
      for (const b of killed) {
        try {
          brokerControl(clusterDir, 'restart', b);
        } catch {
          // already running
        }
      }
      service.kill('SIGTERM');
      expect(await exited(service)).toBe(0);
    }
    process.stderr.write(`${seen.join('\n')}\n`);
    await h.expectOutputEqualsReplay(t);
    expect(service.output()).toMatch(/"msg":"cluster degraded"/);
  }, 300_000);
});
