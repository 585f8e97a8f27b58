/**
 * Keys' state on the device, through a real broker, on WebGL (headless-gl; Mesa's software
 * renderer in CI): the service keeps every key's state in the backend's slot table and the
 * changelog reads back only the states it writes (deferred-captures.ts).
 *
 * - The changelog's last record per key is byte for byte the one the same backend writes with
 *   the state on the host (stateOnDevice: false), at least once and exactly once (transactions:
 *   read_committed), and the predictions equal replay's on WebGL.
 * - After kill -9 mid-stream, a restarted service restores from that changelog and the
 *   predictions still equal an uninterrupted replay: the device's changelog records are the state.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/observability/logger.js';
import { resolveServiceConfig } from '../src/service/config.js';
import { startService } from '../src/service/run.js';
import { loadModelFile } from '../src/adapters/model-file.js';
import { decodeSnapshots } from '../src/state/snapshot-codec.js';
import { loadPipeline } from '../src/pipeline/registry.js';
import { ballHarness, type BallHarness } from './support/harness.js';
import { comparePredictions, dedupeByKey, exited, freshTopics, readToEnd, replayPredictions, spawnService, splitFixture, topicSize, waitFor, type Prediction, type Topics } from './support/kafka.js';

let h: BallHarness;
/** Replay's predictions on the same backend: GL and onnx differ by up to 5e-5 over a ball's path (float32 on different arithmetic). */
let onGl: Map<string, Prediction[]>;
beforeAll(async () => {
  h = await ballHarness();
  if (process.env.DISPLAY !== undefined) onGl = await replayPredictions('ball-direction', h.fixture, 'gpu');
}, 120_000);

/** The output topic against replay on WebGL: the same kernels, so the same floats whatever the batching. */
async function expectOutputEqualsGlReplay(t: Topics): Promise<void> {
  // Read to the end as read_committed: an exactly-once topic's offsets count transaction markers too.
  const { messages } = await readToEnd(h.brokers, t.outputTopic);
  expect(comparePredictions(dedupeByKey(messages), onGl)).toBeLessThan(1e-6);
}

/**
 * The last changelog record per key (null: a tombstone), decoded, with the state floats as their
 * bytes. `lastSeen` is left out: it is the wall-clock time the service saw the key, which no two
 * runs share; every other byte of the record is compared.
 */
async function lastChangelogRecords(t: Topics): Promise<Map<string, string | null>> {
  const pipeline = await loadPipeline('ball-direction');
  const model = loadModelFile(pipeline.modelFile);
  const shape = { hash: model.hash, name: model.name, stateSize: model.stateSize, carrySize: Object.keys(pipeline.carry ?? {}).length };
  const { messages } = await readToEnd(h.brokers, t.changelogTopic);
  const last = new Map<string, string | null>();
  for (const m of messages) {
    if (m.bytes.length === 0) {
      last.set(m.key!, null);
      continue;
    }
    const [s] = decodeSnapshots(shape, m.bytes);
    const { lastSeen: _ignored, state, carry, ...rest } = s!;
    last.set(m.key!, JSON.stringify({ ...rest, state: Buffer.from(state.buffer, state.byteOffset, state.byteLength).toString('base64'), carry: [...carry] }));
  }
  return last;
}

/** Predictions a read_committed reader sees, duplicates (by source offset) dropped. */
async function distinctCommittedPredictions(t: Topics): Promise<number> {
  if ((await topicSize(h.brokers, t.outputTopic)) < h.events) return 0; // cannot be complete yet; skip the (slower) read
  const { messages } = await readToEnd(h.brokers, t.outputTopic);
  return [...dedupeByKey(messages).values()].reduce((n, l) => n + l.length, 0);
}

async function runToEnd(label: string, stateOnDevice: boolean, guarantee: 'at-least-once' | 'exactly-once' = 'at-least-once'): Promise<Topics> {
  const t = freshTopics(label);
  h.produceFixture(t);
  const service = await startService(
    resolveServiceConfig({ env: {}, flags: { ...t, pipeline: 'ball-direction', brokers: h.brokers.split(','), backend: 'gpu', stateOnDevice, guarantee, commitIntervalMs: 100, http: { port: 0 }, sessionTimeoutMs: 6000 } }),
    silentLogger,
  );
  try {
    await waitFor('every event to have a prediction', async () => (await distinctCommittedPredictions(t)) === h.events, 120_000);
  } finally {
    await service.stop();
  }
  return t;
}

describe.runIf(process.env.DISPLAY !== undefined)('keys’ state on the device (WebGL) through a real broker', () => {
  it('writes, per key, the changelog record the same backend writes with the state on the host, at least once and exactly once; predictions equal replay', async () => {
    const onHost = await runToEnd('host-state', false);
    const host = await lastChangelogRecords(onHost);
    expect(host.size).toBeGreaterThan(0);
    for (const guarantee of ['at-least-once', 'exactly-once'] as const) {
      const onDevice = await runToEnd(`device-state-${guarantee}`, true, guarantee);
      await expectOutputEqualsGlReplay(onDevice);
      const device = await lastChangelogRecords(onDevice);
      expect([...device.keys()].sort(), guarantee).toEqual([...host.keys()].sort());
      for (const [key, value] of host) expect(device.get(key), `${guarantee} ${key}`).toBe(value);
    }
  }, 300_000);

  it('restores from the changelog it wrote after kill -9: the predictions equal an uninterrupted replay', async () => {
    const t = freshTopics('device-state-kill');
    const config = h.throttled(t, { backend: 'gpu', commitIntervalMs: 50 });
    const [first, second] = splitFixture(h.fixture, 0.5);
    h.produceFixture(t, first);
    const half = await topicSize(h.brokers, t.inputTopic);
    const before = spawnService(['--config', config]);
    try {
      await waitFor('the first half predicted', async () => (await topicSize(h.brokers, t.outputTopic)) >= half, 120_000);
      await waitFor('its state in the changelog', async () => (await topicSize(h.brokers, t.changelogTopic)) > 0, 60_000);
    } finally {
      before.kill('SIGKILL');
      await exited(before);
    }
    expect(before.output()).toContain('slot table');
    h.produceFixture(t, second);
    const after = spawnService(['--config', config]);
    try {
      await waitFor('every event to have a prediction', async () => (await h.distinctPredictions(t)) === h.events, 120_000);
    } finally {
      after.kill('SIGTERM');
      expect(await exited(after)).toBe(0);
    }
    await expectOutputEqualsGlReplay(t);
    const restores = after.output().split('\n').filter((l) => l.includes('"msg":"state restored"')).map((l) => JSON.parse(l) as { keys: number });
    expect(restores.reduce((n, r) => n + r.keys, 0), after.output().slice(-2000)).toBeGreaterThan(0);
  }, 300_000);
});
