/**
 * A key's recent inputs, kept so that a new model can be warmed up on them (hot swap, policy
 * `warm`): the raw features (before any model's normalisation) of the key's last `length`
 * events, oldest overwritten first.
 *
 * The history lives in the key's carry columns, after the pipeline's own carry values, so the
 * store, its snapshots and its changelog hold it with no format of their own:
 *
 *   carry = [ pipeline carry (offset values) | filled | ring of length × width raw features ]
 *
 * `filled` counts the events in the ring under the model now served, up to `length`: a warm-up
 * replays every one of them through the new model, so after it the key has seen `filled` events
 * under that model too. A key is warm once `filled` reaches `length`.
 *
 * Pure arithmetic on a Float64Array: used by the stepper per event, allocates nothing.
 */
export interface WarmHistoryShape {
  /** Events remembered per key (N). */
  readonly length: number;
  /** Raw features per event (the pipeline's featureNames). */
  readonly width: number;
  /** Where the history starts in a key's carry: the pipeline's own carry values come first. */
  readonly offset: number;
}

export class WarmHistory implements WarmHistoryShape {
  readonly length: number;
  readonly width: number;
  readonly offset: number;

  constructor(shape: WarmHistoryShape) {
    if (!Number.isInteger(shape.length) || shape.length < 1) throw new RangeError(`warm history: length must be a positive integer, got ${shape.length}`);
    if (!Number.isInteger(shape.width) || shape.width < 1) throw new RangeError(`warm history: width must be a positive integer, got ${shape.width}`);
    this.length = shape.length;
    this.width = shape.width;
    this.offset = shape.offset;
  }

  /** Carry values the history takes per key: the count, then the ring. */
  get size(): number {
    return 1 + this.length * this.width;
  }

  /** Events in the key's history (its carry starts at `at`), at most `length`. */
  filled(carry: Float64Array, at: number): number {
    const n = carry[at + this.offset]!;
    // A fresh key's carry is NaN (nothing remembered yet).
    return n > 0 ? n : 0;
  }

  /** Whether the key has seen `length` events under the model now served. */
  warm(carry: Float64Array, at: number): boolean {
    return this.filled(carry, at) >= this.length;
  }

  /**
   * Appends an event's raw features. The ring is ordered by the key's step count (`steps`, the
   * event's 1-based index in the key's history), so no write position needs storing: event s
   * goes to row (s - 1) mod length.
   */
  push(carry: Float64Array, at: number, steps: number, raw: Float64Array): void {
    const base = at + this.offset;
    const W = this.width;
    const row = base + 1 + ((steps - 1) % this.length) * W;
    for (let f = 0; f < W; f++) carry[row + f] = raw[f]!;
    carry[base] = Math.min(this.filled(carry, at) + 1, this.length);
  }

  /**
   * The history's row of its `k`-th oldest event (0-based, k < filled) as an index into `carry`,
   * given the key's step count: the last event pushed was step `steps`.
   */
  rowAt(at: number, steps: number, filled: number, k: number): number {
    const step = steps - filled + k; // 0-based step index of that event
    return at + this.offset + 1 + (step % this.length) * this.width;
  }
}
