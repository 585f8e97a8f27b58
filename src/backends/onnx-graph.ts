/**
 * Builds an ONNX graph for ONE time step of a model (all layers and the head) with a dynamic
 * batch dimension, so onnxruntime's native LSTM/GRU/RNN operators run the cell math.
 *
 * The ONNX protobuf is written by the few lines of encoder below rather than a dependency: the
 * graph uses eight message types, and the npm packages that wrap onnx.proto are unmaintained and
 * pull in protobufjs 6.
 *
 * Departures from the model file's (PyTorch) gate order, required by the ONNX operator spec:
 * - LSTM: ONNX stacks gates as i, o, f, c; PyTorch as i, f, g, o (g is ONNX's c).
 * - GRU:  ONNX stacks gates as z, r, h; PyTorch as r, z, n (n is ONNX's h). PyTorch's GRU is
 *         ONNX's `linear_before_reset = 1`.
 * - RNN:  the same single block; ONNX's default activation is tanh, as in PyTorch.
 */
import type { LayerWeights, RnnModel } from '../core/model.js';

// ---- minimal protobuf writer ------------------------------------------------------------

class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  private varint(value: number): void {
    const out: number[] = [];
    let v = value;
    while (v > 127) {
      out.push((v % 128) | 128);
      v = Math.floor(v / 128);
    }
    out.push(v);
    this.push(Uint8Array.from(out));
  }

  private key(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  int(field: number, value: number): this {
    this.key(field, 0);
    this.varint(value);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.key(field, 2);
    this.varint(value.length);
    this.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, value: ProtoWriter): this {
    return this.bytes(field, value.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const p of this.parts) {
      out.set(p, offset);
      offset += p.length;
    }
    return out;
  }
}

// ONNX enum values (onnx.proto).
const FLOAT = 1;
const INT32 = 6;
const INT64 = 7;
const DOUBLE = 11;
const ATTR_INT = 2;

type Dim = number | string;

function tensor(name: string, dims: readonly number[], data: Float32Array | Float64Array | BigInt64Array, elemType: number): ProtoWriter {
  const t = new ProtoWriter();
  for (const d of dims) t.int(1, d);
  t.int(2, elemType);
  t.string(8, name);
  t.bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return t;
}

function valueInfo(name: string, dims: readonly Dim[], elemType = FLOAT): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of dims) shape.message(1, typeof d === 'number' ? new ProtoWriter().int(1, d) : new ProtoWriter().string(2, d));
  const tensorType = new ProtoWriter().int(1, elemType).message(2, shape);
  return new ProtoWriter().string(1, name).message(2, new ProtoWriter().message(1, tensorType));
}

function node(op: string, inputs: readonly string[], outputs: readonly string[], attrs: Record<string, number> = {}): ProtoWriter {
  const n = new ProtoWriter();
  for (const i of inputs) n.string(1, i);
  for (const o of outputs) n.string(2, o);
  n.string(4, op);
  for (const [name, value] of Object.entries(attrs)) {
    n.message(5, new ProtoWriter().string(1, name).int(3, value).int(20, ATTR_INT));
  }
  return n;
}

// ---- gate reordering ------------------------------------------------------------------

/** ONNX block i takes PyTorch block ONNX_BLOCKS[cell][i]. */
const ONNX_BLOCKS = { rnn: [0], lstm: [0, 3, 1, 2], gru: [1, 0, 2] } as const;

function reorderRows(src: Float64Array, layer: LayerWeights, cols: number): Float32Array {
  const H = layer.hiddenSize;
  const out = new Float32Array(src.length);
  ONNX_BLOCKS[layer.cell].forEach((from, to) => {
    out.set(src.subarray(from * H * cols, (from + 1) * H * cols), to * H * cols);
  });
  return out;
}

export interface OnnxStepGraph {
  readonly bytes: Uint8Array;
  /** Input names of each state segment, in model.stateSegments order. */
  readonly stateInputs: readonly string[];
  /** Output names of each state segment, in model.stateSegments order. */
  readonly stateOutputs: readonly string[];
  readonly input: string;
  readonly output: string;
}

export interface StepGraphOptions {
  /** Include the dense head (default true). Without it the graph is only the recurrent op(s),
   * which is how the benchmark measures onnxruntime's bare LSTM/GRU operator. */
  readonly head?: boolean;
  /**
   * Take the raw features as `features` [batch, F] (float64) and normalise them in the graph
   * ((features - mean) / std, the model's normalization), so that the graph is the whole model
   * for a runtime that knows nothing of rnnstream (`rnnstream export`). Default false: the
   * backends feed normalised rows as `x` [1, batch, F].
   */
  readonly normalize?: boolean;
  /** ModelProto metadata_props (what the graph's inputs and outputs mean, for an exported file). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** The head's output name (default `y`). */
  readonly output?: string;
}

/** The ModelProto around `graph`: IR version 8, opset 17, and the metadata. */
function modelProto(graph: ProtoWriter, metadata: Readonly<Record<string, string>> = {}): Uint8Array {
  const opset = new ProtoWriter().string(1, '').int(2, 17);
  const m = new ProtoWriter().int(1, 8).string(2, 'rnnstream').message(8, opset).message(7, graph);
  for (const [key, value] of Object.entries(metadata)) m.message(14, new ProtoWriter().string(1, key).string(2, value));
  return m.finish();
}

/**
 * `features` [batch, F] float64 -> (features - mean) / std in float64 -> float32 `x` [1, batch, F],
 * the recurrent ops' input. In float64 and rounded once, as rnnstream normalises (core/cells.ts):
 * the graph's input rows are rnnstream's bit for bit. Normalised in float32 instead, a feature
 * rounded one ulp apart drifted through a ball's LSTM states to 3.9e-4 in the probabilities.
 */
function normalizeNodes(graph: ProtoWriter, model: RnnModel): string {
  graph.message(11, valueInfo('features', ['batch', model.inputSize], DOUBLE));
  graph.message(5, tensor('norm_mean', [model.inputSize], Float64Array.from(model.normalization.mean), DOUBLE));
  graph.message(5, tensor('norm_std', [model.inputSize], Float64Array.from(model.normalization.std), DOUBLE));
  graph.message(5, tensor('axis0_in', [1], BigInt64Array.from([0n]), INT64));
  graph.message(1, node('Sub', ['features', 'norm_mean'], ['features_centered']));
  graph.message(1, node('Div', ['features_centered', 'norm_std'], ['features_scaled']));
  graph.message(1, node('Cast', ['features_scaled'], ['features_f32'], { to: FLOAT }));
  graph.message(1, node('Unsqueeze', ['features_f32', 'axis0_in'], ['x']));
  return 'features';
}

/** Layer k's weights as initializers W<k>, R<k>, B<k>, in ONNX's gate order. */
function layerInitializers(graph: ProtoWriter, layer: LayerWeights, k: number): void {
  const rows = layer.gates * layer.hiddenSize;
  graph.message(5, tensor(`W${k}`, [1, rows, layer.inputSize], reorderRows(layer.weightIh, layer, layer.inputSize), FLOAT));
  graph.message(5, tensor(`R${k}`, [1, rows, layer.hiddenSize], reorderRows(layer.weightHh, layer, layer.hiddenSize), FLOAT));
  const bias = new Float32Array(2 * rows);
  bias.set(reorderRows(layer.biasIh, layer, 1), 0);
  bias.set(reorderRows(layer.biasHh, layer, 1), rows);
  graph.message(5, tensor(`B${k}`, [1, 2 * rows], bias, FLOAT));
}

/** The recurrent op of `layer` (LSTM, GRU or RNN) with its attributes; Y, Y_h and (LSTM) Y_c as `outputs`. */
function recurrentNode(layer: LayerWeights, inputs: readonly string[], outputs: readonly string[]): ProtoWriter {
  const H = layer.hiddenSize;
  if (layer.cell === 'lstm') return node('LSTM', inputs, outputs, { hidden_size: H });
  if (layer.cell === 'gru') return node('GRU', inputs, outputs.slice(0, 2), { hidden_size: H, linear_before_reset: 1 });
  return node('RNN', inputs, outputs.slice(0, 2), { hidden_size: H });
}

export function buildStepGraph(model: RnnModel, options: StepGraphOptions = {}): OnnxStepGraph {
  const graph = new ProtoWriter().string(2, `${model.name}-step`);
  const stateInputs: string[] = [];
  const stateOutputs: string[] = [];
  let input = 'x';
  if (options.normalize) input = normalizeNodes(graph, model);
  else graph.message(11, valueInfo('x', [1, 'batch', model.inputSize]));
  let x = 'x';
  model.layers.forEach((layer, k) => {
    const H = layer.hiddenSize;
    layerInitializers(graph, layer, k);
    const h = `h${k}`;
    const hOut = `h${k}_next`;
    graph.message(11, valueInfo(h, [1, 'batch', H]));
    graph.message(12, valueInfo(hOut, [1, 'batch', H]));
    stateInputs.push(h);
    stateOutputs.push(hOut);
    const common = [x, `W${k}`, `R${k}`, `B${k}`, '', h];
    if (layer.cell === 'lstm') {
      const c = `c${k}`;
      const cOut = `c${k}_next`;
      graph.message(11, valueInfo(c, [1, 'batch', H]));
      graph.message(12, valueInfo(cOut, [1, 'batch', H]));
      stateInputs.push(c);
      stateOutputs.push(cOut);
      common.push(c);
    }
    graph.message(1, recurrentNode(layer, common, ['', hOut, `c${k}_next`]));
    // Y_h of one time step is [1, batch, H], exactly the X shape the next layer expects.
    x = hOut;
  });
  if (options.head === false) {
    return { bytes: modelProto(graph, options.metadata), stateInputs, stateOutputs, input, output: stateOutputs[0]! };
  }
  const lastH = model.layers[model.layers.length - 1]!.hiddenSize;
  // Head: Squeeze Y_h to [batch, H], then one Gemm (bias included) and Softmax on the last axis.
  // Measured here, a 3D MatMul + Add on Y_h costs about twice this Gemm.
  graph.message(5, tensor('head_w', [model.outputSize, lastH], Float32Array.from(model.head.weight), FLOAT));
  graph.message(5, tensor('head_b', [model.outputSize], Float32Array.from(model.head.bias), FLOAT));
  graph.message(5, tensor('axis0', [1], BigInt64Array.from([0n]), INT64));
  graph.message(1, node('Squeeze', [x, 'axis0'], ['last_h']));
  const softmax = model.head.kind === 'softmax';
  const y = options.output ?? 'y';
  graph.message(1, node('Gemm', ['last_h', 'head_w', 'head_b'], [softmax ? 'logits' : y], { transB: 1 }));
  if (softmax) graph.message(1, node('Softmax', ['logits'], [y], { axis: 1 }));
  graph.message(12, valueInfo(y, ['batch', model.outputSize]));
  return { bytes: modelProto(graph, options.metadata), stateInputs, stateOutputs, input, output: y };
}

/** A sequence graph's names (buildSequenceGraph). */
export interface OnnxSequenceGraph extends OnnxStepGraph {
  /** Each key's number of steps, int32 [batch]. */
  readonly lengths: string;
}

/**
 * The model over a sequence of steps in one run: `x` [steps, batch, F] (normalised rows, time
 * first, a key's rows past its length ignored), `lengths` int32 [batch], each layer's state in
 * and its state after each key's LAST step out (ONNX's Y_h and Y_c honour sequence_lens), and
 * the head's output `y` [steps * batch, outputSize] for every step (rows past a key's length are
 * padding). The onnx backend's micro-batches (OnnxBackend.stepMicroBatch): one run per micro-batch
 * instead of one per wave. The recurrent ops are the step graph's, over time in native code.
 */
export function buildSequenceGraph(model: RnnModel): OnnxSequenceGraph {
  const graph = new ProtoWriter().string(2, `${model.name}-sequence`);
  const stateInputs: string[] = [];
  const stateOutputs: string[] = [];
  graph.message(11, valueInfo('x', ['steps', 'batch', model.inputSize]));
  graph.message(11, valueInfo('lengths', ['batch'], INT32));
  graph.message(5, tensor('axis1', [1], BigInt64Array.from([1n]), INT64));
  let x = 'x';
  model.layers.forEach((layer, k) => {
    const H = layer.hiddenSize;
    layerInitializers(graph, layer, k);
    const names = layer.cell === 'lstm' ? [`h${k}`, `c${k}`] : [`h${k}`];
    for (const n of names) {
      graph.message(11, valueInfo(n, [1, 'batch', H]));
      graph.message(12, valueInfo(`${n}_next`, [1, 'batch', H]));
      stateInputs.push(n);
      stateOutputs.push(`${n}_next`);
    }
    graph.message(1, recurrentNode(layer, [x, `W${k}`, `R${k}`, `B${k}`, 'lengths', ...names], [`y${k}`, `h${k}_next`, `c${k}_next`]));
    // Y is [steps, 1 direction, batch, H]; the next layer (and the head) take [steps, batch, H].
    graph.message(1, node('Squeeze', [`y${k}`, 'axis1'], [`x${k + 1}`]));
    x = `x${k + 1}`;
  });
  const lastH = model.layers[model.layers.length - 1]!.hiddenSize;
  graph.message(5, tensor('head_w', [model.outputSize, lastH], Float32Array.from(model.head.weight), FLOAT));
  graph.message(5, tensor('head_b', [model.outputSize], Float32Array.from(model.head.bias), FLOAT));
  graph.message(5, tensor('rows_by_h', [2], BigInt64Array.from([-1n, BigInt(lastH)]), INT64));
  graph.message(1, node('Reshape', [x, 'rows_by_h'], ['all_h']));
  const softmax = model.head.kind === 'softmax';
  graph.message(1, node('Gemm', ['all_h', 'head_w', 'head_b'], [softmax ? 'logits' : 'y'], { transB: 1 }));
  if (softmax) graph.message(1, node('Softmax', ['logits'], ['y'], { axis: 1 }));
  graph.message(12, valueInfo('y', ['rows', model.outputSize]));
  return { bytes: modelProto(graph), stateInputs, stateOutputs, input: 'x', lengths: 'lengths', output: 'y' };
}
