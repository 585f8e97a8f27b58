/**
 * Admission control for the events inside an operator chain: a bounded count of events that
 * have entered and not yet left. Sources ask `whenReady()` before pushing more (the fixture
 * reader awaits it; the Kafka consumer pauses its partitions until it resolves), so a slow
 * backend slows the source down instead of growing memory. A source that ignores it gets a
 * QueueOverflowError at `capacity` rather than an unbounded buffer.
 */
import { QueueOverflowError } from '../core/errors.js';

export class BoundedQueue {
  private pending = 0;
  private waiters: (() => void)[] = [];
  private listeners = new Set<(full: boolean) => void>();
  private wasFull = false;
  /** Held (`hold`): nothing is admitted until `unhold`, whatever the count. */
  private held = false;
  private drainedWaiters: (() => void)[] = [];

  /**
   * @param capacity hard limit of events in flight.
   * @param resumeAt `whenReady()` resolves once in-flight events are at or below this
   *   (defaults to half the capacity, so sources resume in large strides, not one by one).
   */
  constructor(
    readonly capacity: number,
    readonly resumeAt: number = Math.floor(capacity / 2),
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity: expected an integer >= 1, got ${capacity}`);
    if (!(resumeAt >= 0 && resumeAt < capacity)) throw new RangeError(`resumeAt: expected 0 <= resumeAt < capacity, got ${resumeAt}`);
  }

  get size(): number {
    return this.pending;
  }

  /** True from reaching capacity until draining to `resumeAt`, and while held. */
  get full(): boolean {
    return this.wasFull;
  }

  /**
   * Admits nothing more until `unhold()` (sources wait as for a full queue); resolves once every
   * event in flight has left. A hot swap drains the chain this way at a point where nothing is
   * in flight.
   */
  hold(): Promise<void> {
    this.held = true;
    if (!this.wasFull) this.setFull(true);
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainedWaiters.push(resolve));
  }

  /** Admits again after `hold()`. */
  unhold(): void {
    if (!this.held) return;
    this.held = false;
    this.resumeIfDrained();
  }

  admit(n = 1): void {
    if (this.pending + n > this.capacity) {
      throw new QueueOverflowError(
        `bounded queue overflow: ${this.pending} events in flight + ${n} > capacity ${this.capacity}; the source must wait for whenReady()`,
      );
    }
    this.pending += n;
    if (!this.wasFull && this.pending >= this.capacity) this.setFull(true);
  }

  release(n = 1): void {
    this.pending = Math.max(0, this.pending - n);
    if (this.pending === 0 && this.drainedWaiters.length > 0) {
      const drained = this.drainedWaiters;
      this.drainedWaiters = [];
      for (const w of drained) w();
    }
    this.resumeIfDrained();
  }

  /** At or below `resumeAt` and not held: no longer full, and the sources waiting go on. */
  private resumeIfDrained(): void {
    if (this.pending > this.resumeAt || this.held) return;
    if (this.wasFull) this.setFull(false);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Room for `n` more events right now (without waiting)? */
  hasRoom(n = 1): boolean {
    return !this.wasFull && !this.held && this.pending + n <= this.capacity;
  }

  /** Resolves at once when not full, else once drained to `resumeAt`. */
  whenReady(): Promise<void> {
    if (!this.wasFull) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Called with true when the queue fills and false when it drains (pause/resume hooks). */
  onPressure(listener: (full: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private setFull(full: boolean): void {
    this.wasFull = full;
    for (const l of this.listeners) l(full);
  }
}
