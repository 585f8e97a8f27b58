/**
 * Backend conformance: a backend's step, run side by side with the float64 reference on the
 * same random inputs, for many steps, compared after every step. The test suite runs it for
 * every backend in CI; `rnnstream backends --check` runs it on the user's host, which is how a
 * GPU backend (webgpu on Dawn, gpu on a hardware GL driver) is verified where CI has no GPU.
 */
import type { CellKind, RnnModel } from '../core/model.js';
import { createRng } from '../core/prng.js';
import { randomModel } from '../core/random-model.js';
import { ReferenceBackend } from './reference.js';
import { FROM_TABLE, FROM_ZEROS, stepWavesOneByOne, waveStarts, type DeviceStateTable, type StepBackend } from './types.js';

export interface ConformanceCase {
  readonly label: string;
  readonly layers: readonly { readonly cell: CellKind; readonly hiddenSize: number }[];
}

/**
 * The suite CI runs for every backend and `rnnstream backends --check` runs on the user's host:
 * every cell type, single and stacked, at each batch size, for `steps` steps.
 */
export const CONFORMANCE_SUITE = {
  /** Absolute tolerance on every state value and output: float32 kernels vs float64 arithmetic. */
  tolerance: 1e-4,
  steps: 50,
  batches: [1, 7, 256] as readonly number[],
  cases: [
    { label: 'rnn', layers: [{ cell: 'rnn', hiddenSize: 16 }] },
    { label: 'lstm', layers: [{ cell: 'lstm', hiddenSize: 16 }] },
    { label: 'gru', layers: [{ cell: 'gru', hiddenSize: 16 }] },
    { label: 'rnn x2', layers: [{ cell: 'rnn', hiddenSize: 12 }, { cell: 'rnn', hiddenSize: 8 }] },
    { label: 'lstm x2', layers: [{ cell: 'lstm', hiddenSize: 12 }, { cell: 'lstm', hiddenSize: 8 }] },
    { label: 'gru x2', layers: [{ cell: 'gru', hiddenSize: 12 }, { cell: 'gru', hiddenSize: 8 }] },
  ] as readonly ConformanceCase[],
  /**
   * Least largest reference state value a check accepts: a backend that returned zeros would
   * otherwise match a reference that is also near zero.
   */
  minReferenceMagnitude: 0.05,
} as const;

export const conformanceModel = (c: ConformanceCase, seed = 7): RnnModel =>
  randomModel({
    features: 5,
    layers: c.layers,
    head: { kind: 'softmax', labels: ['a', 'b', 'c', 'd'] },
    seed,
    // Larger than PyTorch's default so gates saturate sometimes and errors would compound.
    scale: 2,
  });

export interface ConformanceResult {
  /** Largest absolute difference from the reference over every state value and output, every step. */
  readonly worstAbsError: number;
  /**
   * Largest absolute reference state value after the last step: a backend that returned zeros
   * would match a reference that is also near zero, so callers check this is not tiny.
   */
  readonly referenceMagnitude: number;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Steps `backend` and the reference `steps` times on the same seeded inputs (N(0, 1.5²)). */
export async function compareWithReference(
  backend: StepBackend,
  model: RnnModel,
  batch: number,
  options: { readonly steps?: number; readonly seed?: number } = {},
): Promise<ConformanceResult> {
  const reference = new ReferenceBackend(model);
  const rng = createRng(options.seed ?? batch * 31);
  let stateK = new Float32Array(batch * model.stateSize);
  let nextK = new Float32Array(batch * model.stateSize);
  let stateR = new Float32Array(batch * model.stateSize);
  let nextR = new Float32Array(batch * model.stateSize);
  const outK = new Float32Array(batch * model.outputSize);
  const outR = new Float32Array(batch * model.outputSize);
  const input = new Float32Array(batch * model.inputSize);
  let worst = 0;
  for (let t = 0; t < (options.steps ?? CONFORMANCE_SUITE.steps); t++) {
    for (let i = 0; i < input.length; i++) input[i] = rng.normal() * 1.5;
    await backend.step(batch, input, stateK, nextK, outK);
    reference.step(batch, input, stateR, nextR, outR);
    [stateK, nextK, stateR, nextR] = [nextK, stateK, nextR, stateR];
    // NaN never compares greater, so count it as infinitely wrong explicitly.
    const diff = Math.max(maxAbsDiff(stateK, stateR), maxAbsDiff(outK, outR));
    worst = Number.isNaN(diff) ? Infinity : Math.max(worst, diff);
  }
  return { worstAbsError: worst, referenceMagnitude: maxAbsDiff(stateR, new Float32Array(stateR.length)) };
}

/**
 * `stepMicroBatch` beside the reference stepped wave by wave: `keys` keys with 1..maxEvents
 * events each (most first, as rnnByKey numbers them) and a random starting state, in one call.
 */
export async function compareMicroBatchWithReference(
  backend: StepBackend,
  model: RnnModel,
  keys: number,
  /** `states`: ask for every row's state too (default true; a sequence backend's path asks for none). */
  options: { readonly maxEvents?: number; readonly seed?: number; readonly states?: boolean } = {},
): Promise<ConformanceResult> {
  if (!backend.stepMicroBatch) throw new Error(`the ${backend.name} backend has no micro-batch path`);
  const rng = createRng(options.seed ?? keys * 17);
  const counts = Array.from({ length: keys }, () => 1 + Math.floor(rng.next() * (options.maxEvents ?? 12))).sort((a, b) => b - a);
  const waveSizes = Int32Array.from({ length: counts[0]! }, (_, w) => counts.filter((c) => c > w).length);
  const { rows } = waveStarts(waveSizes);
  const S = model.stateSize;
  const O = model.outputSize;
  const I = model.inputSize;
  const input = Float32Array.from({ length: rows * I }, () => rng.normal() * 1.5);
  const state = Float32Array.from({ length: keys * S }, () => rng.normal() * 0.5);
  const withStates = options.states ?? true;
  const mb = { keys, waveSizes, input, state, finalState: new Float32Array(keys * S), ...(withStates ? { states: new Float32Array(rows * S) } : {}), output: new Float32Array(rows * O) };
  await backend.stepMicroBatch(mb);
  const reference = new ReferenceBackend(model);
  const expected = { ...mb, finalState: new Float32Array(keys * S), states: new Float32Array(rows * S), output: new Float32Array(rows * O) };
  await stepWavesOneByOne(model, (n, x, st, next, out) => reference.step(n, x, st, next, out), expected);
  const { states: expectedStates, finalState: expectedFinal, output: expectedOutput } = expected;
  let diff = Math.max(mb.states ? maxAbsDiff(mb.states, expectedStates) : 0, maxAbsDiff(mb.finalState, expectedFinal), maxAbsDiff(mb.output, expectedOutput));
  if (backend.stateTable) diff = Math.max(diff, await slotTableDiff(backend.stateTable, model, { keys, waveSizes, input, state }, rng));
  return { worstAbsError: Number.isNaN(diff) ? Infinity : diff, referenceMagnitude: maxAbsDiff(expectedStates, new Float32Array(expectedStates.length)) };
}

/**
 * The same micro-batch through the backend's state table, beside the reference's `expected`:
 * keys in scattered slots, every third starting from zeros (its reference state zeroed) and the
 * rest from uploaded rows; then a second micro-batch of the same keys from the table; then the
 * slots read back. The worst difference of outputs, every row's states and the final states.
 */
async function slotTableDiff(
  table: DeviceStateTable,
  model: RnnModel,
  mb: { keys: number; waveSizes: Int32Array; input: Float32Array; state: Float32Array },
  rng: { next(): number },
): Promise<number> {
  const { keys, waveSizes, input } = mb;
  const S = model.stateSize;
  const O = model.outputSize;
  const { rows } = waveStarts(waveSizes);
  const reference = new ReferenceBackend(model);
  const step = (n: number, x: Float32Array, st: Float32Array, next: Float32Array, out: Float32Array): void | Promise<void> => reference.step(n, x, st, next, out);
  // Distinct slots spread over a table several times the keys.
  const slots = Int32Array.from(new Set(Array.from({ length: keys * 4 }, () => Math.floor(rng.next() * keys * 3)))).slice(0, keys);
  for (let s = slots.length, next = keys * 3; s < keys; s++) slots[s] = next++;
  const zeroed = (u: number): boolean => u % 3 === 0;
  const state = mb.state.slice();
  for (let u = 0; u < keys; u++) if (zeroed(u)) for (const seg of model.stateSegments) state.fill(0, keys * seg.offset + u * seg.size, keys * seg.offset + (u + 1) * seg.size);
  const from = Int32Array.from({ length: keys }, (_, u) => (zeroed(u) ? FROM_ZEROS : u));
  let diff = 0;
  let before = state;
  for (const round of [0, 1]) {
    const x = round === 0 ? input : input.map((v) => -v);
    const expected = { keys, waveSizes, input: x, state: before, finalState: new Float32Array(keys * S), states: new Float32Array(rows * S), output: new Float32Array(rows * O) };
    await stepWavesOneByOne(model, step, expected);
    const got = { keys, waveSizes, input: x, slots, from: round === 0 ? from : new Int32Array(keys).fill(FROM_TABLE), uploadCount: keys, uploads: state, states: new Float32Array(rows * S), output: new Float32Array(rows * O) };
    await table.step(got);
    const back = new Float32Array(keys * S);
    await table.read(slots, back);
    diff = Math.max(diff, maxAbsDiff(got.states, expected.states), maxAbsDiff(got.output, expected.output), maxAbsDiff(back, expected.finalState));
    before = expected.finalState;
  }
  return diff;
}

export interface ConformanceCheck extends ConformanceResult {
  readonly passed: boolean;
  /** Backends with a micro-batch path: that path's check (counted in `passed`). */
  readonly microBatch?: ConformanceResult;
}

/**
 * One check of the suite: `backend` (built for `conformanceModel(modelCase)`) beside the
 * reference at `batch` keys, on the same inputs in CI and on the user's host, with the verdict.
 */
export async function checkConformance(backend: StepBackend, modelCase: ConformanceCase, batch: number): Promise<ConformanceCheck> {
  const model = conformanceModel(modelCase);
  const seed = batch * 31 + modelCase.label.length;
  const r = await compareWithReference(backend, model, batch, { seed });
  // The path rnnByKey takes: a sequence backend's micro-batches keep no row's state.
  const microBatch = backend.stepMicroBatch ? await compareMicroBatchWithReference(backend, model, batch, { seed, states: backend.sequenceMicroBatch !== true }) : undefined;
  // Written so that NaN fails both comparisons.
  const ok = (c: ConformanceResult): boolean => c.worstAbsError < CONFORMANCE_SUITE.tolerance && c.referenceMagnitude > CONFORMANCE_SUITE.minReferenceMagnitude;
  return { ...r, passed: ok(r) && (microBatch === undefined || ok(microBatch)), ...(microBatch ? { microBatch } : {}) };
}
