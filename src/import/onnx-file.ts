/**
 * An ONNX file as plain data: the graph's nodes, its inputs and outputs, and its constant tensors
 * (initializers and Constant nodes) as float64 arrays with their dims. The protobuf is read with
 * onnx-proto (protobufjs, generated from ONNX's onnx.proto); anything that is not a well-formed
 * ONNX model is an ImportError naming what was wrong, never a crash.
 */
import { createRequire } from 'node:module';
import { RnnStreamError } from '../core/errors.js';

const require = createRequire(import.meta.url);
// onnx-proto is CommonJS (protobufjs static code); its types describe what decode returns.
const { onnx } = require('onnx-proto') as typeof import('onnx-proto');

/** A model that cannot be imported: the message names the node (name and op type) or the part of the file. */
export class ImportError extends RnnStreamError {
  override readonly name = 'ImportError';
}

export interface OnnxTensor {
  readonly dims: readonly number[];
  readonly data: Float64Array;
}

export interface OnnxAttribute {
  readonly name: string;
  readonly f?: number;
  readonly i?: number;
  readonly s?: string;
  readonly t?: OnnxTensor;
  readonly floats?: readonly number[];
  readonly ints?: readonly number[];
  readonly strings?: readonly string[];
}

export interface OnnxNode {
  readonly name: string;
  readonly opType: string;
  readonly domain: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: ReadonlyMap<string, OnnxAttribute>;
}

export interface OnnxValueInfo {
  readonly name: string;
  /** Each dim a number, a symbolic name (e.g. "batch"), or undefined when not given. */
  readonly dims: readonly (number | string | undefined)[] | undefined;
}

export interface OnnxGraph {
  readonly producer: string;
  readonly opset: number;
  readonly nodes: readonly OnnxNode[];
  /** Graph inputs that are not initializers: what a caller feeds. */
  readonly inputs: readonly OnnxValueInfo[];
  readonly outputs: readonly OnnxValueInfo[];
  /** Initializers and the outputs of Constant nodes, by name. */
  readonly constants: ReadonlyMap<string, OnnxTensor>;
}

type Long = { toNumber(): number };
const num = (v: number | Long | null | undefined): number => (v == null ? 0 : typeof v === 'number' ? v : v.toNumber());
const text = (b: Uint8Array | null | undefined): string => (b ? new TextDecoder().decode(b) : '');

/** ONNX TensorProto data types rnnstream reads (weights are float; shape plumbing int64). */
const FLOAT = 1;
const INT32 = 6;
const INT64 = 7;
const DOUBLE = 11;
const FLOAT16 = 10;

function tensorOf(t: import('onnx-proto').onnx.ITensorProto, what: string): OnnxTensor {
  const dims = (t.dims ?? []).map(num);
  const count = dims.reduce((a, b) => a * b, 1);
  const type = t.dataType ?? 0;
  let data: Float64Array;
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : undefined;
  if (t.dataLocation === 1 || (t.externalData?.length ?? 0) > 0) throw new ImportError(`${what}: its data is in an external file, which rnnstream does not read (save the model with the weights inside)`);
  if (raw) {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const size = type === FLOAT || type === INT32 ? 4 : type === INT64 || type === DOUBLE ? 8 : type === FLOAT16 ? 2 : 0;
    if (size === 0) throw new ImportError(`${what}: tensor data type ${type} is not supported (float, double, int32, int64 are)`);
    if (raw.byteLength !== count * size) throw new ImportError(`${what}: ${raw.byteLength} bytes of data for dims [${dims.join(', ')}] (expected ${count * size})`);
    data = new Float64Array(count);
    for (let k = 0; k < count; k++) {
      const o = k * size;
      data[k] = type === FLOAT ? view.getFloat32(o, true) : type === DOUBLE ? view.getFloat64(o, true) : type === INT32 ? view.getInt32(o, true) : type === INT64 ? Number(view.getBigInt64(o, true)) : halfToFloat(view.getUint16(o, true));
    }
  } else {
    const values: readonly (number | Long)[] = type === FLOAT ? (t.floatData ?? []) : type === DOUBLE ? (t.doubleData ?? []) : type === INT64 ? (t.int64Data ?? []) : (t.int32Data ?? []);
    if (values.length !== count) throw new ImportError(`${what}: ${values.length} values for dims [${dims.join(', ')}] (expected ${count})`);
    data = Float64Array.from(values, num);
  }
  return { dims, data };
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function valueInfo(v: import('onnx-proto').onnx.IValueInfoProto): OnnxValueInfo {
  const shape = v.type?.tensorType?.shape;
  const dims = shape?.dim ? shape.dim.map((d) => (d.dimValue != null && num(d.dimValue) > 0 ? num(d.dimValue) : d.dimParam || undefined)) : undefined;
  return { name: v.name ?? '', dims };
}

/** Reads an ONNX model's bytes. Throws ImportError for anything that is not a readable ONNX model. */
export function readOnnx(bytes: Uint8Array): OnnxGraph {
  let model: import('onnx-proto').onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new ImportError(`not an ONNX model: the protobuf does not decode (${(err as Error).message})`);
  }
  const graph = model.graph;
  if (!graph || !graph.node || graph.node.length === 0) throw new ImportError('not an ONNX model: it has no graph, or a graph with no nodes');
  const opset = Math.max(0, ...(model.opsetImport ?? []).filter((o) => !o.domain || o.domain === 'ai.onnx').map((o) => num(o.version)));
  const constants = new Map<string, OnnxTensor>();
  for (const t of graph.initializer ?? []) constants.set(t.name ?? '', tensorOf(t, `initializer "${t.name ?? ''}"`));
  const nodes: OnnxNode[] = graph.node.map((n, k) => {
    const name = n.name || `#${k}`;
    const attributes = new Map<string, OnnxAttribute>();
    for (const a of n.attribute ?? []) {
      const at = (a.name ?? '') as string;
      attributes.set(at, {
        name: at,
        ...(a.f != null ? { f: a.f } : {}),
        ...(a.i != null ? { i: num(a.i) } : {}),
        ...(a.s && a.s.length ? { s: text(a.s) } : {}),
        ...(a.t ? { t: tensorOf(a.t, `attribute ${at} of node "${name}" (${n.opType})`) } : {}),
        ...(a.floats?.length ? { floats: a.floats } : {}),
        ...(a.ints?.length ? { ints: a.ints.map(num) } : {}),
        ...(a.strings?.length ? { strings: a.strings.map(text) } : {}),
      });
    }
    return { name, opType: n.opType ?? '', domain: n.domain ?? '', inputs: n.input ?? [], outputs: n.output ?? [], attributes };
  });
  for (const n of nodes) {
    if (n.opType !== 'Constant') continue;
    const value = n.attributes.get('value');
    const out = n.outputs[0];
    if (!out) continue;
    if (value?.t) constants.set(out, value.t);
    else if (value?.f !== undefined || n.attributes.get('value_float')) constants.set(out, { dims: [], data: Float64Array.of(n.attributes.get('value_float')?.f ?? value!.f!) });
    else if (n.attributes.get('value_int')) constants.set(out, { dims: [], data: Float64Array.of(n.attributes.get('value_int')!.i!) });
    else if (n.attributes.get('value_ints')) constants.set(out, { dims: [n.attributes.get('value_ints')!.ints!.length], data: Float64Array.from(n.attributes.get('value_ints')!.ints!) });
  }
  const initializerNames = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
  return {
    producer: `${model.producerName ?? ''} ${model.producerVersion ?? ''}`.trim(),
    opset,
    nodes,
    inputs: (graph.input ?? []).filter((v) => !initializerNames.has(v.name ?? '')).map(valueInfo),
    outputs: (graph.output ?? []).map(valueInfo),
    constants,
  };
}
