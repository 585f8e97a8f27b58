/** GET /keys/{key}: the owner answers from its store, another member says where to ask, bad keys are refused. */
import { Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { randomModel } from '../src/core/random-model.js';
import { keyQuery, MAX_QUERY_KEY_BYTES } from '../src/service/key-query.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { WarmHistory } from '../src/state/warm-history.js';

const model = randomModel({ features: 2, layers: [{ cell: 'gru', hiddenSize: 3 }], head: { kind: 'softmax', labels: ['left', 'right'] }, seed: 3 });
const partitionOf = (key: string): number =>
  Partitioners.DefaultPartitioner()({ topic: 'in', partitionMetadata: Array.from({ length: 4 }, (_, partitionId) => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] })), message: { key, value: null } });

describe('keyQuery', () => {
  it('answers a key held here with its scalars, a key of a partition owned elsewhere with a redirect to its owner', () => {
    const store = new KeyStateStore(model);
    store.set({ key: 'ball-7', state: new Float32Array(model.stateSize).fill(0.5), steps: 12, lastSeen: 1_000, position: { partition: 2, offset: 345 }, sequence: 11, carry: new Float64Array(0), lastClass: 1 });
    const view = { self: 'm-a', members: [{ memberId: 'm-a', partitions: [2], endpoint: 'http://a:1' }, { memberId: 'm-b', partitions: [0, 1, 3], endpoint: 'http://b:2/' }] };
    const ask = keyQuery({ store, inputTopic: 'in', inputPartitions: 4, owned: () => [2], group: () => view, now: () => 4_500 });
    expect(ask('ball-7')).toEqual({
      status: 200,
      body: { key: 'ball-7', partition: 2, seq: 11, steps: 12, stateAgeMs: 3_500, lastPrediction: 'right', lastOffset: 345, model: { name: model.name, hash: model.hash }, warm: null },
    });
    // Keys not here: by the default partitioner, owned here (404) or by b (307 to b).
    const keys = Array.from({ length: 40 }, (_, i) => `k/${i} ü`);
    const here = keys.find((k) => partitionOf(k) === 2)!;
    const there = keys.find((k) => partitionOf(k) === 3)!;
    expect(ask(here).status).toBe(404);
    const redirect = ask(there);
    expect(redirect).toEqual({ status: 307, location: `http://b:2/keys/${encodeURIComponent(there)}`, body: { key: there, partition: 3, owner: { memberId: 'm-b', endpoint: 'http://b:2/' } } });
  });

  it('with hot swap policy warm, says whether the key has seen its history\'s length of events under the model serving it', () => {
    const history = new WarmHistory({ length: 2, width: 2, offset: 0 });
    const store = new KeyStateStore(model, { carrySize: history.size });
    const carry = new Float64Array(history.size).fill(Number.NaN);
    history.push(carry, 0, 1, Float64Array.of(1, 2));
    const snapshot = { key: 'ball-7', state: new Float32Array(model.stateSize), steps: 1, lastSeen: 0, position: { partition: 2, offset: 3 }, sequence: Number.NaN, carry, lastClass: -1 };
    store.set(snapshot);
    const ask = keyQuery({ store, inputTopic: 'in', inputPartitions: 4, owned: () => [2], group: () => undefined, history });
    expect(ask('ball-7').body['warm']).toBe(false);
    history.push(carry, 0, 2, Float64Array.of(3, 4));
    store.set({ ...snapshot, steps: 2 });
    expect(ask('ball-7').body['warm']).toBe(true);
    // Swapped (policy warm): cold until its next event warms it up.
    store.serve(randomModel({ features: 2, layers: [{ cell: 'gru', hiddenSize: 3 }], head: { kind: 'softmax', labels: ['left', 'right'] }, seed: 4 }), 'warm');
    expect(ask('ball-7').body['warm']).toBe(false);
  });

  it('refuses an empty or too long key, and says so while the group is being described', () => {
    const store = new KeyStateStore(model);
    const ask = keyQuery({ store, inputTopic: 'in', inputPartitions: 4, owned: () => [], group: () => undefined });
    expect(ask('').status).toBe(400);
    expect(ask('x'.repeat(MAX_QUERY_KEY_BYTES + 1)).body).toEqual({ error: `key: expected 1 to ${MAX_QUERY_KEY_BYTES} bytes of UTF-8, got ${MAX_QUERY_KEY_BYTES + 1}` });
    expect(ask('ball-1').status).toBe(503);
  });
});
