/**
 * `rnnstream import`: an ONNX recurrent network as an rnnstream model file.
 *
 * What it accepts is what torch.onnx.export and tf2onnx write for a stack of nn.RNN (tanh),
 * nn.LSTM or nn.GRU layers, forward only, with an optional Linear head and an optional Softmax:
 *
 *   x -> [Transpose] -> LSTM|GRU|RNN -> Squeeze -> [LSTM|GRU|RNN -> Squeeze]... -> [Transpose]
 *     -> [MatMul + Add | Gemm] -> [Softmax] -> output
 *
 * The path is followed from the graph's input by what each node computes, not by node names:
 * a Transpose that swaps the batch and time axes changes only the layout; a Squeeze that drops
 * the one-direction axis of a layer's output is the step between layers; an initial state
 * (initial_h, initial_c) must be zeros whatever plumbing makes it (ConstantOfShape of a shape
 * built by Shape, Gather, Concat, then Slice, Expand, Unsqueeze, Cast...), since rnnstream
 * starts every key at zero. A
 * head may also read the last layer's final hidden state (Y_h): applied per event, it is the
 * prediction the model would make had the sequence ended at that event.
 *
 * Gates are reordered to rnnstream's (PyTorch's) order: ONNX's LSTM blocks are i, o, f, c
 * (rnnstream i, f, g, o) and its GRU blocks z, r, h (rnnstream r, z, n). GRU must have
 * linear_before_reset = 1 (PyTorch's cell; 0 is Keras's reset_after=False, another cell).
 * Anything else is refused with the node's name and op type: a bidirectional layer, peepholes,
 * clip, other activations, sequence lengths, an op between layers.
 */
import { RnnStreamError } from '../core/errors.js';
import { GATE_COUNT, MODEL_FORMAT, parseModel, type CellKind, type LayerFile, type ModelFile } from '../core/model.js';
import { ImportError, readOnnx, type OnnxGraph, type OnnxNode, type OnnxTensor } from './onnx-file.js';

export { ImportError } from './onnx-file.js';

export interface ImportOptions {
  /** The model's name (default: the file's). */
  readonly name: string;
  /** Feature names; their count must be the first layer's input size (default x0, x1, ...). */
  readonly features?: readonly string[];
  /** Class labels (softmax) or output names (linear); default class0... or y0.... */
  readonly labels?: readonly string[];
  /** Where the file came from, for the model's provenance. */
  readonly source?: string;
}

/** How the ONNX graph was read: what a caller needs to run the original beside the import. */
export interface ImportedModel {
  readonly model: ModelFile;
  /** The graph input fed with the features, and whether it is [batch, time, features]. */
  readonly input: { readonly name: string; readonly batchFirst: boolean };
  /** The graph output the head's values come from; `finalOnly`: one per sequence (from Y_h), not one per step. */
  readonly output: { readonly name: string; readonly finalOnly: boolean };
  /** One line per recognised piece, for the command's report. */
  readonly notes: readonly string[];
}

const RECURRENT: Readonly<Record<string, CellKind>> = { LSTM: 'lstm', GRU: 'gru', RNN: 'rnn' };

/** rnnstream's gate block k is ONNX's block ORDER[cell][k]. */
const ONNX_BLOCK: Readonly<Record<CellKind, readonly number[]>> = {
  rnn: [0],
  // ONNX i, o, f, c -> rnnstream i, f, g(c), o
  lstm: [0, 2, 3, 1],
  // ONNX z, r, h -> rnnstream r, z, n(h)
  gru: [1, 0, 2],
};

/** The activations PyTorch's cells use, as ONNX names them (the ONNX defaults). */
const ACTIVATIONS: Readonly<Record<CellKind, readonly string[]>> = { rnn: ['Tanh'], lstm: ['Sigmoid', 'Tanh', 'Tanh'], gru: ['Sigmoid', 'Tanh'] };

const where = (n: OnnxNode): string => `node "${n.name}" (${n.opType})`;

class Graph {
  readonly producers = new Map<string, OnnxNode>();
  readonly consumers = new Map<string, OnnxNode[]>();
  readonly outputs: Set<string>;

  constructor(readonly g: OnnxGraph) {
    for (const n of g.nodes) {
      for (const o of n.outputs) if (o) this.producers.set(o, n);
      n.inputs.forEach((i) => {
        if (!i) return;
        const list = this.consumers.get(i) ?? [];
        list.push(n);
        this.consumers.set(i, list);
      });
    }
    this.outputs = new Set(g.outputs.map((o) => o.name));
  }

  constant(name: string): OnnxTensor | undefined {
    return this.g.constants.get(name);
  }

  /** The one node that reads `value` (undefined when none does); refuses a fork on the data path. */
  next(value: string): OnnxNode | undefined {
    const users = (this.consumers.get(value) ?? []).filter((n) => n.opType !== 'Shape');
    if (users.length > 1) throw new ImportError(`the value "${value}" feeds ${users.length} nodes (${users.map(where).join(', ')}); rnnstream imports a single chain of layers`);
    return users[0];
  }

  /**
   * True when `value` is all zeros whatever its shape: a zero constant, or ConstantOfShape with
   * value 0, through ops that only move or reshape elements (Expand, Reshape, Unsqueeze, Squeeze,
   * Transpose, Cast, Identity, Tile).
   */
  isZeros(value: string, depth = 0): boolean {
    if (depth > 32) return false;
    const c = this.constant(value);
    if (c) return c.data.every((v) => v === 0);
    const n = this.producers.get(value);
    if (!n) return false;
    switch (n.opType) {
      case 'ConstantOfShape': {
        const t = n.attributes.get('value')?.t;
        return !t || t.data.every((v) => v === 0);
      }
      // Each of these only selects, moves or repeats elements of its first input.
      case 'Expand':
      case 'Reshape':
      case 'Unsqueeze':
      case 'Squeeze':
      case 'Transpose':
      case 'Cast':
      case 'Identity':
      case 'Tile':
      case 'Slice':
      case 'Gather':
        return this.isZeros(n.inputs[0]!, depth + 1);
      default:
        return false;
    }
  }

  /** The axes a Squeeze or Unsqueeze names (attribute before opset 13, an input from 13). */
  axes(n: OnnxNode): number[] | undefined {
    const attr = n.attributes.get('axes')?.ints;
    if (attr) return [...attr];
    const input = n.inputs[1];
    if (!input) return undefined;
    const c = this.constant(input);
    if (!c) throw new ImportError(`${where(n)}: its axes are computed, not constant`);
    return Array.from(c.data);
  }
}

/** The data path's layout as it reaches each node: the order of time and batch, and the dims. */
interface PathState {
  value: string;
  /**
   * Time and batch are swapped relative to where the layout was last known: the graph's input
   * before the first layer (whose order only the first layer tells), time-first after a layer.
   */
  swapped: boolean;
  /** Whether the path carries the per-step outputs (Y) or only the final state (Y_h). */
  finalOnly: boolean;
  /** Rank of the value on the path (3 for [time, batch, features]; 4 right after a layer's Y). */
  rank: number;
  /** Feature size of the value on the path. */
  width: number;
}

function rows(t: OnnxTensor, what: string): number[][] {
  if (t.dims.length !== 2) throw new ImportError(`${what}: expected a matrix, got dims [${t.dims.join(', ')}]`);
  const [r, c] = t.dims as [number, number];
  return Array.from({ length: r }, (_, i) => Array.from(t.data.subarray(i * c, (i + 1) * c)));
}

/** Rows [block*H, (block+1)*H) of a [G*H, cols] matrix (or G*H vector) stored flat. */
function blockRows(flat: Float64Array, block: number, hidden: number, cols: number): number[][] {
  return Array.from({ length: hidden }, (_, r) => Array.from(flat.subarray((block * hidden + r) * cols, (block * hidden + r + 1) * cols)));
}

function recurrentLayer(graph: Graph, n: OnnxNode, inputSize: number): LayerFile {
  const cell = RECURRENT[n.opType]!;
  const attr = (name: string) => n.attributes.get(name);
  const direction = attr('direction')?.s ?? 'forward';
  if (direction !== 'forward') throw new ImportError(`${where(n)}: direction "${direction}": rnnstream reads events as they arrive, so only forward layers can be streamed`);
  if (attr('clip')) throw new ImportError(`${where(n)}: clip ${attr('clip')!.f}: the cell clips its pre-activations, which PyTorch's cells (and rnnstream's) do not`);
  if (attr('input_forget')?.i) throw new ImportError(`${where(n)}: input_forget=1 couples the input and forget gates, a different cell`);
  if ((attr('layout')?.i ?? 0) !== 0) throw new ImportError(`${where(n)}: layout=1 (batch-first inputs to the op itself) is not supported; export with the default layout`);
  const activations = attr('activations')?.strings;
  if (activations && activations.join(',') !== ACTIVATIONS[cell].join(',')) {
    throw new ImportError(`${where(n)}: activations ${activations.join(', ')}; rnnstream's ${cell} cell uses ${ACTIVATIONS[cell].join(', ')}`);
  }
  if (attr('activation_alpha') || attr('activation_beta')) throw new ImportError(`${where(n)}: activation_alpha/beta parameterise other activations than rnnstream's`);
  if (cell === 'gru' && (attr('linear_before_reset')?.i ?? 0) !== 1) {
    throw new ImportError(`${where(n)}: linear_before_reset=0 applies the reset gate before the recurrent weights (Keras's reset_after=False), a different cell from PyTorch's nn.GRU (linear_before_reset=1)`);
  }
  const [x, w, r, b, seqLens, initH, initC, peephole] = n.inputs;
  if (seqLens) throw new ImportError(`${where(n)}: sequence_lens: a stream has no fixed sequence lengths; export without them`);
  if (peephole) throw new ImportError(`${where(n)}: peephole weights (input P): rnnstream's LSTM, as PyTorch's, has no peepholes`);
  for (const [name, value] of [['initial_h', initH], ['initial_c', initC]] as const) {
    if (value && !graph.isZeros(value)) throw new ImportError(`${where(n)}: ${name} is not zeros: rnnstream starts every key at zero state`);
  }
  void x;
  const W = graph.constant(w!);
  const R = graph.constant(r!);
  if (!W || !R) throw new ImportError(`${where(n)}: its weights W and R must be constants (initializers)`);
  const G = GATE_COUNT[cell];
  const hidden = attr('hidden_size')?.i ?? W.dims[1]! / G;
  if (W.dims.join(',') !== `1,${G * hidden},${inputSize}`) throw new ImportError(`${where(n)}: W has dims [${W.dims.join(', ')}], expected [1, ${G * hidden}, ${inputSize}] (forward, ${G} gates x hidden ${hidden}, by the input size ${inputSize})`);
  if (R.dims.join(',') !== `1,${G * hidden},${hidden}`) throw new ImportError(`${where(n)}: R has dims [${R.dims.join(', ')}], expected [1, ${G * hidden}, ${hidden}]`);
  const B = b ? graph.constant(b) : undefined;
  if (b && !B) throw new ImportError(`${where(n)}: its bias B must be a constant`);
  if (B && B.dims.join(',') !== `1,${2 * G * hidden}`) throw new ImportError(`${where(n)}: B has dims [${B.dims.join(', ')}], expected [1, ${2 * G * hidden}]`);
  const order = ONNX_BLOCK[cell];
  const bias = (half: number): number[] => order.flatMap((k) => (B ? Array.from(B.data.subarray(half * G * hidden + k * hidden, half * G * hidden + (k + 1) * hidden)) : new Array<number>(hidden).fill(0)));
  return {
    cell,
    inputSize,
    hiddenSize: hidden,
    weightIh: order.flatMap((k) => blockRows(W.data, k, hidden, inputSize)),
    weightHh: order.flatMap((k) => blockRows(R.data, k, hidden, hidden)),
    biasIh: bias(0),
    biasHh: bias(1),
  };
}

/** Reads an ONNX file's bytes as an rnnstream model; throws ImportError naming what it cannot import. */
export function importOnnx(bytes: Uint8Array, options: ImportOptions): ImportedModel {
  const g = readOnnx(bytes);
  const graph = new Graph(g);
  if (g.inputs.length !== 1) throw new ImportError(`the graph has ${g.inputs.length} inputs (${g.inputs.map((i) => i.name).join(', ')}); rnnstream feeds one, the features (initial states must be built inside the graph, as zeros)`);
  const input = g.inputs[0]!;
  const inputWidth = typeof input.dims?.at(-1) === 'number' ? (input.dims.at(-1) as number) : undefined;
  const notes: string[] = [`read ${g.nodes.length} nodes (opset ${g.opset}${g.producer ? `, ${g.producer}` : ''})`];
  const layers: LayerFile[] = [];
  let head: { weight: number[][]; bias: number[] } | undefined;
  let softmax = false;
  let path: PathState = { value: input.name, swapped: false, finalOnly: false, rank: input.dims?.length ?? 3, width: inputWidth ?? 0 };
  // A recurrent op reads [time, batch, features]: as many Transposes before the first layer as
  // make the input time-first say whether the input was batch-first.
  let inputBatchFirst = false;
  let outputName: string | undefined;
  for (let guard = 0; guard < 10_000; guard++) {
    if (graph.outputs.has(path.value) && !graph.next(path.value)) {
      outputName = path.value;
      break;
    }
    const n = graph.next(path.value);
    if (!n) throw new ImportError(`the value "${path.value}" leads nowhere: it is neither read by a node nor a graph output`);
    if (n.domain && n.domain !== 'ai.onnx') throw new ImportError(`${where(n)}: domain "${n.domain}" is not the standard ONNX domain`);
    if (layers.length === 0 && RECURRENT[n.opType]) {
      inputBatchFirst = path.swapped;
      path = { ...path, swapped: false };
    }
    path = step(graph, n, path, layers, notes, (h) => (head = h), () => (softmax = true));
  }
  if (!outputName) throw new ImportError('the graph is too long to follow (more than 10,000 steps)');
  if (layers.length === 0) throw new ImportError('no LSTM, GRU or RNN node on the path from the input to the output');
  if (softmax && !head) throw new ImportError('a Softmax over the hidden state with no Linear head: add the head (or drop the Softmax) before exporting');
  const last = layers.at(-1)!.hiddenSize;
  const headWeights = head ?? { weight: Array.from({ length: last }, (_, i) => Array.from({ length: last }, (_, j) => (i === j ? 1 : 0))), bias: new Array<number>(last).fill(0) };
  if (!head) notes.push(`no head: the outputs are the last layer's hidden state (an identity head of ${last} outputs)`);
  const outputs = headWeights.weight.length;
  const features = options.features ?? Array.from({ length: layers[0]!.inputSize }, (_, i) => `x${i}`);
  if (features.length !== layers[0]!.inputSize) throw new ImportError(`the model reads ${layers[0]!.inputSize} features per event, but ${features.length} are named (${features.join(', ')})`);
  const names = options.labels ?? Array.from({ length: outputs }, (_, i) => (softmax ? `class${i}` : head ? `y${i}` : `h${i}`));
  if (names.length !== outputs) throw new ImportError(`the model has ${outputs} outputs, but ${names.length} labels were given (${names.join(', ')})`);
  const model: ModelFile = {
    format: MODEL_FORMAT,
    version: 1,
    name: options.name,
    features: [...features],
    normalization: { mean: new Array<number>(features.length).fill(0), std: new Array<number>(features.length).fill(1) },
    layers,
    head: softmax ? { kind: 'softmax', labels: [...names], ...headWeights } : { kind: 'linear', outputs: [...names], ...headWeights },
    training: { kind: 'imported', from: 'onnx', ...(options.source ? { source: options.source } : {}), ...(g.producer ? { producer: g.producer } : {}), opset: g.opset },
  };
  try {
    parseModel(model, options.source ?? '<imported model>');
  } catch (err) {
    throw new ImportError(`the imported model does not validate: ${(err as RnnStreamError).message}`);
  }
  return { model, input: { name: input.name, batchFirst: inputBatchFirst ?? false }, output: { name: outputName, finalOnly: path.finalOnly }, notes };
}

/** One node on the data path: what it does to the path, or why it cannot be imported. */
function step(
  graph: Graph,
  n: OnnxNode,
  path: PathState,
  layers: LayerFile[],
  notes: string[],
  setHead: (h: { weight: number[][]; bias: number[] }) => void,
  setSoftmax: () => void,
): PathState {
  const out = (value: string | undefined, change: Partial<PathState> = {}): PathState => {
    if (!value) throw new ImportError(`${where(n)}: has no output`);
    return { ...path, ...change, value };
  };
  switch (n.opType) {
    case 'Identity':
    case 'Dropout': // an inference graph's Dropout passes its input through
      return out(n.outputs[0]);
    case 'Transpose': {
      const perm = n.attributes.get('perm')?.ints ?? [];
      // Swapping the time and batch axes of a 3-D value only changes the layout.
      if (path.rank === 3 && perm.join(',') === '1,0,2') return out(n.outputs[0], { swapped: !path.swapped });
      throw new ImportError(`${where(n)}: perm [${perm.join(', ')}] on the path (only swapping time and batch, [1, 0, 2], is a layout change)`);
    }
    case 'LSTM':
    case 'GRU':
    case 'RNN': {
      if (path.finalOnly) throw new ImportError(`${where(n)}: a layer after the previous layer's final state (Y_h) reads one step per sequence, not a stream`);
      if (path.swapped) throw new ImportError(`${where(n)}: its input is batch-first here; ONNX's ${n.opType} reads [time, batch, features]`);
      if (n.inputs[0] !== path.value) throw new ImportError(`${where(n)}: the path enters it as "${path.value}", not as its input X`);
      const inputSize = layers.length === 0 ? path.width || (graph.constant(n.inputs[1]!)?.dims[2] ?? 0) : layers.at(-1)!.hiddenSize;
      const layer = recurrentLayer(graph, n, inputSize);
      layers.push(layer);
      notes.push(`${where(n)}: ${layer.cell} layer ${layers.length - 1} (${layer.inputSize} -> ${layer.hiddenSize}), gates reordered to rnnstream's`);
      const [y, yh, yc] = n.outputs;
      const usedY = y && (graph.consumers.get(y)?.length || graph.outputs.has(y));
      const usedYh = yh && (graph.consumers.get(yh)?.length || graph.outputs.has(yh));
      if (yc && (graph.consumers.get(yc)?.length || graph.outputs.has(yc))) throw new ImportError(`${where(n)}: its final cell state (Y_c) is used; rnnstream's head reads hidden states`);
      if (usedY && usedYh) throw new ImportError(`${where(n)}: both its outputs Y and Y_h are used; rnnstream imports one chain`);
      if (usedYh) return out(yh, { rank: 3, finalOnly: true, width: layer.hiddenSize });
      return out(y, { rank: 4, width: layer.hiddenSize });
    }
    case 'Squeeze': {
      const axes = graph.axes(n);
      // Y is [time, 1, batch, hidden]: dropping axis 1 (the one direction) is the step to the next layer.
      // Y_h is [1, batch, hidden]: dropping axis 0 leaves [batch, hidden].
      if (!path.finalOnly && path.rank === 4 && axes?.length === 1 && (axes[0] === 1 || axes[0] === -3)) return out(n.outputs[0], { rank: 3 });
      if (path.finalOnly && path.rank === 3 && axes?.length === 1 && (axes[0] === 0 || axes[0] === -3)) return out(n.outputs[0], { rank: 2 });
      throw new ImportError(`${where(n)}: squeezes axes [${axes?.join(', ') ?? 'all'}] of a rank-${path.rank} value (only the one-direction axis of a layer's output)`);
    }
    case 'Gather': {
      // h_n[-1] (PyTorch's last layer's final state): Y_h is [1, batch, hidden], and taking its
      // only entry along axis 0 leaves [batch, hidden], as a Squeeze would.
      const index = graph.constant(n.inputs[1]!);
      const axis = n.attributes.get('axis')?.i ?? 0;
      if (path.finalOnly && path.rank === 3 && n.inputs[0] === path.value && axis === 0 && index?.dims.length === 0 && (index.data[0] === 0 || index.data[0] === -1)) return out(n.outputs[0], { rank: 2 });
      throw new ImportError(`${where(n)}: gathers from the path other than the one direction of a layer's final state`);
    }
    case 'Reshape': {
      // Some exports write the Squeeze between layers as a Reshape to [time, batch, hidden] or [0, 0, -1].
      const shape = graph.constant(n.inputs[1]!);
      const dims = shape ? Array.from(shape.data) : undefined;
      if (!path.finalOnly && path.rank === 4 && dims?.length === 3 && dims[2] === (layers.at(-1)?.hiddenSize ?? -2)) return out(n.outputs[0], { rank: 3 });
      if (!path.finalOnly && path.rank === 4 && dims?.join(',') === '0,0,-1') return out(n.outputs[0], { rank: 3 });
      throw new ImportError(`${where(n)}: reshapes the path to [${dims?.join(', ') ?? 'a computed shape'}], not only dropping the one-direction axis`);
    }
    case 'MatMul':
    case 'Gemm':
      return headStep(graph, n, path, layers, setHead, out);
    case 'Add':
      throw new ImportError(`${where(n)}: an Add on the path that is not the bias of a Linear head`);
    case 'Softmax':
    case 'LogSoftmax': {
      if (n.opType === 'LogSoftmax') throw new ImportError(`${where(n)}: LogSoftmax; rnnstream's softmax head gives probabilities (export with Softmax, or without it)`);
      const axis = n.attributes.get('axis')?.i ?? -1;
      if (axis !== -1 && axis !== path.rank - 1) throw new ImportError(`${where(n)}: softmax over axis ${axis}, not the last (the classes)`);
      setSoftmax();
      return out(n.outputs[0]);
    }
    default:
      throw new ImportError(`${where(n)}: cannot be imported; between the input, the recurrent layers and the head rnnstream accepts only layout changes (Transpose, Squeeze), a Linear head (MatMul + Add or Gemm) and Softmax`);
  }
}

/** A Linear head: MatMul by a constant [hidden, outputs] (and an Add of a constant bias), or Gemm. */
function headStep(
  graph: Graph,
  n: OnnxNode,
  path: PathState,
  layers: LayerFile[],
  setHead: (h: { weight: number[][]; bias: number[] }) => void,
  out: (value: string | undefined, change?: Partial<PathState>) => PathState,
): PathState {
  const hidden = layers.at(-1)?.hiddenSize;
  if (hidden === undefined) throw new ImportError(`${where(n)}: a ${n.opType} before any recurrent layer`);
  if (path.rank === 4) throw new ImportError(`${where(n)}: a head on a layer's output before its one-direction axis is dropped`);
  const other = n.inputs[0] === path.value ? n.inputs[1] : undefined;
  const B = other ? graph.constant(other) : undefined;
  if (!B) throw new ImportError(`${where(n)}: the path must be its first input and its weights a constant`);
  let weight: number[][];
  let bias: number[];
  let next = n.outputs[0]!;
  if (n.opType === 'Gemm') {
    const a = n.attributes;
    if ((a.get('alpha')?.f ?? 1) !== 1 || (a.get('beta')?.f ?? 1) !== 1 || (a.get('transA')?.i ?? 0) !== 0) throw new ImportError(`${where(n)}: alpha, beta or transA other than 1, 1, 0`);
    const m = rows(B, `${where(n)} weights`);
    weight = (a.get('transB')?.i ?? 0) === 1 ? m : transpose(m);
    const C = n.inputs[2] ? graph.constant(n.inputs[2]) : undefined;
    if (n.inputs[2] && !C) throw new ImportError(`${where(n)}: its bias C must be a constant`);
    bias = C ? Array.from(C.data) : new Array<number>(weight.length).fill(0);
  } else {
    weight = transpose(rows(B, `${where(n)} weights`));
    bias = new Array<number>(weight.length).fill(0);
    const add = graph.next(next);
    if (add?.opType === 'Add') {
      const other2 = add.inputs[0] === next ? add.inputs[1] : add.inputs[0];
      const C = other2 ? graph.constant(other2) : undefined;
      if (!C) throw new ImportError(`${where(add)}: the head's bias must be a constant`);
      bias = Array.from(C.data);
      next = add.outputs[0]!;
    }
  }
  if (weight[0]?.length !== hidden) throw new ImportError(`${where(n)}: head weights of ${weight[0]?.length} columns, but the last layer has ${hidden} hidden units`);
  if (bias.length !== weight.length) throw new ImportError(`${where(n)}: ${bias.length} biases for ${weight.length} outputs`);
  setHead({ weight, bias });
  return out(next, { width: weight.length });
}

const transpose = (m: number[][]): number[][] => (m[0] ? m[0].map((_, c) => m.map((r) => r[c]!)) : []);
