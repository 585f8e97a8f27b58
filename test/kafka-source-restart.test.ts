/**
 * KafkaSource.restart, the rejoin after partitions were lost (exactly once: their producer was
 * fenced), on a scripted consumer. A 20-minute soak stalled after a rejoin with a broker down;
 * these pin the two ways the rejoin itself could lose or hang: a partition lost while a rejoin
 * is draining, and a drain that never ends.
 */
import { EventEmitter } from 'node:events';
import type { Consumer } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { KafkaSource } from '../src/adapters/kafka/consumer/kafka-source.js';
import { silentLogger } from '../src/observability/logger.js';
import { BoundedQueue } from '../src/operators/bounded-queue.js';
import type { PartitionHost, Rejoin } from '../src/runner/types.js';

/** The consumer calls KafkaSource makes, recorded; `run` joins at once with `partitions`. */
function scriptedConsumer(partitions: number[]) {
  const emitter = new EventEmitter();
  const calls: string[] = [];
  /** As kafkajs between two runs (restarting the consumer after a crash): pause and resume throw. */
  const state = { betweenRuns: false };
  const refuse = (): void => {
    if (state.betweenRuns) throw new Error('Consumer group was not initialized, consumer#run must be called first');
  };
  const consumer = {
    events: { GROUP_JOIN: 'join', FETCH: 'fetch', CRASH: 'crash' },
    on: (event: string, listener: (e: unknown) => void) => emitter.on(event, listener),
    subscribe: async () => undefined,
    run: async () => {
      calls.push('run');
      emitter.emit('join', { payload: { memberAssignment: { input: partitions } } });
    },
    pause: (what: { partitions?: number[] }[]) => {
      refuse();
      calls.push(`pause ${what[0]?.partitions?.join(',') ?? 'all'}`);
    },
    resume: (what: { partitions?: number[] }[]) => {
      refuse();
      calls.push(`resume ${what[0]?.partitions?.join(',') ?? 'all'}`);
    },
    stop: async () => {
      calls.push('stop');
    },
  };
  return { consumer: consumer as unknown as Consumer, calls, state };
}

async function startedSource(partitions: number[]) {
  const { consumer, calls, state } = scriptedConsumer(partitions);
  const source = new KafkaSource(consumer, { topic: 'input', fromBeginning: true, queue: new BoundedQueue(100) }, silentLogger);
  const host: PartitionHost = { assigned: () => undefined, prepare: async () => undefined };
  source.start(host).subscribe();
  await source.started;
  return { source, calls, state };
}

describe('KafkaSource.restart', () => {
  it('a partition lost while a rejoin drains is forgotten by that rejoin, which stops and rejoins once', async () => {
    const { source, calls } = await startedSource([0, 1, 2, 3]);
    let endDrain!: () => void;
    const forgotten: number[][] = [];
    const rejoin: Rejoin = {
      drain: () => new Promise<void>((r) => (endDrain = r)),
      forget: (partitions) => forgotten.push([...partitions].sort()),
      drainTimeoutMs: 60_000,
    };
    const first = source.restart([1], rejoin);
    await new Promise((r) => setImmediate(r));
    // Lost while the first drains: it joins that restart, and this call does not start another.
    await source.restart([3], rejoin);
    expect(calls.filter((c) => c === 'stop')).toEqual([]);
    endDrain();
    await first;
    expect(forgotten).toEqual([[1, 3]]);
    expect(calls).toEqual(['run', 'pause all', 'stop', 'run']);
  });

  it('a drain that outlasts its deadline rejects with the partitions and the setting, and does not rejoin', async () => {
    const { source, calls } = await startedSource([0, 1]);
    const forgotten: number[][] = [];
    const rejoin: Rejoin = { drain: () => new Promise<void>(() => undefined), forget: (p) => forgotten.push([...p]), drainTimeoutMs: 50 };
    await expect(source.restart([1], rejoin)).rejects.toThrow(
      /rejoining after input partition\(s\) 1 were lost: what was in flight was not made durable within 50 ms \(rejoinDrainTimeoutMs\)/,
    );
    expect(forgotten).toEqual([]);
    expect(calls).toEqual(['run', 'pause all']);
  });

  it('a partition lost while kafkajs is between two runs of the consumer (restarting it after a crash) still rejoins', async () => {
    const { source, calls, state } = await startedSource([0, 1]);
    state.betweenRuns = true; // its pause throws, as kafkajs's did in a soak
    const forgotten: number[][] = [];
    await source.restart([0], { drain: async () => undefined, forget: (p) => forgotten.push([...p]), drainTimeoutMs: 60_000 });
    expect(forgotten).toEqual([[0]]);
    expect(calls).toEqual(['run', 'stop', 'run']);
  });
});
