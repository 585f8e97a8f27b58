/**
 * The model file: one JSON format for every recurrent network rnnstream runs.
 *
 * A model is a stack of recurrent layers, an input normalization and a dense head:
 *
 *   features --(x - mean) / std--> layer 0 --> layer 1 --> ... --> head --> probabilities | values
 *
 * Weight layout and gate order follow PyTorch's nn.RNN / nn.LSTM / nn.GRU exactly, so a PyTorch
 * `state_dict` maps onto a layer by name (`weight_ih_l{k}` -> `weightIh`, `weight_hh_l{k}` ->
 * `weightHh`, `bias_ih_l{k}` -> `biasIh`, `bias_hh_l{k}` -> `biasHh`) with no reordering:
 *
 * | cell | gates (G) | row blocks of weightIh / weightHh / biases, each `hiddenSize` rows |
 * |------|-----------|--------------------------------------------------------------------|
 * | rnn  | 1         | the one tanh pre-activation                                         |
 * | lstm | 4         | i (input), f (forget), g (cell candidate), o (output)              |
 * | gru  | 3         | r (reset), z (update), n (new)                                      |
 *
 * Shapes: `weightIh` is [G*hiddenSize][inputSize], `weightHh` is [G*hiddenSize][hiddenSize],
 * `biasIh` and `biasHh` are [G*hiddenSize]; the head's `weight` is [outputs][lastHiddenSize] and
 * `bias` is [outputs]. Keras and ONNX orders differ; the README says how to convert them.
 *
 * This module is part of the pure numeric core: it imports no rxjs, kafkajs or gpu.js.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ModelFileError } from './errors.js';
import { describeJsonError, formatZodIssues } from './validation.js';

export const CELL_KINDS = ['rnn', 'lstm', 'gru'] as const;
export type CellKind = (typeof CELL_KINDS)[number];

/** Gate blocks per cell, in PyTorch order (see the table above). */
export const GATE_COUNT: Readonly<Record<CellKind, number>> = { rnn: 1, lstm: 4, gru: 3 };

export const MODEL_FORMAT = 'rnnstream-model';

const finite = z.number().refine(Number.isFinite, { message: 'expected a finite number' });
const vector = z.array(finite);
const matrix = z.array(vector);

const layerSchema = z
  .object({
    cell: z.enum(CELL_KINDS),
    inputSize: z.int().positive(),
    hiddenSize: z.int().positive(),
    weightIh: matrix,
    weightHh: matrix,
    biasIh: vector,
    biasHh: vector,
  })
  .strict();

const headSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('softmax'),
      labels: z.array(z.string().min(1)).min(2),
      weight: matrix,
      bias: vector,
    })
    .strict(),
  z
    .object({
      kind: z.literal('linear'),
      outputs: z.array(z.string().min(1)).min(1),
      weight: matrix,
      bias: vector,
    })
    .strict(),
]);

/** The JSON document as written on disk. */
export const modelFileSchema = z
  .object({
    format: z.literal(MODEL_FORMAT),
    version: z.literal(1),
    name: z.string().min(1),
    description: z.string().optional(),
    /** Names of the input features, in order; their count is the first layer's inputSize. */
    features: z.array(z.string().min(1)).min(1),
    normalization: z
      .object({
        mean: vector,
        std: z.array(finite.refine((v) => v > 0, { message: 'expected a std > 0' })),
      })
      .strict(),
    layers: z.array(layerSchema).min(1),
    head: headSchema,
    /** Free-form provenance (how it was trained, on what); not used for inference. */
    training: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export type ModelFile = z.infer<typeof modelFileSchema>;
export type LayerFile = z.infer<typeof layerSchema>;

/** One recurrent layer with its weights flattened row-major into float64 arrays. */
export interface LayerWeights {
  readonly cell: CellKind;
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly gates: number;
  /** [gates*hiddenSize, inputSize] row-major. */
  readonly weightIh: Float64Array;
  /** [gates*hiddenSize, hiddenSize] row-major. */
  readonly weightHh: Float64Array;
  /** [gates*hiddenSize]. */
  readonly biasIh: Float64Array;
  /** [gates*hiddenSize]. */
  readonly biasHh: Float64Array;
}

/**
 * One contiguous piece of a key's recurrent state: a layer's hidden vector `h`, or an LSTM
 * layer's cell vector `c`. A key's state is the concatenation of its segments in this order.
 */
export interface StateSegment {
  readonly layer: number;
  readonly kind: 'h' | 'c';
  readonly size: number;
  /** Offset of this segment within one key's state vector. */
  readonly offset: number;
}

export interface Head {
  readonly kind: 'softmax' | 'linear';
  /** Class labels (softmax) or output names (linear). */
  readonly names: readonly string[];
  /** [outputs, lastHiddenSize] row-major. */
  readonly weight: Float64Array;
  readonly bias: Float64Array;
}

/** A validated, immutable model ready for any backend. */
export interface RnnModel {
  readonly name: string;
  readonly description: string | undefined;
  readonly features: readonly string[];
  readonly inputSize: number;
  readonly normalization: { readonly mean: Float64Array; readonly std: Float64Array };
  readonly layers: readonly LayerWeights[];
  readonly head: Head;
  readonly outputSize: number;
  readonly stateSegments: readonly StateSegment[];
  /** Floats in one key's state vector (all layers' h, and c for LSTM layers). */
  readonly stateSize: number;
  /** sha256 of the model's numbers and shapes: state from another model is refused by it. */
  readonly hash: string;
  /** The validated document, for writing the model back out. */
  readonly file: ModelFile;
}

function shapeOf(m: readonly (readonly number[])[]): string {
  const cols = new Set(m.map((r) => r.length));
  return cols.size <= 1 ? `[${m.length}, ${m[0]?.length ?? 0}]` : `[${m.length}, ragged ${[...cols].join('/')}]`;
}

function checkMatrix(
  issues: string[],
  path: string,
  m: readonly (readonly number[])[],
  rows: number,
  cols: number,
  why: string,
): void {
  const ragged = m.some((r) => r.length !== cols);
  if (m.length !== rows || ragged) {
    issues.push(`${path}: expected shape [${rows}, ${cols}] (${why}), got ${shapeOf(m)}`);
  }
}

function checkVector(issues: string[], path: string, v: readonly number[], len: number, why: string): void {
  if (v.length !== len) issues.push(`${path}: expected length ${len} (${why}), got ${v.length}`);
}

/** Shape and consistency checks zod's structural schema cannot express; returns the issues. */
export function checkModelShapes(doc: ModelFile): string[] {
  const issues: string[] = [];
  const inputSize = doc.features.length;
  checkVector(issues, 'normalization.mean', doc.normalization.mean, inputSize, 'one per feature');
  checkVector(issues, 'normalization.std', doc.normalization.std, inputSize, 'one per feature');
  let expectedInput = inputSize;
  doc.layers.forEach((layer, k) => {
    const p = `layers[${k}]`;
    const g = GATE_COUNT[layer.cell];
    const rows = g * layer.hiddenSize;
    const gateWhy = `${g} gate block${g > 1 ? 's' : ''} x hiddenSize ${layer.hiddenSize} for a ${layer.cell} cell`;
    if (layer.inputSize !== expectedInput) {
      issues.push(
        `${p}.inputSize: expected ${expectedInput} (${k === 0 ? 'the number of features' : `layers[${k - 1}].hiddenSize`}), got ${layer.inputSize}`,
      );
    }
    checkMatrix(issues, `${p}.weightIh`, layer.weightIh, rows, layer.inputSize, `${gateWhy}, by inputSize`);
    checkMatrix(issues, `${p}.weightHh`, layer.weightHh, rows, layer.hiddenSize, `${gateWhy}, by hiddenSize`);
    checkVector(issues, `${p}.biasIh`, layer.biasIh, rows, gateWhy);
    checkVector(issues, `${p}.biasHh`, layer.biasHh, rows, gateWhy);
    expectedInput = layer.hiddenSize;
  });
  const names = doc.head.kind === 'softmax' ? doc.head.labels : doc.head.outputs;
  const namesField = doc.head.kind === 'softmax' ? 'labels' : 'outputs';
  if (new Set(names).size !== names.length) issues.push(`head.${namesField}: expected unique names, got duplicates`);
  checkMatrix(issues, 'head.weight', doc.head.weight, names.length, expectedInput, `one row per head ${namesField} entry, by the last layer's hiddenSize`);
  checkVector(issues, 'head.bias', doc.head.bias, names.length, `one per head ${namesField} entry`);
  return issues;
}

function flatten(m: readonly (readonly number[])[]): Float64Array {
  const cols = m[0]?.length ?? 0;
  const out = new Float64Array(m.length * cols);
  m.forEach((row, r) => out.set(row, r * cols));
  return out;
}

/** Hash of everything that changes what the model computes (not its name or provenance). */
function contentHash(doc: ModelFile): string {
  const numeric = {
    features: doc.features,
    normalization: doc.normalization,
    layers: doc.layers.map((l) => [l.cell, l.inputSize, l.hiddenSize, l.weightIh, l.weightHh, l.biasIh, l.biasHh]),
    head: doc.head,
  };
  return createHash('sha256').update(JSON.stringify(numeric)).digest('hex');
}

/**
 * Validates a parsed JSON value as a model. Throws `ModelFileError` naming every bad field and
 * the shape it should have had; `source` names the file in that message.
 */
export function parseModel(json: unknown, source = '<model>'): RnnModel {
  const parsed = modelFileSchema.safeParse(json);
  if (!parsed.success) throw new ModelFileError(source, formatZodIssues(parsed.error));
  const doc = parsed.data;
  const issues = checkModelShapes(doc);
  if (issues.length > 0) throw new ModelFileError(source, issues);

  const layers: LayerWeights[] = doc.layers.map((l) => ({
    cell: l.cell,
    inputSize: l.inputSize,
    hiddenSize: l.hiddenSize,
    gates: GATE_COUNT[l.cell],
    weightIh: flatten(l.weightIh),
    weightHh: flatten(l.weightHh),
    biasIh: Float64Array.from(l.biasIh),
    biasHh: Float64Array.from(l.biasHh),
  }));
  const segments: StateSegment[] = [];
  let offset = 0;
  layers.forEach((l, k) => {
    segments.push({ layer: k, kind: 'h', size: l.hiddenSize, offset });
    offset += l.hiddenSize;
    if (l.cell === 'lstm') {
      segments.push({ layer: k, kind: 'c', size: l.hiddenSize, offset });
      offset += l.hiddenSize;
    }
  });
  const names = doc.head.kind === 'softmax' ? doc.head.labels : doc.head.outputs;
  return Object.freeze({
    name: doc.name,
    description: doc.description,
    features: doc.features,
    inputSize: doc.features.length,
    normalization: { mean: Float64Array.from(doc.normalization.mean), std: Float64Array.from(doc.normalization.std) },
    layers,
    head: { kind: doc.head.kind, names, weight: flatten(doc.head.weight), bias: Float64Array.from(doc.head.bias) },
    outputSize: names.length,
    stateSegments: segments,
    stateSize: offset,
    hash: contentHash(doc),
    file: doc,
  });
}

/** Reads and validates a model file; every failure is a `ModelFileError` naming the file. */
export function loadModelFile(path: string): RnnModel {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ModelFileError(path, [`cannot read the file: ${(err as Error).message}`]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelFileError(path, [`not valid JSON: ${describeJsonError(text, err)}`]);
  }
  return parseModel(json, path);
}

/** A compact description such as `lstm(2->32) > lstm(32->32) > softmax[8]`. */
export function describeModel(model: RnnModel): string {
  const stack = model.layers.map((l) => `${l.cell}(${l.inputSize}->${l.hiddenSize})`).join(' > ');
  return `${stack} > ${model.head.kind}[${model.outputSize}]`;
}
