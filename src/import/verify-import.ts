/**
 * `rnnstream import --verify`: the imported model against the original file. Random sequences
 * for several keys (interleaved event by event) go through rnnstream's streaming path: rnnByKey,
 * one event at a time per key, state carried in the store, on a backend. The same sequences,
 * each whole, go through onnxruntime-node running the original .onnx. The worst absolute
 * difference of any output at any step is the verdict (float32 on both sides).
 */
import { from, lastValueFrom, toArray } from 'rxjs';
import { resolveBackend } from '../backends/registry.js';
import { loadOnnxRuntime } from '../backends/onnx.js';
import type { BackendChoice } from '../backends/types.js';
import { parseModel } from '../core/model.js';
import { createRng } from '../core/prng.js';
import { rnnByKey } from '../operators/rnn-by-key.js';
import { KeyStateStore } from '../state/key-state-store.js';
import { ImportError } from './onnx-file.js';
import type { ImportedModel } from './onnx-import.js';

/** float32 on both sides, different kernels and summation orders: a few ulps per step, compounding over 50. */
export const IMPORT_TOLERANCE = 1e-5;

export interface VerifyOptions {
  readonly keys?: number;
  readonly steps?: number;
  readonly seed?: number;
  readonly backend?: BackendChoice;
}

export interface VerifyReport {
  readonly keys: number;
  readonly steps: number;
  readonly outputs: number;
  readonly backend: string;
  readonly worst: number;
  readonly tolerance: number;
  readonly pass: boolean;
}

interface Event {
  readonly key: number;
  readonly x: Float32Array;
}

export async function verifyImport(onnxBytes: Uint8Array, imported: ImportedModel, options: VerifyOptions = {}): Promise<VerifyReport> {
  const model = parseModel(imported.model, imported.model.name);
  const keys = options.keys ?? 5;
  const steps = options.steps ?? 50;
  const I = model.inputSize;
  const O = model.outputSize;
  const rng = createRng(options.seed ?? 20261202);
  const sequences = Array.from({ length: keys }, () => Array.from({ length: steps }, () => Float32Array.from({ length: I }, () => rng.normal())));

  // The streaming path: every key's events interleaved at random, in per-key order.
  const cursor = new Array<number>(keys).fill(0);
  const events: Event[] = [];
  while (events.length < keys * steps) {
    const k = rng.int(0, keys - 1);
    if (cursor[k]! < steps) events.push({ key: k, x: sequences[k]![cursor[k]!++]! });
  }
  const { backend } = await resolveBackend(options.backend ?? 'auto', model);
  const streamed = Array.from({ length: keys }, () => [] as Float32Array[]);
  try {
    const results = await lastValueFrom(
      from(events).pipe(
        rnnByKey<Event, Event>({
          backend,
          store: new KeyStateStore(model),
          keyOf: (e) => String(e.key),
          eventOf: (e) => e,
          features: (e, _prev, out) => {
            for (let f = 0; f < I; f++) out[f] = e.x[f]!;
          },
          maxBatchSize: 64,
          maxWaitMs: 0,
        }),
        toArray(),
      ),
    );
    for (const r of results) if (r.kind === 'step') streamed[r.item.key]!.push(r.output);
  } finally {
    backend.dispose();
  }

  // The original file, one whole sequence per key (or, for a head on the final state, every prefix).
  const ort = loadOnnxRuntime();
  let session: { run(feeds: Record<string, unknown>): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>>; release?(): Promise<void> };
  try {
    session = await ort.InferenceSession.create(onnxBytes);
  } catch (err) {
    throw new ImportError(`onnxruntime cannot load the original file: ${(err as Error).message}`);
  }
  // The original graph reads normalised rows: rnnstream normalises the raw ones with the model's
  // normalization (identity unless the import was given one), and so does this side, in float64.
  const { mean, std } = model.normalization;
  const run = async (seq: Float32Array[]): Promise<Float32Array> => {
    const data = new Float32Array(seq.length * I);
    seq.forEach((x, t) => {
      for (let f = 0; f < I; f++) data[t * I + f] = (x[f]! - mean[f]!) / std[f]!;
    });
    const dims = imported.input.batchFirst ? [1, seq.length, I] : [seq.length, 1, I];
    const out = await session.run({ [imported.input.name]: new ort.Tensor('float32', data, dims) });
    const y = out[imported.output.name];
    if (!y) throw new ImportError(`onnxruntime gave no output "${imported.output.name}"`);
    return y.data;
  };
  let worst = 0;
  try {
    for (let k = 0; k < keys; k++) {
      const seq = sequences[k]!;
      const expected: Float32Array[] = [];
      if (imported.output.finalOnly) {
        for (let t = 1; t <= steps; t++) expected.push((await run(seq.slice(0, t))).slice(0, O));
      } else {
        const y = await run(seq);
        for (let t = 0; t < steps; t++) expected.push(y.slice(t * O, (t + 1) * O));
      }
      for (let t = 0; t < steps; t++) for (let o = 0; o < O; o++) worst = Math.max(worst, Math.abs(streamed[k]![t]![o]! - expected[t]![o]!));
    }
  } finally {
    await session.release?.();
  }
  return { keys, steps, outputs: O, backend: backend.name, worst, tolerance: IMPORT_TOLERANCE, pass: worst <= IMPORT_TOLERANCE };
}
