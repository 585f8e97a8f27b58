/**
 * Where a hot swap happened, kept in the changelog beside the state it explains: one record per
 * input partition naming the model that serves it from an input offset on. Under exactly once it
 * is written inside the transaction that carries that partition's first outputs from the model
 * (and its offset is that transaction's first), so it is visible exactly when those outputs are;
 * a restore reads it and says which model the partition was served by, and from where.
 *
 * Key MODEL_MARKER_KEY (one per changelog partition, so compaction keeps the latest); value:
 * "RNSM" then the marker as JSON. State records start "RNS2", so readers tell them apart by the
 * value's first bytes; a key state is never written under this key (keys that start with a NUL
 * byte are reserved).
 */
import { SnapshotError } from '../core/errors.js';

export const MODEL_MARKER_KEY = '\u0000rnnstream.model';
const MAGIC = 'RNSM';
const MAGIC_BYTES = new TextEncoder().encode(MAGIC);

export interface ModelMarker {
  /** The model's content hash (64 hex digits). */
  readonly model: string;
  readonly name: string;
  /** The first input offset of the partition the model served. */
  readonly offset: number;
  /** What happened to keys' state at the swap (reset, keep, warm). */
  readonly policy: string;
  /** When it was written, ms since the epoch. */
  readonly at: number;
}

export function encodeModelMarker(marker: ModelMarker): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(marker));
  const out = new Uint8Array(MAGIC_BYTES.length + json.length);
  out.set(MAGIC_BYTES, 0);
  out.set(json, MAGIC_BYTES.length);
  return out;
}

/** Whether a changelog value is a model marker (not a key's state). */
export function isModelMarker(value: Uint8Array): boolean {
  if (value.length < MAGIC_BYTES.length) return false;
  for (let i = 0; i < MAGIC_BYTES.length; i++) if (value[i] !== MAGIC_BYTES[i]) return false;
  return true;
}

/** The marker in a changelog value; throws SnapshotError, naming the field, when it is malformed. */
export function decodeModelMarker(value: Uint8Array): ModelMarker {
  if (!isModelMarker(value)) throw new SnapshotError('not a model marker (its value does not start with RNSM)');
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(value.subarray(MAGIC_BYTES.length)));
  } catch (err) {
    throw new SnapshotError(`model marker: its JSON does not parse (${(err as Error).message})`);
  }
  const m = parsed as Partial<Record<keyof ModelMarker, unknown>>;
  if (typeof m.model !== 'string' || !/^[0-9a-f]{64}$/.test(m.model)) throw new SnapshotError('model marker: "model" must be 64 hex digits');
  if (typeof m.offset !== 'number' || !Number.isInteger(m.offset) || m.offset < 0) throw new SnapshotError('model marker: "offset" must be a non-negative integer');
  return { model: m.model, name: String(m.name ?? ''), offset: m.offset, policy: String(m.policy ?? ''), at: typeof m.at === 'number' ? m.at : 0 };
}
