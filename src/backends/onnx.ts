/**
 * `onnx`: the fast CPU backend. One model step is an ONNX graph (onnx-graph.ts) run by
 * onnxruntime-node's native LSTM/GRU/RNN kernels (MLAS GEMMs, multi-threaded). On CPU-only hosts
 * this is an order of magnitude faster than GPU.js kernels or a JavaScript loop.
 *
 * onnxruntime-node is an optional dependency: where it is missing, `auto` says so and moves on.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { BackendUnavailableError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { buildSequenceGraph, buildStepGraph, type OnnxStepGraph } from './onnx-graph.js';
import { inThreadRunner, SequenceStepper } from './onnx-sequence.js';
import { stepWavesOneByOne, type BackendOptions, type BackendProvider, type MicroBatch, type StepBackend } from './types.js';

const require = createRequire(import.meta.url);

/* eslint-disable @typescript-eslint/no-explicit-any */
export function loadOnnxRuntime(): any {
  try {
    return require('onnxruntime-node');
  } catch (err) {
    throw new BackendUnavailableError(
      'onnx',
      `the optional package onnxruntime-node does not load (${(err as Error).message.split('\n')[0]}); install it with ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node`,
      { cause: err },
    );
  }
}

/** Runs the step graph: `feeds` and `fetches` as onnxruntime's InferenceSession takes them. */
export interface SessionRunner {
  run(feeds: Record<string, unknown>, fetches: Record<string, unknown>): Record<string, { data: unknown }> | Promise<Record<string, { data: unknown }>>;
  release(): void;
  readonly kind: string;
}

/**
 * onnxruntime-node's public `InferenceSession.run` is asynchronous only in name: it defers the
 * native call, which is synchronous on this thread, by a `setImmediate`. Per wave of a
 * micro-batch that costs an event-loop turn and a promise, more than the LSTM math at small
 * batches. So where the package's native binding has the shape we know (onnxruntime-node is
 * pinned), we call it directly; otherwise we use the public API. `detail` says which.
 */
export async function openSession(ort: any, bytes: Uint8Array, options: Record<string, unknown>): Promise<SessionRunner> {
  try {
    const { binding, initOrt } = require('onnxruntime-node/dist/binding.js');
    if (typeof binding?.InferenceSession === 'function' && typeof initOrt === 'function') {
      initOrt();
      const native = new binding.InferenceSession();
      native.loadModel(bytes.buffer, bytes.byteOffset, bytes.byteLength, options);
      if (typeof native.run === 'function') {
        return { kind: 'native binding, synchronous', run: (f, o) => native.run(f, o, {}), release: () => native.dispose?.() };
      }
    }
  } catch {
    // Not the binding we know; the public API below works on every version.
  }
  const session = await ort.InferenceSession.create(bytes, options);
  return { kind: 'public API', run: (f) => session.run(f), release: () => void session.release?.() };
}

/** Batches at least this large run on the multi-threaded session; smaller ones on one thread. */
export const PARALLEL_MIN_BATCH = 512;

/**
 * Two sessions over the same graph. Small batches (the waves of a live stream) run on one
 * thread: there is too little work to split, and idle worker threads that spin would take the
 * core the event loop needs between waves. Large batches run on every core with onnxruntime's
 * default spinning, which is what makes its parallel GEMMs fast.
 */
export const sessionOptions = (threads: number): Record<string, unknown> => ({
  intraOpNumThreads: threads,
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  ...(threads === 1 ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}),
});

export class OnnxBackend implements StepBackend {
  readonly name = 'onnx' as const;
  /** Micro-batches run as sequences, one run each (onnx-sequence.ts): rnnByKey sends them where it keeps no row's state. */
  readonly sequenceMicroBatch = true;
  private sequence: SequenceStepper | undefined;

  private constructor(
    private readonly stepDetail: string,
    private readonly model: RnnModel,
    private readonly ort: any,
    private readonly serial: SessionRunner,
    private readonly parallel: SessionRunner | undefined,
    private readonly graph: OnnxStepGraph,
  ) {}

  static async create(model: RnnModel, options: BackendOptions): Promise<OnnxBackend> {
    const ort = loadOnnxRuntime();
    const graph = buildStepGraph(model);
    const threads = options.threads ?? availableParallelism();
    let serial: SessionRunner;
    let parallel: SessionRunner | undefined;
    try {
      serial = await openSession(ort, graph.bytes, sessionOptions(1));
      if (threads > 1) parallel = await openSession(ort, graph.bytes, sessionOptions(threads));
    } catch (err) {
      throw new BackendUnavailableError('onnx', `onnxruntime rejected the step graph: ${(err as Error).message}`, { cause: err });
    }
    const version = (() => {
      try {
        return require('onnxruntime-node/package.json').version as string;
      } catch {
        return '?';
      }
    })();
    const split = parallel ? `1 thread below ${PARALLEL_MIN_BATCH} keys, ${threads} threads from there` : '1 thread';
    const backend = new OnnxBackend(`onnxruntime-node ${version} (${serial.kind}), CPU execution provider, ${split}`, model, ort, serial, parallel, graph);
    backend.probeInPlace();
    await backend.openSequence();
    return backend;
  }

  /**
   * The sequence graph's session for micro-batches (onnx-sequence.ts), on one thread: a run's
   * steps are sequential, and splitting a step's ~150 keys over spinning threads measured 1.2x
   * slower in wall time and 1.6x the CPU (ball replay, 2 cores). On a worker thread, so that the
   * event loop went on meanwhile, it measured slower still on 2 cores: the event loop waited
   * 13% of the time and the worker's isolate cost 80 MB. Where the native binding is not the
   * one we know, micro-batches go wave by wave.
   */
  private async openSequence(): Promise<void> {
    const { ort } = this;
    const graph = buildSequenceGraph(this.model);
    const serial = await openSession(ort, graph.bytes, sessionOptions(1));
    this.releaseSequence = () => serial.release();
    if (serial.kind !== 'native binding, synchronous') return;
    const runSlab = inThreadRunner((feeds, fetches) => serial.run(feeds, fetches) as Record<string, { data: unknown }>, (type, data, dims) => new ort.Tensor(type, data, dims));
    this.sequence = new SequenceStepper(this.model, graph, runSlab);
  }

  get detail(): string {
    return this.sequence ? `${this.stepDetail}; micro-batches as one sequence run each, 1 thread` : this.stepDetail;
  }
  private releaseSequence = (): void => {};

  stepMicroBatch(mb: MicroBatch): void | Promise<void> {
    if (this.sequence && !mb.states) return this.sequence.step(mb);
    return stepWavesOneByOne(this.model, (...args) => this.step(...args), mb);
  }

  step(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): void | Promise<void> {
    const { model, ort, graph } = this;
    const tensor = (data: Float32Array, from: number, length: number, dims: number[]): unknown => new ort.Tensor('float32', data.subarray(from, from + length), dims);
    const feeds: Record<string, unknown> = { [graph.input]: tensor(input, 0, batch * model.inputSize, [1, batch, model.inputSize]) };
    // Pre-allocated outputs: onnxruntime writes the new state and the head output straight into
    // the caller's buffers, with no copy on either side.
    const fetches: Record<string, unknown> = { [graph.output]: tensor(output, 0, batch * model.outputSize, [batch, model.outputSize]) };
    model.stateSegments.forEach((seg, s) => {
      feeds[graph.stateInputs[s]!] = tensor(state, batch * seg.offset, batch * seg.size, [1, batch, seg.size]);
      fetches[graph.stateOutputs[s]!] = tensor(next, batch * seg.offset, batch * seg.size, [1, batch, seg.size]);
    });
    const session = this.parallel && batch >= PARALLEL_MIN_BATCH ? this.parallel : this.serial;
    const results = session.run(feeds, fetches);
    if (this.writesInPlace) return results instanceof Promise ? results.then(() => undefined) : undefined;
    if (results instanceof Promise) return results.then((r) => this.copyResults(batch, next, output, r));
    this.copyResults(batch, next, output, results);
  }

  /**
   * onnxruntime-node writes pre-allocated outputs in place (and also hands back copies, which we
   * ignore). `create` checks that once with a probe step; where a version does not, results are
   * copied from what run() returned.
   */
  private writesInPlace = false;

  private probeInPlace(): void {
    const { model } = this;
    const next = new Float32Array(model.stateSize).fill(Number.NaN);
    const output = new Float32Array(model.outputSize).fill(Number.NaN);
    this.writesInPlace = false;
    const r = this.step(1, new Float32Array(model.inputSize), new Float32Array(model.stateSize), next, output);
    if (r instanceof Promise) return; // the public async API: keep copying
    this.writesInPlace = !next.some(Number.isNaN) && !output.some(Number.isNaN);
  }

  private copyResults(batch: number, next: Float32Array, output: Float32Array, results: Record<string, { data: unknown }>): void {
    const { model, graph } = this;
    model.stateSegments.forEach((seg, s) => next.set((results[graph.stateOutputs[s]!]!.data as Float32Array).subarray(0, batch * seg.size), batch * seg.offset));
    output.set((results[graph.output]!.data as Float32Array).subarray(0, batch * model.outputSize), 0);
  }

  dispose(): void {
    this.serial.release();
    this.parallel?.release();
    this.releaseSequence();
  }
}

export const onnxProvider: BackendProvider = {
  name: 'onnx',
  priority: 50,
  placement: 'host',
  summary: "onnxruntime-node's native LSTM/GRU/RNN operators on the CPU (the fast CPU backend)",
  create: (model, options) => OnnxBackend.create(model, options),
};
