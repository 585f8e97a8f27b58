/**
 * The onnx backend's micro-batches: each key's events in a micro-batch as one sequence, stepped
 * by onnxruntime's recurrent ops over time in one run (onnx-graph.ts, buildSequenceGraph), not
 * one run per wave.
 *
 * A ball replay's micro-batch of 4,096 events holds about 150 keys of about 27 events each: 27
 * waves of ~150 rows, each a run with its fixed cost, and each key's state gathered into the
 * wave's batch and scattered back 27 times. As a sequence it is one run, and each key's state
 * goes in once and comes out once.
 *
 * Keys come sorted by their number of events, most first (MicroBatch), so key b's sequence is
 * the waves that still hold it. A run pads every key to the longest of its run; keys are cut
 * into runs of similar lengths (each at least half its run's longest), so padding never doubles
 * the work whatever the micro-batch's shape: a key with 4,000 events beside a thousand with one
 * is two runs, not 4,000 x 1,001 rows.
 *
 * onnxruntime's LSTM, GRU and RNN give each key's state after its own last step (Y_h and Y_c
 * honour sequence_lens), but not the state after every step; a micro-batch that asks for every
 * row's state (`states`, a changelog's captures) is stepped wave by wave instead.
 */
import type { RnnModel } from '../core/model.js';
import type { OnnxSequenceGraph } from './onnx-graph.js';
import { waveStarts, type MicroBatch } from './types.js';

/** One tensor in a slab of memory. */
export interface TensorSpec {
  readonly name: string;
  readonly type: 'float32' | 'int32';
  readonly byteOffset: number;
  readonly length: number;
  readonly dims: readonly number[];
}

/** Runs the sequence graph on `slab` (its tensors described by specs), writing the outputs into it. */
export type RunSlab = (slab: ArrayBuffer, feeds: readonly TensorSpec[], fetches: readonly TensorSpec[]) => void;

/** Each key's number of events: key b is in waves 0..n-1 where waveSizes[n-1] > b. */
export function keyLengths(waveSizes: Int32Array, keys: number): Int32Array {
  const lengths = new Int32Array(keys);
  for (let w = 0; w < waveSizes.length; w++) for (let b = 0; b < waveSizes[w]!; b++) lengths[b]!++;
  return lengths;
}

/** Runs [from, to) of keys sorted by length (most first), each key at least half its run's first. */
export function lengthRuns(lengths: Int32Array): [number, number][] {
  const runs: [number, number][] = [];
  let from = 0;
  for (let b = 1; b <= lengths.length; b++) {
    if (b === lengths.length || 2 * lengths[b]! <= lengths[from]!) {
      runs.push([from, b]);
      from = b;
    }
  }
  return runs;
}

export class SequenceStepper {
  /** Every run's memory, reused: [x | lengths | state | y | final state]. */
  private slab = new ArrayBuffer(0);

  constructor(
    private readonly model: RnnModel,
    private readonly graph: OnnxSequenceGraph,
    private readonly runSlab: RunSlab,
  ) {}

  /** Every wave of `mb` (without `states`), written as stepWavesOneByOne writes them. */
  step(mb: MicroBatch): void {
    const lengths = keyLengths(mb.waveSizes, mb.keys);
    const { starts } = waveStarts(mb.waveSizes);
    for (const [from, to] of lengthRuns(lengths)) this.stepKeys(mb, { lengths, starts, from, to });
  }

  /** Keys [from, to) of `mb` in one run. */
  private stepKeys(mb: MicroBatch, at: { lengths: Int32Array; starts: Int32Array; from: number; to: number }): void {
    const { model, graph } = this;
    const { lengths, starts, from, to } = at;
    const I = model.inputSize;
    const O = model.outputSize;
    const S = model.stateSize;
    const n = to - from;
    const T = lengths[from]!;
    // Every tensor is 4-byte floats or ints: offsets in elements, times 4.
    const layout = { x: 0, lengths: T * n * I, state: T * n * I + n, y: T * n * I + n + n * S, final: T * n * (I + O) + n + n * S, end: T * n * (I + O) + n + 2 * n * S };
    if (this.slab.byteLength < 4 * layout.end) this.slab = new ArrayBuffer(8 * layout.end);
    const slab = this.slab;
    const x = new Float32Array(slab, 0, T * n * I);
    // x [T, n, I], time first: step t's rows are wave t's rows of these keys, then zeros.
    for (let t = 0; t < T; t++) {
      const present = Math.min(Math.max(mb.waveSizes[t]! - from, 0), n);
      x.set(mb.input.subarray((starts[t]! + from) * I, (starts[t]! + from + present) * I), t * n * I);
      x.fill(0, (t * n + present) * I, (t + 1) * n * I);
    }
    new Int32Array(slab, 4 * layout.lengths, n).set(lengths.subarray(from, to));
    const spec = (name: string, offset: number, length: number, dims: number[], type: TensorSpec['type'] = 'float32'): TensorSpec => ({ name, type, byteOffset: 4 * offset, length, dims });
    const feeds = [spec(graph.input, layout.x, T * n * I, [T, n, I]), spec(graph.lengths, layout.lengths, n, [n], 'int32')];
    const fetches = [spec(graph.output, layout.y, T * n * O, [T * n, O])];
    // A segment's rows of keys [from, to) are contiguous in a segment-major block of mb.keys keys.
    const rowsOf = (block: Float32Array, offset: number, size: number): Float32Array => block.subarray(mb.keys * offset + from * size, mb.keys * offset + to * size);
    for (const [s, seg] of model.stateSegments.entries()) {
      new Float32Array(slab, 4 * (layout.state + n * seg.offset), n * seg.size).set(rowsOf(mb.state, seg.offset, seg.size));
      feeds.push(spec(graph.stateInputs[s]!, layout.state + n * seg.offset, n * seg.size, [1, n, seg.size]));
      fetches.push(spec(graph.stateOutputs[s]!, layout.final + n * seg.offset, n * seg.size, [1, n, seg.size]));
    }
    this.runSlab(slab, feeds, fetches);
    const y = new Float32Array(slab, 4 * layout.y, T * n * O);
    // Outputs back to wave order: step t of these keys is wave t's rows from..from+present-1.
    for (let t = 0; t < T; t++) {
      const present = Math.min(Math.max(mb.waveSizes[t]! - from, 0), n);
      mb.output.set(y.subarray(t * n * O, (t * n + present) * O), (starts[t]! + from) * O);
    }
    for (const seg of model.stateSegments) rowsOf(mb.finalState, seg.offset, seg.size).set(new Float32Array(slab, 4 * (layout.final + n * seg.offset), n * seg.size));
  }
}

/** A RunSlab on this thread: `run` is a session's synchronous run, `tensor` onnxruntime's Tensor. */
export function inThreadRunner(
  run: (feeds: Record<string, unknown>, fetches: Record<string, unknown>) => Record<string, { data: unknown }>,
  tensor: (type: TensorSpec['type'], data: Float32Array | Int32Array, dims: readonly number[]) => unknown,
): RunSlab {
  const view = (slab: ArrayBuffer, t: TensorSpec): Float32Array | Int32Array => (t.type === 'int32' ? new Int32Array(slab, t.byteOffset, t.length) : new Float32Array(slab, t.byteOffset, t.length));
  return (slab, feedSpecs, fetchSpecs) => {
    const feeds: Record<string, unknown> = {};
    for (const t of feedSpecs) feeds[t.name] = tensor(t.type, view(slab, t), t.dims);
    const fetches: Record<string, unknown> = {};
    const outputs = fetchSpecs.map((t) => {
      const into = view(slab, t);
      fetches[t.name] = tensor(t.type, into, t.dims);
      return [t.name, into] as const;
    });
    const results = run(feeds, fetches);
    // onnxruntime-node writes pre-allocated outputs in place; a version that hands back copies
    // instead has them copied.
    for (const [name, into] of outputs) {
      const got = results[name]?.data as Float32Array | undefined;
      if (got && got.buffer !== slab) into.set(got.subarray(0, into.length));
    }
  };
}
