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
import { checkConformance, CONFORMANCE_SUITE, conformanceModel } from '../src/backends/conformance.js';
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
  describe.each(CONFORMANCE_SUITE.cases)('$label', (modelCase) => {
    it.each(CONFORMANCE_SUITE.batches)(`B = %i over ${CONFORMANCE_SUITE.steps} steps within ${CONFORMANCE_SUITE.tolerance}`, async (batch) => {
      const backend = await tryBackend(name, conformanceModel(modelCase));
      if (typeof backend === 'string') {
        if (process.env.CI === 'true' && MANDATORY_IN_CI.has(name)) throw new Error(`${name} must run in CI: ${backend}`);
        console.warn(`skipping ${name}: ${backend}`);
        return;
      }
      let result;
      try {
        result = await checkConformance(backend, modelCase, batch);
      } finally {
        backend.dispose();
      }
      // Both figures first, for a readable failure; then the suite's own verdict.
      expect(result.worstAbsError).toBeLessThan(CONFORMANCE_SUITE.tolerance);
      expect(result.referenceMagnitude).toBeGreaterThan(CONFORMANCE_SUITE.minReferenceMagnitude);
      expect(result.passed).toBe(true);
    });
  });
});
