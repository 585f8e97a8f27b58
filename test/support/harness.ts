/**
 * What every service integration test shares: a small ball fixture, what replay predicts for
 * it, service config files, and the checks against replay.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, inject } from 'vitest';
import { cli } from './cli.js';
import { comparePredictions, dedupeByKey, readTopic, replayPredictions, topicSize, type Prediction, type Topics } from './kafka.js';

export interface BallHarness {
  readonly brokers: string;
  readonly dir: string;
  readonly fixture: string;
  /** Replay's predictions for the fixture, per key. */
  readonly expected: Map<string, Prediction[]>;
  readonly events: number;
  /** A config file for `rnnstream run --config`: the topics, the brokers, and `extra` on top. */
  config(t: Topics, extra?: Record<string, unknown>): string;
  /** A deliberately slow configuration, so a test can act while the stream is mid-way. */
  throttled(t: Topics, extra?: Record<string, unknown>): string;
  produceFixture(t: Topics, file?: string): void;
  /** Predictions in the output topic after dropping duplicates by source offset. */
  distinctPredictions(t: Topics): Promise<number>;
  /** Reads the whole output topic and checks it against replay (after dropping duplicates). */
  expectOutputEqualsReplay(t: Topics): Promise<void>;
}

export async function ballHarness(keys = 24, seed = 77): Promise<BallHarness> {
  const brokers = inject('kafkaBrokers');
  const dir = mkdtempSync(join(tmpdir(), 'rnnstream-kafka-'));
  const fixture = join(dir, 'balls.jsonl');
  const r = cli(['fixtures', 'ball', '--keys', String(keys), '--seed', String(seed), '--out', fixture]);
  expect(r.code, r.stderr).toBe(0);
  const expected = await replayPredictions('ball-direction', fixture);
  const events = [...expected.values()].reduce((n, l) => n + l.length, 0);
  const config = (t: Topics, extra: Record<string, unknown> = {}): string => {
    const file = join(dir, `${t.group}-${Object.keys(extra).length}-${Math.random().toString(36).slice(2, 8)}.json`);
    writeFileSync(file, JSON.stringify({ ...t, pipeline: 'ball-direction', brokers: brokers.split(','), sessionTimeoutMs: 6000, http: { port: 0 }, logLevel: 'info', backend: 'onnx', ...extra }));
    return file;
  };
  const h: BallHarness = {
    brokers,
    dir,
    fixture,
    expected,
    events,
    config,
    throttled: (t, extra = {}) => config(t, { queueCapacity: 24, maxBatchSize: 24, produceBatchSize: 12, ...extra }),
    produceFixture: (t, file = fixture) => {
      const p = cli(['produce', '--pipeline', 'ball-direction', '--brokers', brokers, '--input', file, '--topic', t.inputTopic]);
      expect(p.code, p.stderr).toBe(0);
    },
    distinctPredictions: async (t) => {
      const size = await topicSize(brokers, t.outputTopic);
      if (size < events) return 0; // cannot be complete yet; skip the (slower) read
      const out = await readTopic(brokers, t.outputTopic, size);
      return [...dedupeByKey(out).values()].reduce((n, l) => n + l.length, 0);
    },
    expectOutputEqualsReplay: async (t) => {
      const out = await readTopic(brokers, t.outputTopic, await topicSize(brokers, t.outputTopic));
      expect(comparePredictions(dedupeByKey(out), expected)).toBeLessThan(1e-5);
    },
  };
  return h;
}
