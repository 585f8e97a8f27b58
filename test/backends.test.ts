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
import {
  compareWithReference,
  CONFORMANCE_BATCHES,
  CONFORMANCE_CASES,
  CONFORMANCE_STEPS,
  CONFORMANCE_TOLERANCE,
  conformanceModel,
} from '../src/backends/conformance.js';
import { resolveBackend } from '../src/backends/registry.js';
import type { BackendName, StepBackend } from '../src/backends/types.js';
import { BackendUnavailableError } from '../src/core/errors.js';

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

describe.each(BACKENDS)('backend %s matches the float64 reference', (name) => {
  describe.each(CONFORMANCE_CASES)('$label', (modelCase) => {
    it.each(CONFORMANCE_BATCHES)(`B = %i over ${CONFORMANCE_STEPS} steps within ${CONFORMANCE_TOLERANCE}`, async (batch) => {
      const model = conformanceModel(modelCase);
      const backend = await tryBackend(name, model);
      if (typeof backend === 'string') {
        if (process.env.CI === 'true' && MANDATORY_IN_CI.has(name)) throw new Error(`${name} must run in CI: ${backend}`);
        console.warn(`skipping ${name}: ${backend}`);
        return;
      }
      let result;
      try {
        result = await compareWithReference(backend, model, batch, { seed: batch * 31 + modelCase.label.length });
      } finally {
        backend.dispose();
      }
      expect(result.worstAbsError).toBeLessThan(CONFORMANCE_TOLERANCE);
      // A backend that returned zeros would pass nothing above unless the reference did too.
      expect(result.referenceMagnitude).toBeGreaterThan(0.05);
    });
  });
});
