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

/**
 * A whole micro-batch in one go (`StepBackend.stepMicroBatch`): every wave of it, each key's
 * events applied in order, with one upload before and one read-back after, instead of a round
 * trip per wave. Keys are numbered 0..keys-1 by the caller in order of how many events they have
 * (most first), so wave w holds keys 0..waveSizes[w]-1 and a key's state after wave w is row b
 * of that wave's result, read by wave w+1 where it sits: no gather or scatter on the device.
 *
 * - `input`: [R, inputSize] row-major, R = sum of waveSizes, wave by wave (wave w starts at row
 *   start_w = waveSizes[0] + ... + waveSizes[w-1]; its row b is key b's event).
 * - `state`: the keys' state before the micro-batch, segment-major for `keys` keys (as `step`).
 * - `finalState`: written, each key's state after its last event, laid out as `state`.
 * - `states`: optional, written, the state after every row: wave w's block at start_w *
 *   stateSize, segment-major for waveSizes[w] keys (what `step` writes into `next` for that wave).
 *   Only a changelog needs it (each event's state); without it only `keys` states come back.
 * - `output`: written, [R, outputSize] row-major.
 */
export interface MicroBatch {
  readonly keys: number;
  readonly waveSizes: Int32Array;
  readonly input: Float32Array;
  readonly state: Float32Array;
  readonly finalState: Float32Array;
  readonly states?: Float32Array;
  readonly output: Float32Array;
}

/**
 * A micro-batch whose keys' state lives on the device, in a backend's slot table
 * (`StepBackend.stateTable`): like MicroBatch, but each key names its slot instead of bringing
 * its state, and its state after the micro-batch stays in that slot. Only slot numbers, the
 * input rows and the outputs cross the bus; a key's state crosses only when the host holds a
 * newer copy than the device (`uploads`: a restored key).
 *
 * - `slots`: each key's slot (key u of the micro-batch, numbered as in MicroBatch).
 * - `from`: where key u's state before the micro-batch is: FROM_TABLE (its slot), FROM_ZEROS (a
 *   new key), or r >= 0: row r of `uploads`.
 * - `uploads`: segment-major state rows for `uploadCount` keys, indexed by `from`.
 * - `states`: as MicroBatch's, every row's state read back, if given.
 * - `keepStates`: every row's state kept on the device instead, for a changelog to read the
 *   few it writes later (`readKept`): the backend sets `kept`, or, where it cannot keep them
 *   (a micro-batch too tall for one texture), sets `states` with all of them.
 */
export interface SlotMicroBatch {
  readonly keys: number;
  readonly waveSizes: Int32Array;
  readonly input: Float32Array;
  readonly slots: Int32Array;
  readonly from: Int32Array;
  readonly uploadCount: number;
  readonly uploads: Float32Array;
  states?: Float32Array;
  readonly keepStates?: boolean;
  kept?: KeptStates;
  readonly output: Float32Array;
}

/**
 * Every row's state of one micro-batch, kept in device memory (SlotMicroBatch.keepStates) until
 * released: row r is the state after the micro-batch's input row r (wave w's key b at
 * start_w + b, as MicroBatch numbers rows).
 */
export interface KeptStates {
  readonly rows: number;
  /** Device memory it holds. */
  readonly bytes: number;
  /** Frees the device memory; it cannot be read after. */
  release(): void;
}

/** SlotMicroBatch.from: the key's state is in its slot of the table. */
export const FROM_TABLE = -1;
/** SlotMicroBatch.from: the key starts from zero state (new, or its slot was reused). */
export const FROM_ZEROS = -2;

/**
 * Every key's recurrent state in device memory, by slot number (the key store's), so that
 * stepping a key moves nothing of its state across the bus: a micro-batch gathers its keys'
 * slots on the device, steps, and scatters the results back on the device. State leaves the
 * device only when someone asks (`read`: a snapshot, `store.get`), in one batched read-back.
 */
export interface DeviceStateTable {
  /** Most slots the device can hold (GL: its texture size); a store with more cannot live here. */
  readonly maxSlots: number;
  /** Steps a micro-batch whose keys' state is in the table (see SlotMicroBatch). */
  step(batch: SlotMicroBatch): void | Promise<void>;
  /** The state in `slots`, segment-major for slots.length keys, into `into`, in one read-back. */
  read(slots: Int32Array, into: Float32Array): void | Promise<void>;
  /**
   * Rows of kept micro-batch states (KeptStates, from this table's micro-batches), gathered on
   * the device into one block: segment-major for the total of the parts' rows, part by part,
   * into `into`, in one read-back (per layer).
   */
  readKept(parts: readonly KeptRows[], into: Float32Array): void | Promise<void>;
}

/** Some rows of one micro-batch's kept states (DeviceStateTable.readKept). */
export interface KeptRows {
  readonly kept: KeptStates;
  readonly rows: Int32Array;
}

/** Host↔device traffic a device backend counted since it was created (a host backend counts none). */
export interface TransferCounts {
  /** Bytes uploaded: inputs, states, and weights where they are not resident. */
  readonly bytesUp: number;
  /** Bytes read back: outputs and states. */
  readonly bytesDown: number;
  /** Kernel launches (one draw or dispatch each). */
  readonly kernelCalls: number;
  /** Read-backs, each a wait for the device to finish. */
  readonly readBacks: number;
  /** Calls of step and stepMicroBatch. */
  readonly calls: number;
}

export interface StepBackend {
  readonly name: BackendName;
  /** What actually runs underneath: device or renderer, library version, threads. */
  readonly detail: string;
  /**
   * Steps `batch` keys once. Synchronous backends return undefined; asynchronous ones (webgpu,
   * onnx) return a promise, and the caller must not touch the arrays until it settles.
   */
  step(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): void | Promise<void>;
  /**
   * Device backends: every wave of a micro-batch in one submission (see MicroBatch). Per-key
   * results are those of calling `step` wave by wave.
   */
  stepMicroBatch?(batch: MicroBatch): void | Promise<void>;
  /** Runs on an accelerator: each call is a round trip, so rnnByKey sends whole micro-batches. */
  readonly device?: boolean;
  /**
   * Host backends whose `stepMicroBatch` runs each key's events as one sequence (onnx: its
   * recurrent ops over time), cheaper than wave by wave, but gives only each key's final state:
   * rnnByKey sends them whole micro-batches where it keeps no row's state (no captureState).
   */
  readonly sequenceMicroBatch?: boolean;
  /** Device backends: host↔device traffic so far. */
  readonly transfers?: TransferCounts;
  /** Device backends that keep every key's state on the device (see DeviceStateTable). */
  readonly stateTable?: DeviceStateTable;
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

/** The first row of each wave, and the total rows, of a micro-batch's waveSizes. */
export function waveStarts(waveSizes: Int32Array): { starts: Int32Array; rows: number } {
  const starts = new Int32Array(waveSizes.length);
  let rows = 0;
  for (let w = 0; w < waveSizes.length; w++) {
    starts[w] = rows;
    rows += waveSizes[w]!;
  }
  return { starts, rows };
}

/**
 * The first `keys` keys of a segment-major state block of `blockKeys` keys, as a block of their
 * own: the keys a micro-batch's wave carries on to the next.
 */
export function firstKeysOf(model: RnnModel, block: Float32Array, blockKeys: number, keys: number): Float32Array {
  const out = new Float32Array(keys * model.stateSize);
  for (const seg of model.stateSegments) out.set(block.subarray(blockKeys * seg.offset, blockKeys * seg.offset + keys * seg.size), keys * seg.offset);
  return out;
}

/**
 * What `stepMicroBatch` must equal: the waves stepped one by one with `step` (each wave's keys
 * the first of the previous wave's), written as stepMicroBatch writes them. The conformance
 * reference, a device backend's fallback for micro-batches too tall for it, and its probe.
 */
export async function stepWavesOneByOne(model: RnnModel, step: StepBackend['step'], mb: MicroBatch): Promise<void> {
  const S = model.stateSize;
  const { starts } = waveStarts(mb.waveSizes);
  let before: Float32Array = mb.state;
  for (let w = 0; w < mb.waveSizes.length; w++) {
    const n = mb.waveSizes[w]!;
    const next = mb.states ? mb.states.subarray(starts[w]! * S, (starts[w]! + n) * S) : new Float32Array(n * S);
    await step(n, mb.input.subarray(starts[w]! * model.inputSize), before, next, mb.output.subarray(starts[w]! * model.outputSize));
    // Keys n_{w+1}..n_w-1 had their last event in this wave.
    const ending = w + 1 < mb.waveSizes.length ? mb.waveSizes[w + 1]! : 0;
    for (const seg of model.stateSegments) mb.finalState.set(next.subarray(n * seg.offset + ending * seg.size, n * seg.offset + n * seg.size), mb.keys * seg.offset + ending * seg.size);
    if (ending > 0) before = firstKeysOf(model, next, n, ending);
  }
}

