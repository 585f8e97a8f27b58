/**
 * A key's snapshot whose state floats are gathered only when read: what rnnByKey attaches to
 * each step for a changelog, which reads one per key per commit interval out of thousands made.
 * Subclasses say where the floats are (a wave's read-back buffer, or a device's kept block).
 */
import type { StateSegment } from '../core/model.js';
import type { KeySnapshot, StatePosition } from './snapshot-codec.js';

/** What a snapshot says besides its state floats. */
export type SnapshotMeta = Omit<KeySnapshot, 'state'>;

export abstract class LazyStateSnapshot implements KeySnapshot {
  readonly key: string;
  readonly steps: number;
  readonly lastSeen: number;
  readonly position: StatePosition | undefined;
  readonly sequence: number;
  readonly carry: Float64Array;
  readonly lastClass: number;

  constructor(meta: SnapshotMeta) {
    this.key = meta.key;
    this.steps = meta.steps;
    this.lastSeen = meta.lastSeen;
    this.position = meta.position;
    this.sequence = meta.sequence;
    this.carry = meta.carry;
    this.lastClass = meta.lastClass;
  }

  abstract get state(): Float32Array;
}

/** A wave's next states as the backend wrote them (segment-major, see stepWave), shared by the wave's captures. */
export interface WaveStates {
  readonly states: Float32Array;
  /** Rows in the wave. */
  readonly batch: number;
  readonly segments: readonly StateSegment[];
  /** Floats of one key's state. */
  readonly size: number;
}

/**
 * A key's state right after one step. It shares one copy of its wave's next-state buffer with
 * the wave's other keys and gathers its own key's floats only when read: a changelog reads one
 * capture per key per interval out of thousands made, and a typed array per event lives off
 * V8's heap: allocating and sweeping one per event cost more than the step itself.
 */
export class WaveStateCapture extends LazyStateSnapshot {
  constructor(
    private readonly wave: WaveStates,
    /** The key's row in the wave. */
    private readonly index: number,
    meta: SnapshotMeta,
  ) {
    super(meta);
  }

  get state(): Float32Array {
    const { states, batch, segments, size } = this.wave;
    const out = new Float32Array(size);
    for (const seg of segments) {
      const from = batch * seg.offset + this.index * seg.size;
      for (let j = 0; j < seg.size; j++) out[seg.offset + j] = states[from + j]!;
    }
    return out;
  }
}

/** A key's state held as its own copy: where no wave holds it (an event that stepped nothing). */
export class HeldStateCapture extends LazyStateSnapshot {
  constructor(
    private readonly held: Float32Array,
    meta: SnapshotMeta,
  ) {
    super(meta);
  }

  get state(): Float32Array {
    return this.held.slice();
  }
}
