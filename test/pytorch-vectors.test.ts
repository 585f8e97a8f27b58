/**
 * PyTorch 1.13 as the oracle: nn.RNN, nn.LSTM and nn.GRU (1 and 2 layers) with a Linear +
 * softmax head, weights imported through the documented mapping (scripts/export_pytorch.py,
 * which wrote test/vectors/pytorch.json). Tolerance 1e-5 absolute:
 * - the float64 reference against PyTorch in float64, on every hidden value and probability;
 * - every float32 backend that loads here against PyTorch run in float32, on the probabilities.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { stepNetwork } from '../src/core/cells.js';
import { resolveBackend } from '../src/backends/registry.js';
import type { BackendName, StepBackend } from '../src/backends/types.js';
import { BackendUnavailableError } from '../src/core/errors.js';
import { parseModel, type RnnModel } from '../src/core/model.js';

interface VectorCase {
  label: string;
  model: unknown;
  inputs: number[][][];
  lastHidden: number[][][];
  probabilities: number[][][];
  probabilitiesFloat32: number[][][];
}
const vectors = JSON.parse(readFileSync(new URL('./vectors/pytorch.json', import.meta.url), 'utf8')) as { torch: string; cases: VectorCase[] };
const TOLERANCE = 1e-5;

function run(backend: StepBackend, model: RnnModel, c: VectorCase, check: (t: number, b: number, probs: Float32Array) => void): Promise<void> {
  const B = c.inputs[0]!.length;
  let state = new Float32Array(B * model.stateSize);
  let next = new Float32Array(B * model.stateSize);
  const out = new Float32Array(B * model.outputSize);
  const input = new Float32Array(B * model.inputSize);
  const go = async (): Promise<void> => {
    for (let t = 0; t < c.inputs.length; t++) {
      c.inputs[t]!.forEach((row, b) => input.set(row, b * model.inputSize));
      await backend.step(B, input, state, next, out);
      [state, next] = [next, state];
      for (let b = 0; b < B; b++) check(t, b, out);
    }
  };
  return go();
}

describe(`PyTorch ${vectors.torch} test vectors`, () => {
  it('has every cell type, single and stacked', () => {
    expect(vectors.cases.map((c) => c.label)).toEqual(['rnn x1', 'rnn x2', 'lstm x1', 'lstm x2', 'gru x1', 'gru x2']);
  });

  describe.each(vectors.cases)('$label', (c) => {
    const model = parseModel(c.model, c.label);
    const last = model.stateSegments.filter((s) => s.kind === 'h').at(-1)!;

    it(`reference (float64) matches PyTorch float64 within ${TOLERANCE}`, () => {
      let worst = 0;
      // The reference backend stores state as float32 between calls; step its float64 core.
      const B = c.inputs[0]!.length;
      const states = Array.from({ length: B }, () => new Float64Array(model.stateSize));
      c.inputs.forEach((rows, t) =>
        rows.forEach((x, b) => {
          const probs = stepNetwork(model, x, states[b]!);
          c.lastHidden[t]![b]!.forEach((h, j) => (worst = Math.max(worst, Math.abs(states[b]![last.offset + j]! - h))));
          c.probabilities[t]![b]!.forEach((p, k) => (worst = Math.max(worst, Math.abs(probs[k]! - p))));
        }),
      );
      expect(worst).toBeLessThan(TOLERANCE);
    });

    it.each<BackendName>(['onnx', 'cpu', 'webasm', 'gpu', 'reference'])(`%s (float32) matches PyTorch float32 within ${TOLERANCE}`, async (name) => {
      let backend: StepBackend;
      try {
        backend = (await resolveBackend(name, model)).backend;
      } catch (err) {
        // Locally a backend may be missing (no display for gpu); in CI every one must run.
        if (err instanceof BackendUnavailableError && process.env.CI !== 'true') return;
        throw err;
      }
      let worst = 0;
      await run(backend, model, c, (t, b, probs) => {
        c.probabilitiesFloat32[t]![b]!.forEach((p, k) => (worst = Math.max(worst, Math.abs(probs[b * model.outputSize + k]! - p))));
      });
      backend.dispose();
      expect(worst).toBeLessThan(TOLERANCE);
    });
  });
});
