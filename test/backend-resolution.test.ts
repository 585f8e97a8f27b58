import { describe, expect, it } from 'vitest';
import { listBackends, resolveBackend } from '../src/backends/registry.js';
import type { BackendProvider, StepBackend } from '../src/backends/types.js';
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
      // Everything ranked above the chosen backend was tried and skipped, with a reason (on a
      // GPU host the best host backend can be skipped too, measured slower than the GPU).
      const names = skipped.map((s) => s.name);
      expect(names.slice(0, order.indexOf(backend.name))).toEqual(order.slice(0, order.indexOf(backend.name)));
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

  describe('auto times the GPU backends that work beside the best host backend and keeps the fastest', () => {
    /** A fake backend whose step takes `msPerStep` of wall time, whatever the batch. */
    const fake = (name: 'webgpu' | 'gpu' | 'onnx' | 'webasm', placement: 'device' | 'host', msPerStep: number, disposed: string[]): BackendProvider => ({
      name,
      priority: 0,
      placement,
      summary: name,
      create: async (): Promise<StepBackend> => ({
        name,
        detail: `fake ${name}`,
        step: () => new Promise((resolve) => setTimeout(resolve, msPerStep)),
        dispose: () => disposed.push(name),
      }),
    });
    const failing: BackendProvider = {
      name: 'gpu',
      priority: 0,
      placement: 'device',
      summary: 'gpu',
      create: () => Promise.reject(new BackendUnavailableError('gpu', 'no display in this test')),
    };

    it('a slow GPU loses to the host backend, and says so with both rates', async () => {
      const disposed: string[] = [];
      const logger = recordingLogger();
      const { backend, skipped, measured } = await resolveBackend('auto', model, {
        logger,
        providers: [fake('webgpu', 'device', 8, disposed), failing, fake('onnx', 'host', 1, disposed), fake('webasm', 'host', 0, disposed)],
      });
      expect(backend.name).toBe('onnx');
      // webasm ranks below the first working host backend: never built, never timed.
      expect(measured.map((m) => m.name)).toEqual(['webgpu', 'onnx']);
      expect(measured[1]!.keyStepsPerSecond).toBeGreaterThan(measured[0]!.keyStepsPerSecond);
      expect(skipped.map((s) => s.name)).toEqual(['gpu', 'webgpu']);
      expect(skipped[0]!.reason).toBe('no display in this test');
      expect(skipped[1]!.reason).toMatch(/^slower here: [\d.]+k key-steps\/s at 256 keys per step, onnx [\d.]+k$/);
      expect(disposed).toEqual(['webgpu']);
      expect(logger.records.filter((r) => r.message === 'backend fallback')).toHaveLength(2);
      expect(logger.records.find((r) => r.message === 'backend selected')?.fields).toMatchObject({ backend: 'onnx', probeBatch: 256 });
    });

    it('a fast GPU wins over the host backend, which is disposed and reported', async () => {
      const disposed: string[] = [];
      const { backend, skipped } = await resolveBackend('auto', model, {
        providers: [fake('webgpu', 'device', 1, disposed), fake('onnx', 'host', 8, disposed)],
        probeBatch: 64,
      });
      expect(backend.name).toBe('webgpu');
      expect(skipped.map((s) => s.name)).toEqual(['onnx']);
      expect(skipped[0]!.reason).toMatch(/at 64 keys per step, webgpu/);
      expect(disposed).toEqual(['onnx']);
    });

    it('a GPU backend that builds but fails at the probe batch is skipped with the reason', async () => {
      const disposed: string[] = [];
      const broken: BackendProvider = {
        ...fake('webgpu', 'device', 1, disposed),
        create: async (): Promise<StepBackend> => ({
          name: 'webgpu',
          detail: 'fake webgpu that fails above one key',
          step: (batch) => (batch > 1 ? Promise.reject(new Error('device lost')) : Promise.resolve()),
          dispose: () => disposed.push('webgpu'),
        }),
      };
      const { backend, skipped, measured } = await resolveBackend('auto', model, { providers: [broken, fake('onnx', 'host', 1, disposed)] });
      expect(backend.name).toBe('onnx');
      expect(skipped).toEqual([{ name: 'webgpu', reason: 'failed at 256 keys per step: device lost' }]);
      expect(measured.map((m) => m.name)).toEqual(['onnx']);
      expect(disposed).toEqual(['webgpu']);
    });

    it('with one working backend there is nothing to time', async () => {
      const { backend, measured } = await resolveBackend('auto', model, { providers: [failing, fake('onnx', 'host', 1, [])] });
      expect(backend.name).toBe('onnx');
      expect(measured).toEqual([]);
    });
  });
});
