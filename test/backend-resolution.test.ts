import { describe, expect, it } from 'vitest';
import { listBackends, resolveBackend } from '../src/backends/registry.js';
import { BackendUnavailableError } from '../src/core/errors.js';
import { randomModel } from '../src/core/random-model.js';
import { recordingLogger } from '../src/observability/logger.js';

const model = randomModel({ features: 2, layers: [{ cell: 'lstm', hiddenSize: 4 }], head: { kind: 'softmax', labels: ['a', 'b'] }, seed: 1 });

describe('backend resolution', () => {
  it('lists backends best first', () => {
    expect(listBackends().map((p) => p.name)).toEqual(['webgpu', 'gpu', 'onnx', 'webasm', 'cpu', 'reference']);
  });

  it('auto keeps the first backend that works and logs and returns every skipped one with its reason', async () => {
    const logger = recordingLogger();
    const { backend, skipped, requested } = await resolveBackend('auto', model, { logger });
    try {
      expect(requested).toBe('auto');
      const order = listBackends().map((p) => p.name);
      // Everything ranked above the chosen backend was tried and skipped, with a reason.
      expect(skipped.map((s) => s.name)).toEqual(order.slice(0, order.indexOf(backend.name)));
      for (const s of skipped) expect(s.reason.length).toBeGreaterThan(10);
      const warnings = logger.records.filter((r) => r.level === 'warn' && r.message === 'backend fallback');
      expect(warnings.map((w) => (w.fields as { backend: string }).backend)).toEqual(skipped.map((s) => s.name));
      expect(logger.records.find((r) => r.message === 'backend selected')?.fields).toMatchObject({ backend: backend.name });
      // A software GL renderer is never auto-selected: it is CPU code behind WebGL.
      const gpu = skipped.find((s) => s.name === 'gpu');
      if (gpu && process.env.DISPLAY) expect(gpu.reason).toMatch(/software renderer|not a GPU|context/);
    } finally {
      backend.dispose();
    }
  });

  it('an explicitly requested backend that cannot run is an error, not a substitution', async () => {
    await expect(resolveBackend('webgpu', model)).rejects.toBeInstanceOf(BackendUnavailableError);
    await expect(resolveBackend('tpu' as never, model)).rejects.toThrow(/unknown backend; expected one of: auto, webgpu, gpu/);
  });
});
