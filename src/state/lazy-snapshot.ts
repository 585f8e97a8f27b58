/**
 * A key's snapshot whose state floats are gathered only when read: what rnnByKey attaches to
 * each step for a changelog, which reads one per key per commit interval out of thousands made.
 * Subclasses say where the floats are (a wave's read-back buffer, or a device's kept block).
 */
import type { StateSegment } from '../core/model.js';
import type { KeySnapshot, StatePosition } from './snapshot-codec.js';

export abstract class LazyStateSnapshot implements KeySnapshot {
  constructor(
    readonly key: string,
    readonly steps: number,
    readonly lastSeen: number,
    readonly position: StatePosition | undefined,
    readonly sequence: number,
    readonly carry: Float64Array,
    readonly lastClass: number,
  ) {}

  abstract get state(): Float32Array;
}

/**
 * A key's state right after one step. It shares one copy of its wave's next-state buffer with
 * the wave's other keys and gathers its own key's floats only when read: a changelog reads one
 * capture per key per interval out of thousands made, and a typed array per event lives off
 * V8's heap: allocating and sweeping one per event cost more than the step itself.
 */
export class WaveStateCapture extends LazyStateSnapshot {
  constructor(
    /** The wave's next states, laid out as the backend wrote them (segment-major, see stepWave). */
    private readonly wave: Float32Array,
    private readonly batch: number,
    private readonly index: number,
    private readonly segments: readonly StateSegment[],
    private readonly size: number,
    key: string,
    steps: number,
    lastSeen: number,
    position: StatePosition | undefined,
    sequence: number,
    carry: Float64Array,
    lastClass: number,
  ) {
    super(key, steps, lastSeen, position, sequence, carry, lastClass);
  }

  get state(): Float32Array {
    const out = new Float32Array(this.size);
    for (const seg of this.segments) {
      const from = this.batch * seg.offset + this.index * seg.size;
      for (let j = 0; j < seg.size; j++) out[seg.offset + j] = this.wave[from + j]!;
    }
    return out;
  }
}

/** A key's state held as its own copy: where no wave holds it (an event that stepped nothing). */
export class HeldStateCapture extends LazyStateSnapshot {
  constructor(
    private readonly held: Float32Array,
    key: string,
    steps: number,
    lastSeen: number,
    position: StatePosition | undefined,
    sequence: number,
    carry: Float64Array,
    lastClass: number,
  ) {
    super(key, steps, lastSeen, position, sequence, carry, lastClass);
  }

  get state(): Float32Array {
    return this.held.slice();
  }
}
