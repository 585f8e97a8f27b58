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

export class OnnxBackend implements StepBackend {
  readonly name = 'onnx' as const;

  private constructor(
    readonly detail: string,
    private readonly model: RnnModel,
    private readonly ort: any,
    private readonly session: any,
    private readonly graph: OnnxStepGraph,
  ) {}

  static async create(model: RnnModel, options: BackendOptions): Promise<OnnxBackend> {
    const ort = loadOnnxRuntime();
    const graph = buildStepGraph(model);
    const threads = options.threads ?? availableParallelism();
    let session: any;
    try {
      session = await ort.InferenceSession.create(graph.bytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionProviders: ['cpu'],
        graphOptimizationLevel: 'all',
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
    return new OnnxBackend(`onnxruntime-node ${version}, CPU execution provider, ${threads} intra-op threads`, model, ort, session, graph);
  }

  async step(batch: number, input: Float32Array, state: Float32Array, output: Float32Array): Promise<void> {
    const { model, ort, graph } = this;
    const feeds: Record<string, unknown> = {
      [graph.input]: new ort.Tensor('float32', input.subarray(0, batch * model.inputSize), [1, batch, model.inputSize]),
    };
    model.stateSegments.forEach((seg, s) => {
      const block = state.subarray(batch * seg.offset, batch * (seg.offset + seg.size));
      feeds[graph.stateInputs[s]!] = new ort.Tensor('float32', block, [1, batch, seg.size]);
    });
    const results = await this.session.run(feeds);
    model.stateSegments.forEach((seg, s) => {
      state.set(results[graph.stateOutputs[s]!].data as Float32Array, batch * seg.offset);
    });
    output.set(results[graph.output].data as Float32Array, 0);
  }

  dispose(): void {
    void this.session.release?.();
  }
}

export const onnxProvider: BackendProvider = {
  name: 'onnx',
  priority: 50,
  summary: "onnxruntime-node's native LSTM/GRU/RNN operators on the CPU (the fast CPU backend)",
  create: (model, options) => OnnxBackend.create(model, options),
};
