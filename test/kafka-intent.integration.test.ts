/**
 * The third example on a real broker: word events produced to Kafka, `rnnstream run` predicting
 * after every word as replay does (top 3 per prediction), bad words dead-lettered, and no state
 * left for finished utterances.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, inject, it } from 'vitest';
import { silentLogger } from '../src/observability/logger.js';
import { projectPath } from '../src/paths.js';
import { resolveServiceConfig } from '../src/service/config.js';
import { startService } from '../src/service/run.js';
import { cli } from './support/cli.js';
import { comparePredictions, dedupeByKey, freshTopics, readTopic, replayPredictions, waitFor } from './support/kafka.js';

describe(`intent-from-words against ${inject('kafkaKind')}`, () => {
  it('words produced to Kafka: the service predicts after every word exactly as replay does, dead-letters bad words, and holds no state once the utterances end', async () => {
    const brokers = inject('kafkaBrokers');
    const dir = mkdtempSync(join(tmpdir(), 'rnnstream-intent-'));
    // The first 300 utterances of the committed validation fixture (64 under way at a time), with
    // two bad words: an empty one, and one after its utterance's last word.
    const lines = gunzipSync(readFileSync(projectPath('fixtures', 'clinc150-validation.words.jsonl.gz'))).toString('utf8').trim().split('\n');
    const kept = lines.filter((l) => Number((JSON.parse(l) as { utteranceId: string }).utteranceId.slice(2)) < 300);
    const bad = ['{"utteranceId":"u-bad","index":0,"word":"","last":true}', '{"utteranceId":"u-0","index":99,"word":"again","last":false}'];
    const fixture = join(dir, 'words.jsonl');
    writeFileSync(fixture, [...kept.slice(0, 100), bad[0], ...kept.slice(100), bad[1]].join('\n') + '\n');
    const expected = await replayPredictions('intent-from-words', fixture);
    const t = freshTopics('intent');
    const produced = cli(['produce', '--pipeline', 'intent-from-words', '--brokers', brokers, '--input', fixture, '--topic', t.inputTopic]);
    expect(produced.code, produced.stderr).toBe(0);
    const service = await startService(
      resolveServiceConfig({ env: {}, flags: { ...t, pipeline: 'intent-from-words', brokers: brokers.split(','), backend: 'onnx', http: { port: 0 }, sessionTimeoutMs: 6000 } }),
      silentLogger,
    );
    try {
      const out = await readTopic(brokers, t.outputTopic, kept.length);
      expect(out).toHaveLength(kept.length);
      expect(comparePredictions(dedupeByKey(out), expected)).toBeLessThan(1e-5);
      // The model's out-of-scope rule is served as replay serves it: under its threshold (0.22)
      // the prediction is oos, and the top class is in topClass.
      for (const m of out) {
        const p = JSON.parse(m.value) as { prediction: string; topClass: string; probabilities: Record<string, number> };
        expect(Object.keys(p.probabilities)).toHaveLength(3);
        const [topClass, top] = Object.entries(p.probabilities)[0]!;
        expect(p.topClass).toBe(topClass);
        expect(p.prediction).toBe(top < 0.22 ? 'oos' : topClass);
      }
      const dead = (await readTopic(brokers, t.dlqTopic, 2)).map((m) => (JSON.parse(m.value) as { reason: string }).reason);
      expect(dead).toHaveLength(2);
      expect(dead).toEqual(expect.arrayContaining([expect.stringMatching(/word.*expected string to have >=1 characters/), expect.stringMatching(/^out of order: index 99 but the key has no earlier events/)]));
      const counted = new RegExp(`^rnnstream_predictions_out_total ${kept.length}$`, 'm');
      await waitFor('the metrics to count every output', async () => counted.test(await (await fetch(`${service.httpAddress}/metrics`)).text()), 30_000);
      const metrics = await (await fetch(`${service.httpAddress}/metrics`)).text();
      expect(metrics).toMatch(/^rnnstream_keys_resident 0$/m);
      expect(metrics).toMatch(/^rnnstream_prequential_scored 300$/m);
    } finally {
      await service.stop();
    }
  });
});
