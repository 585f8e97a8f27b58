/** A changelog of N keys of the ball model, written as the service writes it (bench:restore, bench:failover). */
import type { Kafka } from 'kafkajs';
import { createRng } from '../src/core/prng.js';
import type { KeyStateStore, StatePosition } from '../src/state/key-state-store.js';
import type { KeySnapshot } from '../src/state/snapshot-codec.js';

export interface ChangelogFixture {
  readonly kafka: Kafka;
  /** Created here, compacted, with `partitions` partitions (as many as the input's). */
  readonly topic: string;
  readonly keys: number;
  readonly partitions: number;
  /** Encodes the snapshots (its model and carry are the service's). */
  readonly store: KeyStateStore;
  /** Key number k's position: its partition is the changelog partition it goes to. */
  readonly position: (k: number) => StatePosition;
}

/** Every key `ball-<k>`'s snapshot, one record each, keyed by the key; returns the time and the bytes. */
export async function writeChangelog(f: ChangelogFixture): Promise<{ seconds: number; bytes: number }> {
  const { kafka, topic, keys, store } = f;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: f.partitions, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] }] });
  await admin.disconnect();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const rng = createRng(26);
  const started = performance.now();
  let bytes = 0;
  // About 1,250 records a partition per request: a partition's batch stays under the broker's 1 MB.
  const BATCH = 1250 * f.partitions;
  for (let from = 0; from < keys; from += BATCH) {
    const messages = [];
    for (let k = from; k < Math.min(keys, from + BATCH); k++) {
      const position = f.position(k);
      const snapshot: KeySnapshot = {
        key: `ball-${k}`,
        state: Float32Array.from({ length: store.stateSize }, () => rng.normal() * 0.5),
        steps: 1 + (k % 70),
        lastSeen: 0,
        position,
        sequence: k % 70,
        carry: Float64Array.of(rng.next(), rng.next()),
        lastClass: k % 8,
      };
      const value = Buffer.from(store.encode([snapshot]));
      bytes += value.length;
      messages.push({ key: snapshot.key, value, partition: position.partition });
    }
    await producer.send({ topic, messages, acks: -1 });
  }
  await producer.disconnect();
  return { seconds: (performance.now() - started) / 1000, bytes };
}
