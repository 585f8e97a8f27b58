/**
 * The service's stop, within a deadline (shutdownTimeoutMs), outage or not: stop fetching, let
 * what was handed on through the pipeline, make it durable, then let go of the clients and the
 * HTTP server. Flushing gets most of the time; what is not flushed by then stays uncommitted
 * (and is redelivered), and the result says so.
 */
import type { Server } from 'node:http';
import { within } from '../adapters/sleep.js';
import type { Logger } from '../observability/logger.js';

/** How a stop went. */
export interface StopResult {
  /** Every event taken in was produced and committed before the deadline. */
  readonly flushed: boolean;
  /** Events in flight when the deadline came (not committed: they are redelivered). */
  readonly unflushedEvents: number;
}

export interface StopParts {
  readonly timeoutMs: number;
  /** Events taken in and not yet durable. */
  readonly inFlight: () => number;
  /** Stops fetching, and resolves once everything handed on is durable (rejects on a failure, logged where it happened). */
  readonly drain: () => Promise<void>;
  /** A hard stop of whatever is still retrying. */
  readonly abort: () => void;
  /** Lets go of the clients (Kafka connections, health checks). */
  readonly disconnect: () => Promise<unknown>;
  /** Frees the compute backend; only after a complete flush (a backend still stepping is left to the process's exit). */
  readonly dispose: () => void;
  readonly server: Server;
  readonly logger: Logger;
}

export async function stopWithin(parts: StopParts): Promise<StopResult> {
  const { logger, timeoutMs } = parts;
  const deadline = performance.now() + timeoutMs;
  const left = (): number => Math.max(0, deadline - performance.now());
  logger.info({ inFlight: parts.inFlight(), timeoutMs }, 'stopping: finishing in-flight events');
  // In an outage neither the flush nor the disconnect ends by itself: kafkajs retries for as long as it is let.
  const flushed = (await within(left() * 0.8, parts.drain().then(() => true, () => false))) === true;
  const unflushedEvents = flushed ? 0 : parts.inFlight();
  if (!flushed) {
    parts.abort();
    logger.warn({ unflushedEvents, timeoutMs }, 'stopping without flushing everything: what is not committed is redelivered');
  }
  await within(left(), parts.disconnect());
  if (flushed) parts.dispose();
  parts.server.closeAllConnections();
  await within(left(), new Promise<void>((r) => parts.server.close(() => r())));
  logger.info({ flushed, unflushedEvents }, 'stopped');
  return { flushed, unflushedEvents };
}
