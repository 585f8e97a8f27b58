/**
 * A key's snapshot whose state floats are gathered only when read: what rnnByKey attaches to
 * each step for a changelog, which reads one per key per commit interval out of thousands made.
 * Subclasses say where the floats are (a wave's read-back buffer, or a device's kept block).
 */
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
