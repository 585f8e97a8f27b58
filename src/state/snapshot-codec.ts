/**
 * The bytes of key states: what a state snapshot holds and what each changelog record carries.
 * Tagged with the model's content hash, so that state written by another model is refused
 * (hidden units of another model mean nothing to this one).
 *
 * Format "RNS2" (little-endian):
 *   magic "RNS2" | model hash (32 bytes) | stateSize u32 | carrySize u32 | count u32 |
 *   count x ( keyBytes u32 | key utf8 | steps f64 | lastSeen f64 | partition i32 | offset f64 |
 *             sequence f64 | lastClass i32 | state f32 x stateSize | carry f64 x carrySize )
 *
 * A key with no position has partition -1; a key with no sequence number has NaN. "RNS1" (the
 * format before state moved into typed columns: the previous event as JSON) is refused with a
 * message that says so; such a key starts again from zero state.
 */
import { SnapshotError } from '../core/errors.js';

/** Where the last event applied to a key came from: its input partition and the offset there (a fixture: partition 0 and the line). */
export interface StatePosition {
  readonly partition: number;
  readonly offset: number;
}

/** One key's state, as the store's get/set exchange it and a changelog record carries it. */
export interface KeySnapshot {
  readonly key: string;
  /** Every layer's h (and c for LSTM layers), in the model's stateSegments layout. */
  readonly state: Float32Array;
  /** Steps applied since the key was created (or last evicted). */
  readonly steps: number;
  /** Scheduler time (ms) the key was last touched. */
  readonly lastSeen: number;
  readonly position: StatePosition | undefined;
  /** The pipeline's sequence number of the last applied event; NaN when none. */
  readonly sequence: number;
  /** What the key remembers of its last applied event: the pipeline's carry fields, in order. */
  readonly carry: Float64Array;
  /** The class the key's last output predicted (argmax of a softmax head); -1 when none. */
  readonly lastClass: number;
}

/** What the bytes are checked against: the model that wrote them and the column sizes. */
export interface SnapshotShape {
  /** The model's content hash (64 hex digits). */
  readonly hash: string;
  readonly name: string;
  readonly stateSize: number;
  readonly carrySize: number;
  /**
   * Hashes of earlier models whose state this one takes as its own (a hot swap's `keep` policy,
   * for models declared compatible): their records are read, and written again under `hash`.
   */
  readonly accepts?: readonly string[];
  /**
   * Records of any model with these column sizes are read (hot swap policy `warm`: a key's state
   * is rebuilt from the history in its carry, whichever model wrote the state); `foreign` says so.
   */
  readonly acceptsAnyModel?: boolean;
}

const MAGIC = 'RNS2';
const HEADER_BYTES = 4 + 32 + 12;
/** steps, lastSeen, partition, offset, sequence, lastClass. */
const SCALAR_BYTES = 8 + 8 + 4 + 8 + 8 + 4;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeSnapshots(shape: SnapshotShape, snapshots: Iterable<KeySnapshot>): Uint8Array {
  const keys: Uint8Array[] = [];
  const list: KeySnapshot[] = [];
  const S = shape.stateSize;
  const C = shape.carrySize;
  let size = HEADER_BYTES;
  for (const s of snapshots) {
    const key = encoder.encode(s.key);
    keys.push(key);
    list.push(s);
    size += 4 + key.length + SCALAR_BYTES + 4 * S + 8 * C;
  }
  const buf = new Uint8Array(size);
  const view = new DataView(buf.buffer);
  buf.set(encoder.encode(MAGIC), 0);
  buf.set(Buffer.from(shape.hash, 'hex'), 4);
  view.setUint32(36, S, true);
  view.setUint32(40, C, true);
  view.setUint32(44, list.length, true);
  let o = HEADER_BYTES;
  for (let i = 0; i < list.length; i++) {
    const s = list[i]!;
    const key = keys[i]!;
    // Read once: a capture's `state` is a getter that copies the state out of its wave (it was
    // read once per float, 129 copies of 128 floats per changelog record of the ball model).
    const state = s.state;
    if (state.length !== S) throw new SnapshotError(`state for key "${s.key}" has ${state.length} floats; this model needs ${S}`);
    view.setUint32(o, key.length, true);
    buf.set(key, o + 4);
    o += 4 + key.length;
    view.setFloat64(o, s.steps, true);
    view.setFloat64(o + 8, s.lastSeen, true);
    view.setInt32(o + 16, s.position ? s.position.partition : -1, true);
    view.setFloat64(o + 20, s.position ? s.position.offset : 0, true);
    view.setFloat64(o + 28, s.sequence, true);
    view.setInt32(o + 36, s.lastClass, true);
    o += SCALAR_BYTES;
    for (let j = 0; j < S; j++, o += 4) view.setFloat32(o, state[j]!, true);
    for (let j = 0; j < C; j++, o += 8) view.setFloat64(o, j < s.carry.length ? s.carry[j]! : Number.NaN, true);
  }
  return buf;
}

/**
 * One key of snapshot bytes as readSnapshots visits it: its scalars, and where its state and
 * carry are in `bytes` (little-endian f32 and f64), so that a reader can copy them where it wants
 * them without a KeySnapshot in between. Valid only during the visit.
 */
export interface SnapshotRecord {
  key: string;
  steps: number;
  lastSeen: number;
  /** -1: no position. */
  partition: number;
  offset: number;
  sequence: number;
  lastClass: number;
  /** Byte offsets in `bytes` of the key's state (stateSize f32) and carry (carrySize f64). */
  stateAt: number;
  /** Written by a model the shape accepts besides its own (an earlier one, before a hot swap). */
  readonly foreign: boolean;
  carryAt: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

/** This host's byte order is the format's: state floats can be copied as bytes. */
export const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const MAGIC_BYTES = encoder.encode(MAGIC);
const hashBytesOf = new Map<string, Uint8Array>();
const sameBytes = (a: Uint8Array, from: number, b: Uint8Array): boolean => {
  for (let i = 0; i < b.length; i++) if (a[from + i] !== b[i]) return false;
  return true;
};

/** Whether the bytes' model hash is one `shape` accepts besides its own. */
function acceptedHash(shape: SnapshotShape, bytes: Uint8Array): boolean {
  if (!shape.accepts || shape.accepts.length === 0) return false;
  const theirs = Buffer.from(bytes.subarray(4, 36)).toString('hex');
  return shape.accepts.includes(theirs);
}

/**
 * Checks the header of snapshot bytes against `shape` (refusing another model's state, another
 * layout and the older format, with the reason), then calls `visit` with each key in order. One
 * reader for decodeSnapshots and the store's restore, which copies straight into its columns:
 * a changelog restore of 1M keys allocated a KeySnapshot, a position and two typed arrays per key.
 */
export function readSnapshots(shape: SnapshotShape, bytes: Uint8Array, visit: (r: SnapshotRecord) => void): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (n: number, o: number, what: string): void => {
    if (o + n > bytes.length) throw new SnapshotError(`snapshot truncated at byte ${o} while reading ${what}`);
  };
  need(4, 0, 'the header');
  if (!sameBytes(bytes, 0, MAGIC_BYTES)) {
    if (decoder.decode(bytes.subarray(0, 4)) === 'RNS1') throw new SnapshotError('state written by an older rnnstream (format RNS1, the previous event as JSON); this one reads RNS2');
    throw new SnapshotError('not an rnnstream state snapshot (bad magic)');
  }
  need(HEADER_BYTES, 0, 'the header');
  let hash = hashBytesOf.get(shape.hash);
  if (!hash) hashBytesOf.set(shape.hash, (hash = Uint8Array.from(Buffer.from(shape.hash, 'hex'))));
  const foreign = !sameBytes(bytes, 4, hash);
  if (foreign && shape.acceptsAnyModel !== true && !acceptedHash(shape, bytes)) {
    const theirs = Buffer.from(bytes.subarray(4, 36)).toString('hex');
    throw new SnapshotError(`snapshot was taken with model ${theirs.slice(0, 12)}, but this model is ${shape.hash.slice(0, 12)} (${shape.name}); refusing foreign state`);
  }
  const S = view.getUint32(36, true);
  if (S !== shape.stateSize) throw new SnapshotError(`snapshot state size ${S} != model state size ${shape.stateSize}`);
  const C = view.getUint32(40, true);
  if (C !== shape.carrySize) throw new SnapshotError(`snapshot remembers ${C} value(s) of each key's last event; this pipeline remembers ${shape.carrySize}`);
  const count = view.getUint32(44, true);
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r: SnapshotRecord = { foreign, key: '', steps: 0, lastSeen: 0, partition: -1, offset: 0, sequence: 0, lastClass: -1, stateAt: 0, carryAt: 0, bytes, view };
  let o = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    need(4, o, `key ${i}`);
    const n = view.getUint32(o, true);
    need(n, o + 4, `key ${i}`);
    r.key = text.toString('utf8', o + 4, o + 4 + n);
    o += 4 + n;
    need(SCALAR_BYTES + 4 * S + 8 * C, o, `state of key "${r.key}"`);
    r.steps = view.getFloat64(o, true);
    r.lastSeen = view.getFloat64(o + 8, true);
    r.partition = view.getInt32(o + 16, true);
    r.offset = view.getFloat64(o + 20, true);
    r.sequence = view.getFloat64(o + 28, true);
    r.lastClass = view.getInt32(o + 36, true);
    r.stateAt = o + SCALAR_BYTES;
    r.carryAt = r.stateAt + 4 * S;
    o = r.carryAt + 8 * C;
    visit(r);
  }
}

/** Copies a record's state floats into `into` from `at` (a memcpy where the host is little-endian). */
export function copyRecordState(r: SnapshotRecord, stateSize: number, into: Float32Array, at: number): void {
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(into.buffer, into.byteOffset + 4 * at, 4 * stateSize).set(r.bytes.subarray(r.stateAt, r.stateAt + 4 * stateSize));
    return;
  }
  for (let j = 0; j < stateSize; j++) into[at + j] = r.view.getFloat32(r.stateAt + 4 * j, true);
}

export function decodeSnapshots(shape: SnapshotShape, bytes: Uint8Array): KeySnapshot[] {
  const out: KeySnapshot[] = [];
  readSnapshots(shape, bytes, (r) => {
    const state = new Float32Array(shape.stateSize);
    copyRecordState(r, shape.stateSize, state, 0);
    const carry = new Float64Array(shape.carrySize);
    for (let j = 0; j < shape.carrySize; j++) carry[j] = r.view.getFloat64(r.carryAt + 8 * j, true);
    out.push({
      key: r.key,
      steps: r.steps,
      lastSeen: r.lastSeen,
      position: r.partition >= 0 ? { partition: r.partition, offset: r.offset } : undefined,
      sequence: r.sequence,
      lastClass: r.lastClass,
      state,
      carry,
    });
  });
  return out;
}

/**
 * The keys and positions of snapshot bytes, whichever model wrote them (the sizes are read from
 * their header, the model hash is not checked); undefined when they are not RNS2 or are
 * truncated. A changelog restore uses it to tell whether a refused (foreign) record is a key's
 * latest state, which then starts the key afresh, or an older one that changes nothing.
 */
export function peekSnapshotPositions(bytes: Uint8Array): { key: string; position: StatePosition | undefined }[] | undefined {
  if (bytes.length < HEADER_BYTES || decoder.decode(bytes.subarray(0, 4)) !== MAGIC) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const S = view.getUint32(36, true);
  const C = view.getUint32(40, true);
  const count = view.getUint32(44, true);
  const out: { key: string; position: StatePosition | undefined }[] = [];
  let o = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (o + 4 > bytes.length) return undefined;
    const n = view.getUint32(o, true);
    const end = o + 4 + n + SCALAR_BYTES + 4 * S + 8 * C;
    if (end > bytes.length) return undefined;
    const key = decoder.decode(bytes.subarray(o + 4, o + 4 + n));
    const at = o + 4 + n;
    const partition = view.getInt32(at + 16, true);
    out.push({ key, position: partition >= 0 ? { partition, offset: view.getFloat64(at + 20, true) } : undefined });
    o = end;
  }
  return out;
}

/**
 * Whether position `a` is at or after `b` in the same input partition; undefined when they are
 * not comparable (either is missing, or they name different partitions).
 */
export function statePositionAtLeast(a: StatePosition | undefined, b: StatePosition | undefined): boolean | undefined {
  if (!a || !b || a.partition !== b.partition) return undefined;
  return a.offset >= b.offset;
}
