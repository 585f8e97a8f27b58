/**
 * Stalls that kafkajs retries through in silence: a produce request failing attempt after
 * attempt, a consumer that no longer fetches. Each is fine for a moment (a leader election) and
 * a problem an operator must see when it lasts: then /healthz says degraded and /readyz not
 * ready, with how long it has lasted.
 */
export class StallWatch {
  private sendFailingSince: number | undefined;
  private lastFetchAt: number;

  constructor(private readonly now: () => number = Date.now) {
    this.lastFetchAt = now();
  }

  /** A produce attempt failed and is being retried. */
  sendFailed(): void {
    this.sendFailingSince ??= this.now();
  }

  /** A produce request was acknowledged. */
  sendSucceeded(): void {
    this.sendFailingSince = undefined;
  }

  /** The consumer completed a fetch (with or without records). */
  fetched(): void {
    this.lastFetchAt = this.now();
  }

  /** One line per stall that has lasted longer than `limitMs`. */
  problems(limitMs: number): string[] {
    const now = this.now();
    const out: string[] = [];
    if (this.sendFailingSince !== undefined && now - this.sendFailingSince > limitMs) out.push(`produce requests failing for ${seconds(now - this.sendFailingSince)} (retrying)`);
    if (now - this.lastFetchAt > limitMs) out.push(`no fetch from the brokers for ${seconds(now - this.lastFetchAt)}`);
    return out;
  }
}

const seconds = (ms: number): string => `${Math.round(ms / 1000)} s`;
