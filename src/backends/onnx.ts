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
import { buildStepGraph, type OnnxStepGraph } from './onnx-graph.js';
import type { BackendOptions, BackendProvider, StepBackend } from './types.js';

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
interface SessionRunner {
  run(feeds: Record<string, unknown>, fetches: Record<string, null>): Record<string, { data: unknown }> | Promise<Record<string, { data: unknown }>>;
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
async function openSession(ort: any, bytes: Uint8Array, options: Record<string, unknown>): Promise<SessionRunner> {
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

export class OnnxBackend implements StepBackend {
  readonly name = 'onnx' as const;
  private readonly fetches: Record<string, null>;

  private constructor(
    readonly detail: string,
    private readonly model: RnnModel,
    private readonly ort: any,
    private readonly session: SessionRunner,
    private readonly graph: OnnxStepGraph,
  ) {
    this.fetches = Object.fromEntries([...graph.stateOutputs, graph.output].map((n) => [n, null]));
  }

  static async create(model: RnnModel, options: BackendOptions): Promise<OnnxBackend> {
    const ort = loadOnnxRuntime();
    const graph = buildStepGraph(model);
    const threads = options.threads ?? availableParallelism();
    let session: SessionRunner;
    try {
      session = await openSession(ort, graph.bytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionProviders: ['cpu'],
        graphOptimizationLevel: 'all',
        // Spinning worker threads would steal the cores the event loop needs between steps.
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
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
    return new OnnxBackend(`onnxruntime-node ${version} (${session.kind}), CPU execution provider, ${threads} intra-op threads`, model, ort, session, graph);
  }

  step(batch: number, input: Float32Array, state: Float32Array, output: Float32Array): void | Promise<void> {
    const { model, ort, graph } = this;
    const feeds: Record<string, unknown> = {
      [graph.input]: new ort.Tensor('float32', input.subarray(0, batch * model.inputSize), [1, batch, model.inputSize]),
    };
    model.stateSegments.forEach((seg, s) => {
      const block = state.subarray(batch * seg.offset, batch * (seg.offset + seg.size));
      feeds[graph.stateInputs[s]!] = new ort.Tensor('float32', block, [1, batch, seg.size]);
    });
    const results = this.session.run(feeds, this.fetches);
    if (results instanceof Promise) return results.then((r) => this.unpack(batch, state, output, r));
    this.unpack(batch, state, output, results);
  }

  private unpack(batch: number, state: Float32Array, output: Float32Array, results: Record<string, { data: unknown }>): void {
    const { model, graph } = this;
    model.stateSegments.forEach((seg, s) => {
      state.set(results[graph.stateOutputs[s]!]!.data as Float32Array, batch * seg.offset);
    });
    output.set(results[graph.output]!.data as Float32Array, 0);
  }

  dispose(): void {
    this.session.release();
  }
}

export const onnxProvider: BackendProvider = {
  name: 'onnx',
  priority: 50,
  summary: "onnxruntime-node's native LSTM/GRU/RNN operators on the CPU (the fast CPU backend)",
  create: (model, options) => OnnxBackend.create(model, options),
};
