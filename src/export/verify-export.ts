/**
 * The exported file against the float64 reference: random raw features for a batch of keys,
 * stepped together for several steps with the state fed back, through onnxruntime-node running
 * the file (float32) and through core/cells.ts (float64, on the normalised features). The worst
 * absolute difference of any output or state value is the verdict.
 */
import { loadOnnxRuntime } from '../backends/onnx.js';
import { stepNetwork } from '../core/cells.js';
import type { RnnModel } from '../core/model.js';
import { createRng } from '../core/prng.js';
import type { ExportedModel } from './onnx-export.js';

/** The conformance suite's tolerance: float32 against float64 over 50 steps. */
export const EXPORT_TOLERANCE = 1e-4;

export interface ExportCheck {
  readonly keys: number;
  readonly steps: number;
  readonly worst: number;
  readonly tolerance: number;
  readonly pass: boolean;
}

export async function verifyExport(model: RnnModel, exported: ExportedModel, options: { keys?: number; steps?: number; seed?: number } = {}): Promise<ExportCheck> {
  const keys = options.keys ?? 7;
  const steps = options.steps ?? 50;
  const ort = loadOnnxRuntime();
  const session = await ort.InferenceSession.create(exported.bytes, { executionProviders: ['cpu'] });
  const rng = createRng(options.seed ?? 20261206);
  const F = model.inputSize;
  const { mean, std } = model.normalization;
  const reference = Array.from({ length: keys }, () => new Float64Array(model.stateSize));
  const state = new Map(exported.states.map((s) => [s.input, new Float32Array(keys * s.size)]));
  let worst = 0;
  try {
    for (let t = 0; t < steps; t++) {
      // Features around the model's own normalisation: the range it was trained on.
      const features = Float64Array.from({ length: keys * F }, (_, i) => mean[i % F]! + std[i % F]! * rng.normal());
      const feeds: Record<string, unknown> = { features: new ort.Tensor('float64', features, [keys, F]) };
      for (const s of exported.states) feeds[s.input] = new ort.Tensor('float32', state.get(s.input)!, [1, keys, s.size]);
      const out = (await session.run(feeds)) as Record<string, { data: Float32Array }>;
      for (let k = 0; k < keys; k++) {
        const x = Array.from({ length: F }, (_, i) => (features[k * F + i]! - mean[i]!) / std[i]!);
        const y = stepNetwork(model, x, reference[k]!);
        for (let j = 0; j < model.outputSize; j++) worst = Math.max(worst, Math.abs(y[j]! - out[exported.output]!.data[k * model.outputSize + j]!));
      }
      // The reference's state layout is the model's stateSegments: per layer h, then c for an LSTM.
      let offset = 0;
      for (const s of exported.states) {
        const next = out[s.output]!.data;
        for (let k = 0; k < keys; k++) for (let j = 0; j < s.size; j++) worst = Math.max(worst, Math.abs(reference[k]![offset + j]! - next[k * s.size + j]!));
        state.set(s.input, Float32Array.from(next));
        offset += s.size;
      }
    }
  } finally {
    await session.release?.();
  }
  return { keys, steps, worst, tolerance: EXPORT_TOLERANCE, pass: worst <= EXPORT_TOLERANCE };
}
