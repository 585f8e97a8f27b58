/**
 * What /healthz, /readyz and the rnnstream_health_status gauge say, from what the service knows:
 * unhealthy (503 on /healthz) when it cannot do its job and a restart is the cure; degraded
 * (still 200) when an operator must look (a broker down, a stall); not ready while it cannot
 * consume and produce.
 */
import type { ClusterHealthMonitor } from '../adapters/kafka/cluster/cluster-health.js';
import type { Health } from './http.js';
import type { StallWatch } from './stall-watch.js';

export interface HealthSources {
  /** Reasons the service is not doing its job (a fatal error, the consumer down, shutting down). */
  readonly unhealthy: () => readonly string[];
  readonly stopping: () => boolean;
  readonly stalls: StallWatch;
  readonly stallTimeoutMs: number;
  readonly cluster: ClusterHealthMonitor;
  readonly detail: () => Record<string, unknown>;
}

export function serviceHealth(s: HealthSources): () => Health {
  return () => {
    const unhealthy = [...s.unhealthy()];
    const stalled = s.stopping() ? [] : s.stalls.problems(s.stallTimeoutMs);
    const cluster = s.cluster.health;
    // Topics changed under the service (deleted, repartitioned, no longer compacted): it cannot go on.
    unhealthy.push(...cluster.broken);
    const degraded = [...stalled, ...cluster.problems];
    const status = unhealthy.length ? 'unhealthy' : degraded.length ? 'degraded' : 'ok';
    // Not ready while it cannot do its job; degraded by an under-replicated partition, it can.
    const ready = !unhealthy.length && !stalled.length && cluster.reachable;
    return { status, ready, reasons: [...unhealthy, ...degraded], detail: s.detail() };
  };
}
