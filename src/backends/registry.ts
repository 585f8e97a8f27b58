/**
 * Backend registry and resolver, after onnxruntime-web's backend-impl: providers register with a
 * priority; `auto` tries them best first. Every provider it skipped is returned with the reason,
 * logged, and counted; an explicitly requested backend that fails is an error, never a quiet
 * substitution.
 *
 * `auto` picks the fastest backend that works, by measurement rather than by rank: it builds the
 * device (GPU) backends that work and the best host backend, times each at the probe batch, and
 * keeps the fastest. A GPU is not assumed to win: on an H100 host, WebGPU's per-step round trip
 * loses to onnxruntime on 16 cores below about 1,000 keys per step (docs/benchmarks.md). Host
 * backends ranked below the first one that works are never built: they are slower by design
 * (webasm, cpu, reference), and the first working host backend ends the search.
 */
import { BackendUnavailableError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { silentLogger, type Logger } from '../observability/logger.js';
import { cpuProvider, detectGlRenderer, gpuProvider, webasmProvider, webgpuProvider } from './gpujs.js';
import { onnxProvider } from './onnx.js';
import { referenceProvider } from './reference.js';
import { FROM_TABLE, FROM_ZEROS, type BackendChoice, type BackendName, type BackendOptions, type BackendProvider, type DeviceStateTable, type SlotMicroBatch, type StepBackend } from './types.js';

const providers = new Map<BackendName, BackendProvider>();

export function registerBackend(provider: BackendProvider): void {
  providers.set(provider.name, provider);
}

for (const p of [webgpuProvider, gpuProvider, onnxProvider, webasmProvider, cpuProvider, referenceProvider]) registerBackend(p);

/** Registered providers, best first. */
export function listBackends(): BackendProvider[] {
  return [...providers.values()].sort((a, b) => b.priority - a.priority);
}

export interface SkippedBackend {
  readonly name: BackendName;
  readonly reason: string;
}

export interface BackendResolution {
  readonly backend: StepBackend;
  readonly requested: BackendChoice;
  /** Backends `auto` tried and did not keep, each with why (it failed, or was measured slower). */
  readonly skipped: readonly SkippedBackend[];
  /** Key-steps/s `auto` measured for each candidate it timed (empty when only one worked). */
  readonly measured: readonly MeasuredRate[];
}

export interface ResolveOptions extends BackendOptions {
  readonly logger?: Logger;
  /**
   * Let `auto` pick the `gpu` backend on a software GL renderer (Mesa llvmpipe). Off by default:
   * llvmpipe is CPU code and slower than the onnx backend; tests that exercise real WebGL
   * shaders request `gpu` explicitly instead.
   */
  readonly allowSoftwareGl?: boolean;
  /** Keys per step at which `auto` times its candidates (default 256: a busy stream's wave). */
  readonly probeBatch?: number;
  /** Providers to choose from, best first (default: the registry). For tests. */
  readonly providers?: readonly BackendProvider[];
}

export interface MeasuredRate {
  readonly name: BackendName;
  readonly keyStepsPerSecond: number;
}

const PROBE_SECONDS = 0.05;
const PROBE_WARMUP_CALLS = 2;
const PROBE_MIN_CALLS = 3;

/** Waves per micro-batch when `auto` times a device backend (a replay micro-batch of the ball fixture holds about 24). */
const PROBE_WAVES = 8;

/**
 * Key-steps per second of `backend` at `batch` keys, after warm-up (first calls compile
 * kernels), driven as rnnByKey will drive it: a device backend with a micro-batch path by
 * micro-batches of PROBE_WAVES waves (one call each; with its keys' state in its slot table
 * where it has one), any other by one step per call.
 */
async function measureRate(backend: StepBackend, model: RnnModel, batch: number): Promise<number> {
  const { call, keySteps } = !backend.device || !backend.stepMicroBatch ? stepProbe(backend, model, batch) : backend.stateTable ? repeatedSlotMicroBatch(backend.stateTable, model, batch, PROBE_WAVES) : repeatedMicroBatch(backend, model, batch, PROBE_WAVES);
  for (let i = 0; i < PROBE_WARMUP_CALLS; i++) await call();
  let calls = 0;
  const t0 = performance.now();
  do {
    await call();
    calls++;
  } while (calls < PROBE_MIN_CALLS || performance.now() - t0 < PROBE_SECONDS * 1000);
  return (keySteps * calls) / ((performance.now() - t0) / 1000);
}

function stepProbe(backend: StepBackend, model: RnnModel, batch: number): { call: () => Promise<void>; keySteps: number } {
  const input = new Float32Array(batch * model.inputSize).map((_, i) => Math.sin(i));
  let state = new Float32Array(batch * model.stateSize);
  let next = new Float32Array(batch * model.stateSize);
  const output = new Float32Array(batch * model.outputSize);
  const call = async (): Promise<void> => {
    await backend.step(batch, input, state, next, output);
    [state, next] = [next, state];
  };
  return { call, keySteps: batch };
}

/**
 * A micro-batch of `waves` waves of all `keys` keys (each key one event per wave), inputs
 * sin(i); each call steps it, and the keys' final state becomes the next call's starting state.
 * How `auto` and the step bench time a device backend's micro-batch path.
 */
export function repeatedMicroBatch(backend: StepBackend, model: RnnModel, keys: number, waves: number): { call: () => Promise<void>; keySteps: number } {
  const rows = waves * keys;
  const mb = {
    keys,
    waveSizes: new Int32Array(waves).fill(keys),
    input: new Float32Array(rows * model.inputSize).map((_, i) => Math.sin(i)),
    state: new Float32Array(keys * model.stateSize),
    finalState: new Float32Array(keys * model.stateSize),
    output: new Float32Array(rows * model.outputSize),
  };
  const call = async (): Promise<void> => {
    await backend.stepMicroBatch!(mb);
    mb.state.set(mb.finalState);
  };
  return { call, keySteps: rows };
}

/**
 * repeatedMicroBatch with the keys' state in the device's slot table (slots 0..keys-1, from
 * zeros the first time and from the table after): only slot numbers, inputs and outputs cross
 * the bus. How `auto` and the step bench time a backend whose state stays on the device.
 */
export function repeatedSlotMicroBatch(table: DeviceStateTable, model: RnnModel, keys: number, waves: number): { call: () => Promise<void>; keySteps: number } {
  const rows = waves * keys;
  const mb: SlotMicroBatch = {
    keys,
    waveSizes: new Int32Array(waves).fill(keys),
    input: new Float32Array(rows * model.inputSize).map((_, i) => Math.sin(i)),
    slots: Int32Array.from({ length: keys }, (_, u) => u),
    from: new Int32Array(keys).fill(FROM_ZEROS),
    uploadCount: 0,
    uploads: new Float32Array(0),
    output: new Float32Array(rows * model.outputSize),
  };
  const fromTable = new Int32Array(keys).fill(FROM_TABLE);
  let first = true;
  const call = async (): Promise<void> => {
    await table.step(first ? mb : { ...mb, from: fromTable });
    first = false;
  };
  return { call, keySteps: rows };
}

const formatRate = (v: number): string => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1e3).toFixed(1)}k`);

export async function resolveBackend(requested: BackendChoice, model: RnnModel, options: ResolveOptions = {}): Promise<BackendResolution> {
  const logger = options.logger ?? silentLogger;
  if (requested !== 'auto') {
    const provider = providers.get(requested);
    if (!provider) throw new BackendUnavailableError(requested, `unknown backend; expected one of: auto, ${listBackends().map((p) => p.name).join(', ')}`);
    const backend = await provider.create(model, options);
    logger.info({ backend: backend.name, detail: backend.detail }, 'backend selected');
    return { backend, requested, skipped: [], measured: [] };
  }
  const skipped: SkippedBackend[] = [];
  const skip = (name: BackendName, reason: string): void => {
    skipped.push({ name, reason });
    logger.warn({ backend: name, reason, fallbacks: skipped.length }, 'backend fallback');
  };
  const candidates: StepBackend[] = [];
  for (const provider of options.providers ?? listBackends()) {
    try {
      const backend = await provider.create(model, options);
      if (provider.name === 'gpu' && !options.allowSoftwareGl) {
        const renderer = detectGlRenderer();
        if (renderer.software) {
          backend.dispose();
          throw new BackendUnavailableError('gpu', renderer.description);
        }
      }
      candidates.push(backend);
      if (provider.placement === 'host') break;
    } catch (err) {
      skip(provider.name, err instanceof BackendUnavailableError ? err.reason : (err as Error).message);
    }
  }
  if (candidates.length === 1) {
    const backend = candidates[0]!;
    logger.info({ backend: backend.name, detail: backend.detail, skipped }, 'backend selected');
    return { backend, requested, skipped, measured: [] };
  }
  if (candidates.length > 1) {
    const batch = options.probeBatch ?? 256;
    const timed: { backend: StepBackend; keyStepsPerSecond: number }[] = [];
    for (const backend of candidates) {
      try {
        timed.push({ backend, keyStepsPerSecond: await measureRate(backend, model, batch) });
      } catch (err) {
        // A backend that built but fails at the probe batch is skipped like one that did not build.
        backend.dispose();
        skip(backend.name, `failed at ${batch} keys per step: ${(err as Error).message}`);
      }
    }
    if (timed.length > 0) {
      const best = timed.reduce((a, b) => (b.keyStepsPerSecond > a.keyStepsPerSecond ? b : a));
      for (const other of timed) {
        if (other === best) continue;
        other.backend.dispose();
        skip(
          other.backend.name,
          `slower here: ${formatRate(other.keyStepsPerSecond)} key-steps/s at ${batch} keys per step, ${best.backend.name} ${formatRate(best.keyStepsPerSecond)}`,
        );
      }
      const measured: MeasuredRate[] = timed.map((t) => ({ name: t.backend.name, keyStepsPerSecond: t.keyStepsPerSecond }));
      const { backend } = best;
      logger.info({ backend: backend.name, detail: backend.detail, measured, probeBatch: batch, skipped }, 'backend selected');
      return { backend, requested, skipped, measured };
    }
  }
  // Unreachable while the reference backend is registered; kept for a registry without it.
  throw new BackendUnavailableError('auto', `no backend works here: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}
