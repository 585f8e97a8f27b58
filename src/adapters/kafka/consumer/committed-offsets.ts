import type { Admin } from 'kafkajs';
import { createSerial, type Serial } from '../cluster/serial.js';
import { sleep } from '../../sleep.js';

/** How long a committed-offset read keeps trying through retriable errors before it gives up. */
export const COMMITTED_OFFSET_DEADLINE_MS = 60_000;

interface RetriableError extends Error {
  readonly retriable?: boolean;
}

export interface CommittedOffsetOptions {
  readonly deadlineMs?: number;
  readonly onRetry?: (err: Error) => void;
  /** Admin calls one at a time (shared with the caller's other admin calls); default: its own. */
  readonly adminCalls?: Serial;
}

/**
 * The group's committed offset per partition of `topic` (a partition with none is absent).
 *
 * kafkajs's `admin.fetchOffsets` sends its OffsetFetch once, without its retrier: right after a
 * cluster starts (the group coordinator's __consumer_offsets partition still being elected) or
 * after the coordinator's broker dies, the answer is NOT_COORDINATOR or
 * COORDINATOR_LOAD_IN_PROGRESS, both retriable. Found by the exactly-once kill test on a fresh
 * cluster in CI. Retriable errors are retried with capped exponential backoff until `deadlineMs`;
 * any other error, or the deadline, is thrown as it came.
 */
export async function fetchCommittedOffsets(
  admin: Pick<Admin, 'fetchOffsets'>,
  where: { readonly group: string; readonly topic: string },
  options: CommittedOffsetOptions = {},
): Promise<Map<number, number>> {
  const adminCalls = options.adminCalls ?? createSerial();
  const deadline = Date.now() + (options.deadlineMs ?? COMMITTED_OFFSET_DEADLINE_MS);
  for (let attempt = 0; ; attempt++) {
    try {
      const [topic] = await adminCalls(() => admin.fetchOffsets({ groupId: where.group, topics: [where.topic] }));
      return new Map((topic?.partitions ?? []).map((p) => [p.partition, Number(p.offset)] as const).filter(([, offset]) => offset >= 0));
    } catch (err) {
      const wait = Math.min(100 * 2 ** attempt, 5_000);
      if ((err as RetriableError).retriable !== true || Date.now() + wait > deadline) throw err;
      options.onRetry?.(err as Error);
      await sleep(wait);
    }
  }
}

/** The group's committed offset for one partition of `topic` (undefined where it has none); see fetchCommittedOffsets. */
export async function fetchCommittedOffset(
  admin: Pick<Admin, 'fetchOffsets'>,
  adminCalls: Serial,
  where: { readonly group: string; readonly topic: string; readonly partition: number },
  options: Omit<CommittedOffsetOptions, 'adminCalls'> = {},
): Promise<number | undefined> {
  return (await fetchCommittedOffsets(admin, where, { ...options, adminCalls })).get(where.partition);
}
