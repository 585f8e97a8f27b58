/**
 * GET /keys/{key}: what the running service knows of one key, as Kafka Streams' interactive
 * queries answer (`queryMetadataForKey`, then the store on the owning instance). Read-only and
 * bounded: the key is at most MAX_QUERY_KEY_BYTES, the answer is a few scalars (no hidden state,
 * no configuration), and a key owned elsewhere is answered with where to ask (307 to the owner's
 * advertised endpoint), never fetched from there.
 *
 * Which partition a key is in: where its state says its last event came from, when it is here;
 * else Kafka's default partitioner (murmur2 of the key, as kafkajs and the Java client place a
 * keyed record, and as `rnnstream produce` does).
 */
import { Partitioners } from 'kafkajs';
import type { GroupView } from '../adapters/kafka/consumer/group-watch.js';
import type { KeyStateStore } from '../state/key-state-store.js';
import type { WarmHistory } from '../state/warm-history.js';

export const MAX_QUERY_KEY_BYTES = 1024;

export interface KeyAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
  /** For a key owned by another member: its URL there. */
  readonly location?: string;
}

export interface KeyQueryParts {
  /** The keys' state, and (store.model) the model serving them now: a hot swap replaces it. */
  readonly store: KeyStateStore;
  readonly inputTopic: string;
  readonly inputPartitions: number;
  /** The input partitions this member owns now. */
  readonly owned: () => readonly number[];
  /** The group as last described (undefined while a rebalance is being described). */
  readonly group: () => GroupView | undefined;
  readonly now?: () => number;
  /** With hot swap policy warm: each key's history, for its warm flag. */
  readonly history?: WarmHistory | undefined;
}

export function keyQuery(parts: KeyQueryParts): (key: string) => KeyAnswer {
  const { store, inputTopic, inputPartitions } = parts;
  const now = parts.now ?? Date.now;
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: inputPartitions }, (_, partitionId) => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] }));
  return (key) => {
    const bytes = Buffer.byteLength(key);
    if (bytes === 0 || bytes > MAX_QUERY_KEY_BYTES) return { status: 400, body: { error: `key: expected 1 to ${MAX_QUERY_KEY_BYTES} bytes of UTF-8, got ${bytes}` } };
    const { model } = store;
    const modelOf = { name: model.name, hash: model.hash };
    const s = store.scalarsOf(key);
    const partition = s?.position?.partition ?? partitioner({ topic: inputTopic, partitionMetadata, message: { key, value: null } });
    if (s && parts.owned().includes(partition)) {
      const labels = model.head.kind === 'softmax' ? model.head.names : undefined;
      return {
        status: 200,
        body: {
          key,
          partition,
          seq: Number.isNaN(s.sequence) ? null : s.sequence,
          steps: s.steps,
          stateAgeMs: Math.max(0, now() - s.lastSeen),
          lastPrediction: labels && s.lastClass >= 0 ? labels[s.lastClass] : null,
          lastOffset: s.position ? s.position.offset : null,
          model: modelOf,
          // Policy warm only: whether the key has seen its history's length of events under the
          // model serving it (false too while it waits for its warm-up after a swap).
          warm: parts.history ? !store.isCold(key) && parts.history.warm(store.carryOf(key)!, 0) : null,
        },
      };
    }
    if (parts.owned().includes(partition)) return { status: 404, body: { key, partition, error: 'no state for this key here: no event of it yet, it ended, or it was evicted', model: modelOf } };
    const view = parts.group();
    const owner = view?.members.find((m) => m.partitions.includes(partition));
    if (!owner) return { status: 503, body: { key, partition, error: 'the group is rebalancing: no owner of the partition is known yet; ask again' } };
    if (!owner.endpoint) return { status: 404, body: { key, partition, owner: { memberId: owner.memberId, endpoint: null }, error: 'another member owns the partition and advertises no endpoint' } };
    const location = `${owner.endpoint.replace(/\/$/, '')}/keys/${encodeURIComponent(key)}`;
    return { status: 307, location, body: { key, partition, owner: { memberId: owner.memberId, endpoint: owner.endpoint } } };
  };
}
