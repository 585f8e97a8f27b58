import { describe, expect, it } from 'vitest';
import { fetchCommittedOffset } from '../src/adapters/kafka/consumer/committed-offsets.js';
import { createSerial } from '../src/adapters/kafka/cluster/serial.js';

const protocolError = (message: string, retriable: boolean): Error => Object.assign(new Error(message), { name: 'KafkaJSProtocolError', retriable });

/** An admin whose fetchOffsets fails with `failures` first, then answers offset 42 for partition 1. */
function adminFailing(failures: Error[]) {
  let calls = 0;
  return {
    calls: () => calls,
    fetchOffsets: async () => {
      const failure = failures[calls++];
      if (failure) throw failure;
      return [{ topic: 'in', partitions: [{ partition: 0, offset: '-1', metadata: null }, { partition: 1, offset: '42', metadata: null }] }];
    },
  };
}

describe('fetchCommittedOffset', () => {
  const where = (partition: number) => ({ group: 'g', topic: 'in', partition });

  it('retries a retriable error (NOT_COORDINATOR on a fresh cluster) and then answers', async () => {
    const admin = adminFailing([protocolError('This is not the correct coordinator for this group', true), protocolError('The coordinator is loading', true)]);
    const retried: string[] = [];
    await expect(fetchCommittedOffset(admin as never, createSerial(), where(1), { onRetry: (e) => retried.push(e.message) })).resolves.toBe(42);
    expect(admin.calls()).toBe(3);
    expect(retried).toHaveLength(2);
  });

  it('says undefined for a partition without a committed offset', async () => {
    await expect(fetchCommittedOffset(adminFailing([]) as never, createSerial(), where(0))).resolves.toBeUndefined();
  });

  it('throws a non-retriable error at once, and a retriable one past the deadline', async () => {
    const denied = adminFailing([protocolError('Not authorized to access group', false)]);
    await expect(fetchCommittedOffset(denied as never, createSerial(), where(1))).rejects.toThrow(/Not authorized/);
    expect(denied.calls()).toBe(1);
    const forever = adminFailing(Array.from({ length: 100 }, () => protocolError('This is not the correct coordinator for this group', true)));
    await expect(fetchCommittedOffset(forever as never, createSerial(), where(1), { deadlineMs: 250 })).rejects.toThrow(/not the correct coordinator/);
    expect(forever.calls()).toBeGreaterThan(1);
    expect(forever.calls()).toBeLessThan(6);
  });
});
