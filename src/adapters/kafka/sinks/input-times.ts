/**
 * The input records' timestamps of a batch of outputs, kept until the outputs are durable
 * (acknowledged at least once, committed exactly once), when the service observes each event's
 * end-to-end latency (rnnstream_end_to_end_latency_seconds). A growable Float64Array: no object
 * per event.
 */
export class InputTimes {
  private times = new Float64Array(256);
  length = 0;

  /** The input record's timestamp (ms since the epoch), where it has one. */
  add(timestamp: number | undefined): void {
    if (timestamp === undefined || !Number.isFinite(timestamp)) return;
    if (this.length === this.times.length) {
      const grown = new Float64Array(2 * this.times.length);
      grown.set(this.times);
      this.times = grown;
    }
    this.times[this.length++] = timestamp;
  }

  /** The timestamps added, in order (a view, valid until the next add). */
  view(): Float64Array {
    return this.times.subarray(0, this.length);
  }
}
