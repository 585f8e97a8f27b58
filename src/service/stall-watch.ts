/**
 * Stalls that kafkajs retries through in silence: a produce request failing attempt after
 * attempt, a consumer that no longer fetches, an owned partition with records waiting whose
 * committed offset does not move. Each is fine for a moment (a leader election) and a problem an
 * operator must see when it lasts: then /healthz says degraded and /readyz not ready, with how
 * long it has lasted.
 *
 * The last is the one that sees every cause: a soak found both instances fetching (so "live"),
 * every partition assigned and lagging, and nothing committed for minutes, while both said ready.
 * Progress is judged from the outside, as an operator's lag alert does, not from which of the
 * service's own waits is under way.
 */
import type { PartitionLag } from '../adapters/kafka/consumer/consumer-lag.js';

/**
 * A lag this small that does not grow is not a stall: an input written in transactions ends on
 * a commit marker, which takes an offset no consumer commits past (its committed offset stays
 * before the marker), so an idle partition keeps a lag of 1, or a few.
 */
const MARKER_SLACK = 8;

interface PartitionProgress {
  /** The committed offset last seen. */
  readonly committed: number;
  /** The log end when the committed offset last moved: records that came after it are waiting. */
  readonly endThen: number;
  /** The log end last seen. */
  readonly end: number;
  /** Since when it has not moved with records waiting (the last poll that saw it move or saw none waiting). */
  readonly since: number;
  readonly waiting: number;
}

export class StallWatch {
  private sendFailingSince: number | undefined;
  private lastFetchAt: number;
  private readonly progress = new Map<number, PartitionProgress>();

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

  /** A lag poll: each owned partition's records waiting and committed offset (a partition not in it is not owned). */
  lagPolled(lag: ReadonlyMap<number, PartitionLag>): void {
    const now = this.now();
    for (const p of [...this.progress.keys()]) if (!lag.has(p)) this.progress.delete(p);
    for (const [p, { records, committed, end }] of lag) {
      const seen = this.progress.get(p);
      const moved = !seen || seen.committed !== committed || records === 0;
      this.progress.set(p, moved ? { committed, endThen: end, end, since: now, waiting: records } : { ...seen, end, waiting: records });
    }
  }

  /** One line per stall that has lasted longer than `limitMs`. */
  problems(limitMs: number): string[] {
    const now = this.now();
    const out: string[] = [];
    if (this.sendFailingSince !== undefined && now - this.sendFailingSince > limitMs) out.push(`produce requests failing for ${seconds(now - this.sendFailingSince)} (retrying)`);
    if (now - this.lastFetchAt > limitMs) out.push(`no fetch from the brokers for ${seconds(now - this.lastFetchAt)}`);
    const stuck = [...this.progress].filter(([, s]) => s.waiting > 0 && (s.end > s.endThen || s.waiting > MARKER_SLACK) && now - s.since > limitMs).sort(([a], [b]) => a - b);
    if (stuck.length) {
      const waiting = stuck.reduce((n, [, s]) => n + s.waiting, 0);
      const longest = Math.max(...stuck.map(([, s]) => now - s.since));
      out.push(`no progress on input partition(s) ${stuck.map(([p]) => p).join(', ')}: ${waiting} record(s) waiting and the committed offset unchanged for ${seconds(longest)}`);
    }
    return out;
  }
}

const seconds = (ms: number): string => `${Math.round(ms / 1000)} s`;
