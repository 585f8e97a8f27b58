/**
 * One suite, every backend, against the float64 reference: random models of each cell type,
 * single and stacked, 50 steps, B = 1, 7, 256 keys. Tolerance 1e-4 absolute on every state value
 * and every output after every step (float32 kernels against float64 arithmetic).
 *
 * `gpu` needs headless-gl with a display (`xvfb-run`); `npm test` provides one. In CI a backend
 * that cannot load fails the suite rather than skipping: CI=true makes every backend mandatory
 * except webgpu, which needs a Vulkan GPU that CI does not have.
 */
import { describe, expect, it } from 'vitest';
import { ReferenceBackend } from '../src/backends/reference.js';
import { resolveBackend } from '../src/backends/registry.js';
import type { BackendName, StepBackend } from '../src/backends/types.js';
import { BackendUnavailableError } from '../src/core/errors.js';
import { createRng } from '../src/core/prng.js';
import { caseModel, MODEL_CASES } from './support/models.js';

const TOLERANCE = 1e-4;
const STEPS = 50;
const BATCHES = [1, 7, 256];
const BACKENDS: BackendName[] = ['cpu', 'webasm', 'gpu', 'onnx', 'webgpu'];
const MANDATORY_IN_CI = new Set<BackendName>(['cpu', 'webasm', 'gpu', 'onnx']);

async function tryBackend(name: BackendName, model: Parameters<typeof resolveBackend>[1]): Promise<StepBackend | string> {
  try {
    return (await resolveBackend(name, model)).backend;
  } catch (err) {
    if (err instanceof BackendUnavailableError) return err.reason;
    throw err;
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe.each(BACKENDS)('backend %s matches the float64 reference', (name) => {
  describe.each(MODEL_CASES)('$label', (modelCase) => {
    it.each(BATCHES)(`B = %i over ${STEPS} steps within ${TOLERANCE}`, async (batch) => {
      const model = caseModel(modelCase);
      const backend = await tryBackend(name, model);
      if (typeof backend === 'string') {
        if (process.env.CI === 'true' && MANDATORY_IN_CI.has(name)) throw new Error(`${name} must run in CI: ${backend}`);
        console.warn(`skipping ${name}: ${backend}`);
        return;
      }
      const reference = new ReferenceBackend(model);
      const rng = createRng(batch * 31 + modelCase.label.length);
      let stateK = new Float32Array(batch * model.stateSize);
      let nextK = new Float32Array(batch * model.stateSize);
      let stateR = new Float32Array(batch * model.stateSize);
      let nextR = new Float32Array(batch * model.stateSize);
      const outK = new Float32Array(batch * model.outputSize);
      const outR = new Float32Array(batch * model.outputSize);
      const input = new Float32Array(batch * model.inputSize);
      let worst = 0;
      try {
        for (let t = 0; t < STEPS; t++) {
          for (let i = 0; i < input.length; i++) input[i] = rng.normal() * 1.5;
          await backend.step(batch, input, stateK, nextK, outK);
          reference.step(batch, input, stateR, nextR, outR);
          [stateK, nextK, stateR, nextR] = [nextK, stateK, nextR, stateR];
          worst = Math.max(worst, maxAbsDiff(stateK, stateR), maxAbsDiff(outK, outR));
        }
      } finally {
        backend.dispose();
      }
      expect(worst).toBeLessThan(TOLERANCE);
      // A backend that returned zeros would pass nothing above unless the reference did too.
      expect(maxAbsDiff(stateR, new Float32Array(stateR.length))).toBeGreaterThan(0.05);
    });
  });
});
