import type { Admin } from 'kafkajs';
import type { Serial } from './serial.js';

/** How long a committed-offset read keeps trying through retriable errors before it gives up. */
export const COMMITTED_OFFSET_DEADLINE_MS = 60_000;

interface RetriableError extends Error {
  readonly retriable?: boolean;
}

/**
 * The group's committed offset for one partition of `topic` (undefined where it has none).
 *
 * kafkajs's `admin.fetchOffsets` sends its OffsetFetch once, without its retrier: right after a
 * cluster starts (the group coordinator's __consumer_offsets partition still being elected) or
 * after the coordinator's broker dies, the answer is NOT_COORDINATOR or
 * COORDINATOR_LOAD_IN_PROGRESS, both retriable. Found by the exactly-once kill test on a fresh
 * cluster in CI. Retriable errors are retried with capped exponential backoff until `deadlineMs`;
 * any other error, or the deadline, is thrown as it came.
 */
export async function fetchCommittedOffset(
  admin: Pick<Admin, 'fetchOffsets'>,
  adminCalls: Serial,
  where: { readonly group: string; readonly topic: string; readonly partition: number },
  options: { readonly deadlineMs?: number; readonly onRetry?: (err: Error) => void } = {},
): Promise<number | undefined> {
  const deadline = Date.now() + (options.deadlineMs ?? COMMITTED_OFFSET_DEADLINE_MS);
  for (let attempt = 0; ; attempt++) {
    try {
      const [topic] = await adminCalls(() => admin.fetchOffsets({ groupId: where.group, topics: [where.topic] }));
      const offset = Number(topic?.partitions.find((p) => p.partition === where.partition)?.offset ?? -1);
      return offset >= 0 ? offset : undefined;
    } catch (err) {
      const wait = Math.min(100 * 2 ** attempt, 5_000);
      if ((err as RetriableError).retriable !== true || Date.now() + wait > deadline) throw err;
      options.onRetry?.(err as Error);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}
