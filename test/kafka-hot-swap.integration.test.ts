/**
 * Hot swap on a real broker (issue: a new model into a running service): exactly once, a
 * service serving the trained ball model mid-stream is sent a bad model on the models topic
 * (refused; the served model goes on), then a new one (checked, then swapped in where nothing is
 * in flight), then killed -9 and restarted: it serves the new model from its start, with the
 * state the new model wrote. Every event is answered exactly once; before each partition's
 * recorded swap offset the outputs are the old model's, from it on the new model's from zero
 * state (policy reset), and every prediction's `"model"` names the model that made it.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModelFile } from '../src/adapters/model-file.js';
import { randomModelFile } from '../src/core/random-model.js';
import { COMPASS } from '../src/fixtures/compass.js';
import { projectPath } from '../src/paths.js';
import { decodeModelMarker, MODEL_MARKER_KEY, type ModelMarker } from '../src/state/model-marker.js';
import { keyShare } from '../src/service/shadow-run.js';
import { ballHarness, type BallHarness } from './support/harness.js';
import { cli } from './support/cli.js';
import { assignedTo, comparePredictions, dedupeByKey, freshTopics, httpAddressOf, produce, readToEnd, replayPredictions, spawnService, splitFixture, waitFor, type Prediction, type ReadMessage } from './support/kafka.js';

let h: BallHarness;
beforeAll(async () => {
  h = await ballHarness();
}, 60_000);

const sha256Of = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
/** A models-topic record naming `path` as the model the ball pipeline serves. */
const offerModel = (modelsTopic: string, path: string): Promise<void> =>
  produce(h.brokers, modelsTopic, [{ key: 'ball-direction', value: JSON.stringify({ pipeline: 'ball-direction', path, sha256: sha256Of(path) }) }]);
const logLines = (s: { output: () => string }, msg: string): Record<string, unknown>[] =>
  s
    .output()
    .split('\n')
    .filter((l) => l.includes(`"msg":"${msg}`))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** The trained ball model (served first), a "retrained" one (same architecture, other weights), and one that does not fit the pipeline. */
function modelFiles(): { served: string; next: string; bad: string } {
  const served = join(h.dir, 'served.json');
  copyFileSync(projectPath('pipelines', 'ball-direction', 'model.json'), served);
  const spec = { features: ['x', 'y'], layers: [{ cell: 'lstm' as const, hiddenSize: 32 }, { cell: 'lstm' as const, hiddenSize: 32 }], head: { kind: 'softmax' as const, labels: [...COMPASS] } };
  const next = join(h.dir, 'next.json');
  writeFileSync(next, JSON.stringify(randomModelFile({ ...spec, name: 'ball-direction', seed: 41 })));
  const bad = join(h.dir, 'bad.json');
  writeFileSync(bad, JSON.stringify(randomModelFile({ ...spec, features: ['speed', 'y'], name: 'ball-direction', seed: 42 })));
  return { served, next, bad };
}

/**
 * Checks that each partition switched models at its swap offset: before it, the outputs are the
 * old model's (replay's); from it on, the new model's from zero state (a replay of each key's
 * remaining events with it), or with policy warm (`warmHistory` events) the new model's from zero
 * state over the key's last warmHistory events before the swap and then on, with `"warm": false`
 * until the key has seen warmHistory events under it. Returns how many events the new model
 * answered and when the first of its outputs was written.
 */
async function expectSwitchAt(out: readonly ReadMessage[], offsets: Readonly<Record<string, number>>, models: { served: string; next: string }, label: string, warmHistory = 0): Promise<{ answeredByNew: number; firstNew: number }> {
  const { next } = models;
  const swapAt = (p: Prediction): number => offsets[String(p.source!.partition)] ?? Number.POSITIVE_INFINITY;
  // Every prediction names the model that made it (16 hex digits of its content hash).
  const [oldHash, newHash] = [loadModelFile(models.served).hash.slice(0, 16), loadModelFile(next).hash.slice(0, 16)];
  for (const m of out) {
    const p = JSON.parse(m.value) as Prediction & { model: string };
    expect(p.model).toBe(Number(p.source!.offset) < swapAt(p) ? oldHash : newHash);
  }
  const byKey = dedupeByKey(out);
  const before = new Map<string, Prediction[]>();
  const after = new Map<string, Prediction[]>();
  for (const [key, list] of byKey) {
    before.set(key, list.filter((p) => Number(p.source!.offset) < swapAt(p)));
    after.set(key, list.filter((p) => Number(p.source!.offset) >= swapAt(p)));
  }
  // Before the swap: the old model, as replay gives it.
  const old = new Map([...h.expected].map(([key, list]) => [key, list.slice(0, before.get(key)!.length)]));
  expect(comparePredictions(before, old)).toBeLessThan(1e-5);
  // From the swap on: the new model from zero state, as replaying each key's remaining events
  // (policy warm: and the warmHistory events before them) with it gives.
  const seen = new Map<string, number>();
  const replayed = (key: string): number => Math.min(warmHistory, before.get(key)!.length);
  const rest = readFileSync(h.fixture, 'utf8')
    .split('\n')
    .filter(Boolean)
    .filter((line) => {
      const key = (JSON.parse(line) as { ballId: string }).ballId;
      const i = seen.get(key) ?? 0;
      seen.set(key, i + 1);
      return i >= before.get(key)!.length - replayed(key);
    });
  const restFile = join(h.dir, `after-swap-${label}.jsonl`);
  writeFileSync(restFile, rest.join('\n') + '\n');
  // Warm: the replayed history's predictions are not outputs, and the key's events go on counting from before the swap.
  const shift = (key: string): number => (warmHistory > 0 ? before.get(key)!.length - replayed(key) : 0);
  const expectedAfter = new Map(
    [...(await replayPredictions('ball-direction', restFile, 'onnx', next))].map(([key, list]) => [key, list.slice(replayed(key)).map((p) => ({ ...p, seq: p.seq + shift(key) }))] as const).filter(([, list]) => list.length > 0),
  );
  const afterWithEvents = new Map([...after].filter(([, l]) => l.length > 0));
  expect(comparePredictions(afterWithEvents, expectedAfter)).toBeLessThan(1e-5);
  // Reset: keys start again (seq 1); warm: a key's events go on counting.
  for (const [key, list] of afterWithEvents) expect(list[0]!.seq).toBe(warmHistory > 0 ? before.get(key)!.length + 1 : 1);
  if (warmHistory > 0) {
    for (const [key, list] of afterWithEvents) list.forEach((p, j) => expect((p as { warm?: boolean }).warm ?? true, `${key} #${p.seq}`).toBe(replayed(key) + j + 1 >= warmHistory));
  }
  const newOutputs = out.filter((m) => {
    const p = JSON.parse(m.value) as Prediction;
    return Number(p.source!.offset) >= swapAt(p);
  });
  return { answeredByNew: newOutputs.length, firstNew: Math.min(...newOutputs.map((m) => m.timestamp)) };
}

/**
 * The changelog's model markers: for every partition the new model answered, the latest marker
 * names it, at the input offset of the partition's first output from it (written in the
 * transaction that carried that output).
 */
async function expectMarkers(changelogTopic: string, out: readonly ReadMessage[], next: string): Promise<Record<number, number>> {
  const newHash = loadModelFile(next).hash;
  const firstNew = new Map<number, number>();
  for (const m of out) {
    const p = JSON.parse(m.value) as Prediction & { model: string };
    const offset = Number(p.source!.offset);
    if (p.model === newHash.slice(0, 16)) firstNew.set(p.source!.partition, Math.min(firstNew.get(p.source!.partition) ?? Infinity, offset));
  }
  const latest = new Map<number, ModelMarker>();
  for (const m of (await readToEnd(h.brokers, changelogTopic)).messages) if (m.key === MODEL_MARKER_KEY) latest.set(m.partition, decodeModelMarker(m.bytes));
  for (const [partition, offset] of firstNew) {
    expect(latest.get(partition)?.model, `partition ${partition}'s marker`).toBe(newHash);
    expect(latest.get(partition)?.offset, `partition ${partition}'s marker`).toBe(offset);
  }
  return Object.fromEntries([...latest].map(([p, m]) => [p, m.offset]));
}

describe('hot swap', () => {
  it('exactly once, models topic: a bad model is refused while the old one serves; a new one is swapped in at recorded offsets; a kill -9 and a restart serve the new model; every event answered once', async () => {
    const t = freshTopics('swap-eos');
    const modelsTopic = `${t.group}.models`;
    const { served, next, bad } = modelFiles();

    const [first, rest] = splitFixture(h.fixture, 0.5);
    const [second, third] = splitFixture(rest, 0.5);
    const lines = (file: string): number => readFileSync(file, 'utf8').split('\n').filter(Boolean).length;
    const answered = async (): Promise<number> => [...dedupeByKey((await readToEnd(h.brokers, t.outputTopic)).messages).values()].reduce((n, l) => n + l.length, 0);
    h.produceFixture(t, first);
    const config = h.throttled(t, { guarantee: 'exactly-once', modelsTopic, model: served });
    let service = spawnService(['--config', config]);
    try {
      const http = await httpAddressOf(service);
      const metric = async (name: string): Promise<number> => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${http}/metrics`)).text())?.[1] ?? 0);
      await waitFor('a fifth of the events answered', async () => (await readToEnd(h.brokers, t.outputTopic)).messages.length > h.events / 5, 60_000);

      await offerModel(modelsTopic, bad);
      await waitFor('the bad model to be refused', async () => (await metric('rnnstream_model_refusals_total')) === 1, 30_000);
      const refusal = logLines(service, 'new model refused')[0]!;
      expect(refusal.reason).toMatch(/expects features \[speed, y\]/);
      // The old model goes on: the first half is answered in full, by it (checked below).
      await waitFor('the first half answered', async () => (await answered()) === lines(first), 60_000);
      expect(await metric('rnnstream_model_swaps_total')).toBe(0);

      const offered = Date.now();
      await offerModel(modelsTopic, next);
      h.produceFixture(t, second);
      await waitFor('the swap', async () => logLines(service, 'model swapped').length === 1, 60_000);
      expect(await metric('rnnstream_model_swaps_total')).toBe(1);
      expect(await metric('rnnstream_model_refusals_total')).toBe(1);
      const swap = logLines(service, 'model swapped')[0]! as { offsets: Record<string, number>; seconds: number; keysReset: number };
      await waitFor('the second part answered', async () => (await answered()) === lines(first) + lines(second), 120_000);

      // A kill -9 right after the swap, and a restart with the same --model (the old one): it
      // reads the models topic first and serves the new model before it consumes anything, and
      // restores the state the new model wrote.
      service.kill('SIGKILL');
      service = spawnService(['--config', config]);
      const restartedHttp = await httpAddressOf(service);
      const atStart = logLines(service, 'model swapped')[0] as { offsets: Record<string, number>; to: string } | undefined;
      expect(atStart?.offsets).toEqual({});
      expect(atStart?.to).toBe(loadModelFile(next).hash.slice(0, 12));
      expect(service.output().indexOf('model swapped')).toBeLessThan(service.output().indexOf('"msg":"service started"'));
      h.produceFixture(t, third);
      await waitFor('every event answered', async () => (await answered()) === h.events, 120_000);
      // Restored: the new model's records (the old model's, earlier in the changelog and not yet
      // compacted away, are refused as foreign: policy reset). That the state carried on across
      // the restart is checked below: the outputs after the swap equal one uninterrupted replay.
      const restored = Number(/^rnnstream_restored_keys_total (\S+)$/m.exec(await (await fetch(`${restartedHttp}/metrics`)).text())?.[1] ?? 0);
      expect(restored).toBeGreaterThan(0);

      const out = (await readToEnd(h.brokers, t.outputTopic)).messages;
      // Exactly once: one output per input event, none twice.
      expect(out.length).toBe(h.events);
      const { answeredByNew, firstNew } = await expectSwitchAt(out, swap.offsets, { served, next }, 'single');
      expect(await expectMarkers(t.changelogTopic, out, next)).toEqual(Object.fromEntries(Object.entries(swap.offsets).map(([p, o]) => [Number(p), o])));
      process.stderr.write(
        `hot swap: the bad model refused (${String(refusal.reason).slice(0, 80)}...); swap ${swap.seconds.toFixed(3)} s from holding to serving, ${swap.keysReset} keys reset; ` +
          `control record -> first prediction of the new model ${firstNew - offered} ms; ${answeredByNew} of ${h.events} events answered by it\n`,
      );
    } finally {
      service.kill('SIGKILL');
    }
  }, 240_000);

  it('exactly once, policy warm: killed -9 right after the swap, the restart restores the old model\'s state as cold and warms each key on its history first; every event answered once, as the new model run over each key\'s last events gives', async () => {
    const t = freshTopics('swap-warm');
    const modelsTopic = `${t.group}.models`;
    const { served, next } = modelFiles();
    const warmHistory = 6;
    const [first, rest] = splitFixture(h.fixture, 0.5);
    const answered = async (): Promise<number> => [...dedupeByKey((await readToEnd(h.brokers, t.outputTopic)).messages).values()].reduce((n, l) => n + l.length, 0);
    const firstEvents = readFileSync(first, 'utf8').split('\n').filter(Boolean).length;
    h.produceFixture(t, first);
    const config = h.throttled(t, { guarantee: 'exactly-once', modelsTopic, model: served, swapPolicy: 'warm', warmHistory });
    let service = spawnService(['--config', config]);
    try {
      await httpAddressOf(service);
      await waitFor('the first part answered', async () => (await answered()) === firstEvents, 60_000);
      await offerModel(modelsTopic, next);
      await waitFor('the swap', async () => logLines(service, 'model swapped').length === 1, 60_000);
      const swap = logLines(service, 'model swapped')[0]! as { offsets: Record<string, number>; keysCold: number; policy: string };
      expect(swap.policy).toBe('warm');
      expect(swap.keysCold).toBe(h.expected.size);
      // Killed before any key was warmed: the changelog holds only the old model's state.
      service.kill('SIGKILL');
      service = spawnService(['--config', config]);
      const http = await httpAddressOf(service);
      h.produceFixture(t, rest);
      await waitFor('every event answered', async () => (await answered()) === h.events, 120_000);
      const metrics = await (await fetch(`${http}/metrics`)).text();
      const metric = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? 0);
      // Every key with events on both sides of the swap restored cold from the old model's
      // records, and warmed on its last warmHistory events (or all it had) before its next step.
      const count = (file: string): Map<string, number> => {
        const n = new Map<string, number>();
        for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
          const key = (JSON.parse(line) as { ballId: string }).ballId;
          n.set(key, (n.get(key) ?? 0) + 1);
        }
        return n;
      };
      const [early, late] = [count(first), count(rest)];
      const warmed = [...early].filter(([key]) => late.has(key));
      expect(warmed.length).toBeGreaterThan(10);
      expect(metric('rnnstream_warmup_keys_total')).toBe(warmed.length);
      expect(metric('rnnstream_warmup_events_total')).toBe(warmed.reduce((n, [, k]) => n + Math.min(k, warmHistory), 0));
      const out = (await readToEnd(h.brokers, t.outputTopic)).messages;
      expect(out.length).toBe(h.events);
      const { answeredByNew } = await expectSwitchAt(out, swap.offsets, { served, next }, 'warm', warmHistory);
      // Killed before any output of the new model: the restart marked each partition at its first.
      await expectMarkers(t.changelogTopic, out, next);
      expect(answeredByNew).toBe(h.events - firstEvents);
      process.stderr.write(`hot swap, policy warm: ${warmed.length} keys warmed on ${warmHistory} events each in ${metric('rnnstream_warmup_seconds_total').toFixed(3)} s after a kill -9 and a restart\n`);
    } finally {
      service.kill('SIGKILL');
    }
  }, 240_000);

  it('shadow run at least once: a candidate on half the keys writes its own predictions to the shadow topic and its live accuracy beside the served model\'s; rnnstream promote makes it serve and stops the shadow', async () => {
    const t = freshTopics('swap-shadow');
    const modelsTopic = `${t.group}.models`;
    const shadowTopic = `${t.outputTopic}.shadow`;
    const { served, next } = modelFiles();
    const [first, rest] = splitFixture(h.fixture, 0.3);
    h.produceFixture(t, first);
    const service = spawnService(['--config', h.config(t, { modelsTopic, model: served })]);
    try {
      const http = await httpAddressOf(service);
      const metrics = async (): Promise<string> => (await fetch(`${http}/metrics`)).text();
      await produce(h.brokers, modelsTopic, [{ key: 'ball-direction/shadow', value: JSON.stringify({ pipeline: 'ball-direction', path: next, sha256: sha256Of(next), role: 'shadow', share: 0.5 }) }]);
      await waitFor('the shadow to start', async () => logLines(service, 'shadow model started').length === 1, 30_000);
      h.produceFixture(t, rest);
      await waitFor('every event answered', async () => (await h.distinctPredictions(t)) === h.events, 120_000);
      await waitFor('shadow predictions scored', async () => /^rnnstream_shadow_prequential_scored\{model="shadow"\} [1-9]/m.test(await metrics()), 30_000);
      const text = await metrics();
      const accuracy = (model: string): number => Number(new RegExp(`^rnnstream_shadow_prequential_accuracy\\{model="${model}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
      expect(accuracy('shadow')).toBeGreaterThanOrEqual(0);
      expect(accuracy('serving')).toBeGreaterThan(0.5); // the trained model, on the same events
      const shadowOut = (await readToEnd(h.brokers, shadowTopic)).messages.map((m) => JSON.parse(m.value) as { key: string; seq: number; model: string });
      const shadowed = new Set([...h.expected.keys()].filter((k) => keyShare(k) < 0.5));
      expect(shadowOut.length).toBeGreaterThan(0);
      expect(new Set(shadowOut.map((p) => p.key)).size).toBeLessThanOrEqual(shadowed.size);
      for (const p of shadowOut) expect(shadowed.has(p.key), p.key).toBe(true);
      expect(new Set(shadowOut.map((p) => p.model))).toEqual(new Set([loadModelFile(next).hash.slice(0, 16)]));
      // Each shadowed key's shadow predictions count its events from the shadow's start, one by one.
      const seqs = new Map<string, number[]>();
      for (const p of shadowOut) (seqs.get(p.key) ?? seqs.set(p.key, []).get(p.key)!).push(p.seq);
      for (const [key, list] of seqs) expect(list, key).toEqual(list.map((_, i) => i + 1));
      process.stderr.write(`shadow run: ${shadowOut.length} shadow predictions for ${seqs.size} keys; prequential accuracy on them: shadow ${accuracy('shadow').toFixed(3)}, serving ${accuracy('serving').toFixed(3)}\n`);

      const promoted = cli(['promote', '--pipeline', 'ball-direction', '--models-topic', modelsTopic, '--brokers', h.brokers]);
      expect(promoted.code, promoted.stderr).toBe(0);
      expect(promoted.stderr).toContain(`promoted ${next}`);
      await waitFor('the promoted model to serve', async () => logLines(service, 'model swapped').length === 1, 30_000);
      // Stopped once: by the promotion's swap, or by the shadow record's tombstone promote writes beside it, whichever is read first.
      await waitFor('the shadow to stop', async () => logLines(service, 'shadow model stopped').length === 1, 10_000);
      expect(logLines(service, 'shadow model stopped')[0]?.['reason']).toMatch(/promoted|deleted/);
      expect(await metrics()).not.toMatch(/^rnnstream_shadow_info\{/m);
      expect(cli(['promote', '--pipeline', 'ball-direction', '--models-topic', modelsTopic, '--brokers', h.brokers]).stderr).toMatch(/names no shadow model/);
    } finally {
      service.kill('SIGKILL');
    }
  }, 240_000);

  it('exactly once, three instances under load: each swaps where nothing of its own is in flight; one killed -9 right after its swap; every event answered once, each partition switching at its recorded offset', async () => {
    const t = freshTopics('swap-eos-3');
    const modelsTopic = `${t.group}.models`;
    const { served, next } = modelFiles();
    const [first, rest] = splitFixture(h.fixture, 0.3);
    const [second, third] = splitFixture(rest, 0.5);
    h.produceFixture(t, first);
    const config = h.throttled(t, { guarantee: 'exactly-once', modelsTopic, model: served });
    const services = [spawnService(['--config', config]), spawnService(['--config', config]), spawnService(['--config', config])];
    try {
      const owned = (): number[][] => services.map((x) => assignedTo(x) ?? []);
      await waitFor('the three to share the four partitions', async () => owned().every((p) => p.length > 0) && owned().flat().length === 4, 90_000);
      // Under load: the second part is on its way while the record is read.
      h.produceFixture(t, second);
      const offered = Date.now();
      await offerModel(modelsTopic, next);
      await waitFor('all three to swap', async () => services.every((x) => logLines(x, 'model swapped').length === 1), 60_000);
      const swaps = services.map((x) => logLines(x, 'model swapped')[0]! as { offsets: Record<string, number>; seconds: number });
      // Each partition's swap offset, from the instance that owned it.
      const offsets = Object.assign({}, ...swaps.map((w) => w.offsets)) as Record<string, number>;
      expect(Object.keys(offsets).sort()).toEqual(['0', '1', '2', '3']);
      // Killed right after its swap; its partitions go to the others, which serve the new model already.
      const victim = services[0]!;
      victim.kill('SIGKILL');
      h.produceFixture(t, third);
      await waitFor('every event answered', async () => [...dedupeByKey((await readToEnd(h.brokers, t.outputTopic)).messages).values()].reduce((n, l) => n + l.length, 0) === h.events, 180_000);
      const out = (await readToEnd(h.brokers, t.outputTopic)).messages;
      expect(out.length).toBe(h.events);
      const { answeredByNew, firstNew } = await expectSwitchAt(out, offsets, { served, next }, 'three');
      await expectMarkers(t.changelogTopic, out, next);
      process.stderr.write(
        `hot swap, 3 instances: swaps took ${swaps.map((w) => w.seconds.toFixed(3)).join(', ')} s from holding to serving; control record -> first prediction of the new model ${firstNew - offered} ms; ` +
          `${answeredByNew} of ${h.events} events answered by it, one instance killed -9 after its swap\n`,
      );
    } finally {
      for (const x of services) x.kill('SIGKILL');
    }
  }, 300_000);
});
