/**
 * `rnnstream export`: the ONNX file it writes runs on plain onnxruntime, one event at a time with
 * the state fed back by the caller, and gives the predictions replay gives; a model it cannot
 * express is refused with the reason.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { replayPredictions, type Prediction } from './support/kafka.js';

const require = createRequire(import.meta.url);
const dir = mkdtempSync(join(tmpdir(), 'rnnstream-export-'));
const fixture = join(dir, 'balls.jsonl');
const exported = join(dir, 'ball.onnx');

beforeAll(() => {
  expect(cli(['fixtures', 'ball', '--keys', '40', '--seed', '11', '--out', fixture]).code).toBe(0);
});

/** The file's metadata_props (onnxruntime-node does not expose them), decoded with onnx.proto. */
const metadataOf = (bytes: Buffer, key: string): string => {
  const { onnx } = require('onnx-proto') as typeof import('onnx-proto');
  return onnx.ModelProto.decode(bytes).metadataProps.find((p) => p.key === key)?.value ?? '';
};

describe('rnnstream export', () => {
  it('writes a step graph that plain onnxruntime runs event by event to replay\'s predictions (within 1e-6)', async () => {
    const r = cli(['export', 'pipelines/ball-direction/model.json', '--out', exported]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^verify: 7 keys x 50 steps on onnxruntime against the float64 reference: worst difference \d\.\d\de-\d+ \(tolerance 0.0001\)$/m);
    expect(r.stderr).toMatch(/features \[batch, 2\] float64 \(x, y\) -> probabilities \[batch, 8\] \(E, NE, N, NW, W, SW, S, SE\); state h0 \[1, batch, 32\] -> h0_next, c0/);
    const bytes = readFileSync(exported);
    const state = JSON.parse(metadataOf(bytes, 'rnnstream.state')) as { input: string; output: string; size: number }[];
    expect(state.map((s) => s.input)).toEqual(['h0', 'c0', 'h1', 'c1']);

    // What someone who knows nothing of rnnstream writes: a map of key -> state, one run per event.
    const ort = require('onnxruntime-node');
    const session = await ort.InferenceSession.create(bytes);
    const labels = ['E', 'NE', 'N', 'NW', 'W', 'SW', 'S', 'SE'];
    const states = new Map<string, Float32Array[]>();
    const byKey = new Map<string, Prediction[]>();
    for (const line of readFileSync(fixture, 'utf8').trim().split('\n')) {
      const e = JSON.parse(line) as { ballId: string; x: number; y: number };
      const held = states.get(e.ballId) ?? state.map((s) => new Float32Array(s.size));
      const feeds: Record<string, unknown> = { features: new ort.Tensor('float64', Float64Array.from([e.x, e.y]), [1, 2]) };
      state.forEach((s, i) => (feeds[s.input] = new ort.Tensor('float32', held[i]!, [1, 1, s.size])));
      const out = await session.run(feeds);
      states.set(e.ballId, state.map((s) => Float32Array.from(out[s.output].data as Float32Array)));
      const p = out.probabilities.data as Float32Array;
      const list = byKey.get(e.ballId) ?? [];
      byKey.set(e.ballId, list);
      list.push({ key: e.ballId, seq: list.length + 1, prediction: '', probabilities: Object.fromEntries(labels.map((l, i) => [l, p[i]!])) });
    }
    const replayed = await replayPredictions('ball-direction', fixture);
    let worst = 0;
    let events = 0;
    for (const [key, want] of replayed) {
      const got = byKey.get(key)!;
      expect(got).toHaveLength(want.length);
      want.forEach((w, i) => {
        events++;
        for (const label of labels) worst = Math.max(worst, Math.abs(w.probabilities[label]! - got[i]!.probabilities[label]!));
      });
    }
    process.stderr.write(`export: ${events} events through the exported graph on onnxruntime, worst difference from replay ${worst.toExponential(2)}\n`);
    expect(worst).toBeLessThan(1e-6);
  });

  it('refuses a model it cannot express, and a file name that is not .onnx, with the reason', () => {
    const words = cli(['export', 'pipelines/intent-from-words/model.json', '--out', join(dir, 'intent.onnx')]);
    expect(words.code).toBe(1);
    expect(words.stderr).toMatch(/export: model intent-from-words reads words .* export takes models of numeric features/);
    const name = cli(['export', 'pipelines/ball-direction/model.json', '--out', join(dir, 'ball.json')]);
    expect(name.code).toBe(2);
    expect(name.stderr).toMatch(/--out: expected a file name ending in .onnx/);
  });
});
