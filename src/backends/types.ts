/**
 * The contract every compute backend implements: one step of the whole model (all layers and
 * the head) for a batch of B keys, in one go.
 *
 * Batch layout, shared by every backend so the state store can gather and scatter once:
 * - `input`:  [B, inputSize] row-major, already normalized features.
 * - `state`:  segment-major. For each segment s of `model.stateSegments` (layer 0 h, layer 0 c
 *             for LSTM, layer 1 h, ...), a [B, s.size] row-major block starting at
 *             `B * s.offset`: the keys' state before the step. Only read.
 * - `next`:   the same layout, written with the keys' state after the step. A separate buffer,
 *             so a backend can write its results straight into it (onnxruntime does).
 * - `output`: [B, outputSize] row-major: softmax probabilities or linear values.
 * Arrays may be longer than B rows need; only the first B rows are read or written.
 */
import type { RnnModel } from '../core/model.js';

export const BACKEND_NAMES = ['webgpu', 'gpu', 'onnx', 'webasm', 'cpu', 'reference'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type BackendChoice = BackendName | 'auto';

export interface StepBackend {
  readonly name: BackendName;
  /** What actually runs underneath: device or renderer, library version, threads. */
  readonly detail: string;
  /**
   * Steps `batch` keys once. Synchronous backends return undefined; asynchronous ones (webgpu,
   * onnx) return a promise, and the caller must not touch the arrays until it settles.
   */
  step(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): void | Promise<void>;
  dispose(): void;
}

export interface BackendOptions {
  /** CPU threads a backend may use (onnx intra-op threads); defaults to the host's parallelism. */
  readonly threads?: number;
}

/** Creates one backend for one model; throws BackendUnavailableError with the reason. */
export interface BackendProvider {
  readonly name: BackendName;
  /** Higher is tried first by `auto`. */
  readonly priority: number;
  /**
   * `device`: runs on an accelerator (a GPU through WebGL or WebGPU). A device backend is not
   * assumed faster than the best host backend: each step pays a transfer and a round trip, so at
   * small batches a CPU library wins even beside an H100 (docs/benchmarks.md). `auto` times them.
   */
  readonly placement: 'device' | 'host';
  /** One line for `--help` and the docs. */
  readonly summary: string;
  create(model: RnnModel, options: BackendOptions): Promise<StepBackend>;
}

/** Offset of segment `s` (by its per-key offset) in a segment-major batch state of `batch` keys. */
export const segmentBlockOffset = (batch: number, segmentOffset: number): number => batch * segmentOffset;
