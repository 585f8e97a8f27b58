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
 * A model may read words instead of numeric features (`input.kind: "words"`): each event's word
 * becomes the mean of its rows in an embedding table (its vocabulary row, if it has one, and its
 * hashed character n-grams' rows; see core/words.ts), and that vector is the first layer's input.
 * The table is large (thousands of rows), so it lives in a binary file beside the JSON,
 * float32 little-endian, row-major, named with its sha256 by the JSON.
 *
 * This module is part of the pure numeric core: it imports no rxjs, kafkajs, gpu.js or node:
 * module. Reading and writing model files is src/adapters/model-file.ts.
 */
import { z } from 'zod';
import { ModelFileError } from './errors.js';
import { sha256Hex } from './sha256.js';
import { formatZodIssues } from './validation.js';

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

const sha256Field = z.string().regex(/^[0-9a-f]{64}$/, { message: 'expected a sha256 as 64 lower-case hex digits' });

/** Word input: an embedding of normalised words and their hashed character n-grams. */
const wordInputSchema = z
  .object({
    kind: z.literal('words'),
    /** Floats per word vector: the first layer's inputSize. */
    dim: z.int().positive(),
    /** Normalised words (core/words.ts normaliseWord) with a row each, rows 0..n-1. */
    vocabulary: z.array(z.string().min(1)),
    /** Rows of hashed character n-grams after the vocabulary's (0: words only). */
    buckets: z.int().nonnegative(),
    minN: z.int().positive(),
    maxN: z.int().positive(),
    /**
     * The table: vocabulary.length + buckets + 1 rows of `dim` float32s, little-endian, row-major;
     * the last row is for a word with no row of its own (only possible with buckets = 0). `file`
     * is relative to the model file.
     */
    table: z.object({ file: z.string().min(1), sha256: sha256Field }).strict(),
  })
  .strict();

/** The JSON document as written on disk. */
export const modelFileSchema = z
  .object({
    format: z.literal(MODEL_FORMAT),
    version: z.literal(1),
    name: z.string().min(1),
    description: z.string().optional(),
    /**
     * Names of the input features, in order; their count is the first layer's inputSize. With
     * word input: the one event field the words come from.
     */
    features: z.array(z.string().min(1)).min(1),
    input: wordInputSchema.optional(),
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
export type WordInputFile = z.infer<typeof wordInputSchema>;

/** A model's word input, ready to look words up (core/words.ts wordRows). */
export interface WordInput {
  readonly dim: number;
  readonly index: ReadonlyMap<string, number>;
  readonly buckets: number;
  readonly minN: number;
  readonly maxN: number;
  /** [rows, dim] row-major; rows = vocabulary + buckets + 1. */
  readonly table: Float32Array;
}

/** Rows of a word input's table: the vocabulary's, the buckets', and one for a word with neither. */
export const wordTableRows = (input: Pick<WordInputFile, 'vocabulary' | 'buckets'>): number => input.vocabulary.length + input.buckets + 1;

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
  /** Floats in the first layer's input: the features' count, or the word vector's size. */
  readonly inputSize: number;
  /** Word input, when the model reads words rather than numeric features. */
  readonly input: WordInput | undefined;
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
  const inputSize = doc.input ? doc.input.dim : doc.features.length;
  const perInput = doc.input ? 'one per float of the word vector (input.dim)' : 'one per feature';
  if (doc.input) checkWordInput(issues, doc.input, doc.features);
  checkVector(issues, 'normalization.mean', doc.normalization.mean, inputSize, perInput);
  checkVector(issues, 'normalization.std', doc.normalization.std, inputSize, perInput);
  let expectedInput = inputSize;
  doc.layers.forEach((layer, k) => {
    const p = `layers[${k}]`;
    const g = GATE_COUNT[layer.cell];
    const rows = g * layer.hiddenSize;
    const gateWhy = `${g} gate block${g > 1 ? 's' : ''} x hiddenSize ${layer.hiddenSize} for a ${layer.cell} cell`;
    if (layer.inputSize !== expectedInput) {
      const why = k > 0 ? `layers[${k - 1}].hiddenSize` : doc.input ? 'input.dim' : 'the number of features';
      issues.push(`${p}.inputSize: expected ${expectedInput} (${why}), got ${layer.inputSize}`);
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

function checkWordInput(issues: string[], input: WordInputFile, features: readonly string[]): void {
  if (features.length !== 1) issues.push(`features: expected one name (the field the words come from) with word input, got ${features.length}`);
  if (input.minN > input.maxN) issues.push(`input.minN: expected at most input.maxN (${input.maxN}), got ${input.minN}`);
  const seen = new Set<string>();
  input.vocabulary.forEach((word, i) => {
    if (seen.has(word) && issues.length < 20) issues.push(`input.vocabulary[${i}]: expected unique words, "${word}" is there twice`);
    seen.add(word);
  });
}

/**
 * The word input's table from its file's bytes, checked against the sha256 and size the JSON
 * gives. `tables` maps each table file named in the JSON to its bytes (loadModelFile reads them).
 */
function wordInputOf(input: WordInputFile, tables: ReadonlyMap<string, Uint8Array>): WordInput | string {
  const bytes = tables.get(input.table.file);
  if (!bytes) return `input.table.file: cannot read "${input.table.file}" (expected beside the model file)`;
  const rows = wordTableRows(input);
  const expected = rows * input.dim * 4;
  if (bytes.byteLength !== expected) return `input.table.file: expected ${expected} bytes (${rows} rows of ${input.dim} float32s), "${input.table.file}" has ${bytes.byteLength}`;
  const sha256 = sha256Hex(bytes);
  if (sha256 !== input.table.sha256) return `input.table.sha256: "${input.table.file}" has sha256 ${sha256}, the model names ${input.table.sha256} (a table from another model?)`;
  const table = new Float32Array(rows * input.dim);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < table.length; i++) table[i] = view.getFloat32(i * 4, true);
  const bad = table.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) return `input.table.file: row ${Math.floor(bad / input.dim)} holds a value that is not finite`;
  return { dim: input.dim, index: new Map(input.vocabulary.map((w, i) => [w, i])), buckets: input.buckets, minN: input.minN, maxN: input.maxN, table };
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
    // The table's sha256 stands for its numbers.
    input: doc.input,
    normalization: doc.normalization,
    layers: doc.layers.map((l) => [l.cell, l.inputSize, l.hiddenSize, l.weightIh, l.weightHh, l.biasIh, l.biasHh]),
    head: doc.head,
  };
  return sha256Hex(JSON.stringify(numeric));
}

/**
 * Validates a parsed JSON value as a model. Throws `ModelFileError` naming every bad field and
 * the shape it should have had; `source` names the file in that message.
 */
export function parseModel(json: unknown, source = '<model>', tables: ReadonlyMap<string, Uint8Array> = new Map()): RnnModel {
  const parsed = modelFileSchema.safeParse(json);
  if (!parsed.success) throw new ModelFileError(source, formatZodIssues(parsed.error));
  const doc = parsed.data;
  const issues = checkModelShapes(doc);
  if (issues.length > 0) throw new ModelFileError(source, issues);
  const input = doc.input ? wordInputOf(doc.input, tables) : undefined;
  if (typeof input === 'string') throw new ModelFileError(source, [input]);

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
    inputSize: input ? input.dim : doc.features.length,
    input,
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

/** The table's bytes as the model file stores them (float32 little-endian). */
export function wordTableBytes(table: Float32Array): Uint8Array {
  const bytes = new Uint8Array(table.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < table.length; i++) view.setFloat32(i * 4, table[i]!, true);
  return bytes;
}

/** `doc` naming `file` and the table's sha256, the table's bytes, and the map parseModel takes. */
export function withWordTable(doc: ModelFile, file: string, table: Float32Array): { doc: ModelFile; bytes: Uint8Array; tables: Map<string, Uint8Array> } {
  if (!doc.input) throw new ModelFileError(file, ['input: the model has no word input to name a table for']);
  const bytes = wordTableBytes(table);
  const named = { ...doc, input: { ...doc.input, table: { file, sha256: sha256Hex(bytes) } } };
  return { doc: named, bytes, tables: new Map([[file, bytes]]) };
}

/** A compact description such as `lstm(2->32) > lstm(32->32) > softmax[8]`. */
export function describeModel(model: RnnModel): string {
  const words = model.input ? `words(${model.input.index.size}+${model.input.buckets}->${model.input.dim}) > ` : '';
  const stack = model.layers.map((l) => `${l.cell}(${l.inputSize}->${l.hiddenSize})`).join(' > ');
  return `${words}${stack} > ${model.head.kind}[${model.outputSize}]`;
}
