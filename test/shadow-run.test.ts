/**
 * Shadow runs: a candidate model steps the served model's events on a share of the keys, in
 * its own state; its predictions are what the candidate alone would predict for those keys (a
 * replay of their events with it), each naming the candidate; /metrics counts both models'
 * prequential scores on the same events; a promotion (the served model becomes the shadow's)
 * stops it, and so does a share of 0. A bad candidate is refused and nothing runs.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { referenceProvider } from '../src/backends/reference.js';
import { randomModel, randomModelFile, type RandomModelSpec } from '../src/core/random-model.js';
import { COMPASS } from '../src/fixtures/compass.js';
import { generateBallEvents } from '../src/fixtures/ball.js';
import { silentLogger } from '../src/observability/logger.js';
import type { EventRecord } from '../src/operators/records.js';
import { loadPipeline } from '../src/pipeline/registry.js';
import type { PredictionRecord } from '../src/pipeline/predict.js';
import { ServingModel } from '../src/pipeline/serving-model.js';
import { ServiceMetrics } from '../src/service/metrics.js';
import { keyShare, ShadowRunner, type ShadowMessage } from '../src/service/shadow-run.js';
import { loadModelFile } from '../src/adapters/model-file.js';
import { replay } from '../src/replay/replay.js';

const spec = (seed: number): RandomModelSpec => ({ name: 'ball-direction', features: ['x', 'y'], layers: [{ cell: 'gru', hiddenSize: 6 }], head: { kind: 'softmax', labels: [...COMPASS] }, seed });

async function setup() {
  const pipeline = await loadPipeline('ball-direction');
  const dir = mkdtempSync(join(tmpdir(), 'shadow-'));
  const candidate = join(dir, 'candidate.json');
  writeFileSync(candidate, JSON.stringify(randomModelFile(spec(2))));
  const sent: ShadowMessage[] = [];
  const metrics = new ServiceMetrics();
  const serving = new ServingModel(pipeline, randomModel(spec(1)));
  const runner = new ShadowRunner({ pipeline, serving, createBackend: (m) => referenceProvider.create(m, {}), send: async (m) => void sent.push(...m), keyCapacity: 1000, maxBatchSize: 16, logger: silentLogger, metrics });
  return { pipeline, dir, candidate, sent, metrics, runner };
}

/** The served side as the chain gives it to the shadow: each event with a prediction (its prequential score, one in three a hit). */
function serve(runner: ShadowRunner, events: readonly { ballId: string }[]): void {
  events.forEach((event, index) => {
    const record: EventRecord<unknown> = { kind: 'event', event, source: { kind: 'memory', index }, raw: JSON.stringify(event) };
    runner.observe(record, { key: event.ballId, prequential: { predicted: 'N', outcome: index % 3 === 0 ? 'N' : 'S', hit: index % 3 === 0 } } as unknown as PredictionRecord);
  });
}
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 50));

describe('ShadowRunner', () => {
  it('steps a share of the keys with the candidate, whose predictions equal a replay of those keys with it, and scores both models on the same events', async () => {
    const { dir, candidate, sent, metrics, runner } = await setup();
    expect(await runner.offer({ path: candidate, share: 0.5, from: 'test' })).toBe('started');
    const events = generateBallEvents({ keys: 12, seed: 3 });
    for (let i = 0; i < events.length; i += 20) {
      serve(runner, events.slice(i, i + 20));
      await settle();
    }
    const shadowed = new Set(events.map((e) => e.ballId).filter((k) => keyShare(k) < 0.5));
    expect(shadowed.size).toBeGreaterThan(2);
    expect(shadowed.size).toBeLessThan(12);
    expect(new Set(sent.map((m) => m.key))).toEqual(shadowed);
    // What the candidate alone predicts for those keys.
    const fixture = join(dir, 'shadowed.jsonl');
    writeFileSync(fixture, events.filter((e) => shadowed.has(e.ballId)).map((e) => JSON.stringify(e)).join('\n') + '\n');
    const expected: string[] = [];
    await replay({ pipeline: 'ball-direction', input: fixture, backend: 'reference', model: candidate }, { onPrediction: (p) => void expected.push(`${p.key} ${p.seq} ${String(p.prediction)}`) });
    const got = sent.map((m) => JSON.parse(m.value) as { key: string; seq: number; prediction: string; model: string });
    expect(got.map((p) => `${p.key} ${p.seq} ${p.prediction}`)).toEqual(expected);
    expect(new Set(got.map((p) => p.model))).toEqual(new Set([loadModelFile(candidate).hash.slice(0, 16)]));
    const text = await metrics.registry.metrics();
    const value = (name: string): number => Number(new RegExp(`^${name.replace(/[{}]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    expect(value('rnnstream_shadow_predictions_total')).toBe(sent.length);
    expect(value('rnnstream_shadow_prequential_scored{model="serving"}')).toBe(sent.length);
    expect(value('rnnstream_shadow_prequential_scored{model="shadow"}')).toBe(sent.length - shadowed.size);
    expect(value('rnnstream_shadow_prequential_accuracy{model="serving"}')).toBeCloseTo(1 / 3, 1);
    expect(text).toMatch(/^rnnstream_shadow_info\{model="ball-direction",hash="[0-9a-f]{64}",share="0.5"\} 1$/m);

    // Promoted: the served model is the candidate now, and the shadow stops.
    runner.servingChanged(loadModelFile(candidate));
    expect(runner.model).toBeUndefined();
    const before = sent.length;
    serve(runner, events.slice(0, 10));
    await settle();
    expect(sent.length).toBe(before);
    expect(await metrics.registry.metrics()).not.toMatch(/^rnnstream_shadow_info\{/m);
  });

  it('refuses a candidate that does not fit, or is the served model, and stops on a share of 0', async () => {
    const { dir, candidate, metrics, runner } = await setup();
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify(randomModelFile({ ...spec(3), features: ['speed', 'y'] })));
    expect(await runner.offer({ path: bad, share: 1, from: 'test' })).toBe('refused');
    const served = join(dir, 'served.json');
    writeFileSync(served, JSON.stringify(randomModelFile(spec(1))));
    expect(await runner.offer({ path: served, share: 1, from: 'test' })).toBe('refused');
    expect(runner.model).toBeUndefined();
    expect(Number(/^rnnstream_model_refusals_total (\S+)$/m.exec(await metrics.registry.metrics())?.[1])).toBe(2);
    expect(await runner.offer({ path: candidate, share: 1, from: 'test' })).toBe('started');
    expect(await runner.offer({ path: candidate, share: 0, from: 'test' })).toBe('stopped');
    expect(runner.model).toBeUndefined();
  });
});
