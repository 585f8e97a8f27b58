/**
 * Holds back repeats of one log line: the first is written, repeats within `windowMs` are
 * counted, and the next one written after the window says how many were held back. In a broker
 * outage kafkajs logs every retried connection and request (hundreds a minute); /healthz says
 * what they mean, and the log keeps one line per kind per window.
 */
export class RepeatLimiter {
  private readonly seen = new Map<string, { until: number; heldBack: number }>();

  constructor(
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** undefined: hold this one back; else write it, with how many like it were held back before. */
  admit(line: string): number | undefined {
    const t = this.now();
    const s = this.seen.get(line);
    if (s && t < s.until) {
      s.heldBack++;
      return undefined;
    }
    if (this.seen.size >= 1000) {
      // Bounded: lines whose window is over are forgotten (their held-back counts are lost).
      for (const [k, v] of this.seen) if (t >= v.until) this.seen.delete(k);
    }
    this.seen.set(line, { until: t + this.windowMs, heldBack: 0 });
    return s?.heldBack ?? 0;
  }
}
