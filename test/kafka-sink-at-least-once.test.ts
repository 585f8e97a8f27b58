/**
 * The Kafka sink's ordering contract, with an in-memory producer and consumer: outputs in order,
 * in requests of at most produceBatchSize; the changelog with each key's state as captured with
 * its last acknowledged prediction (not the live state, which may have moved on); no offset
 * committed before its outputs are acknowledged and its state is in the changelog; changelog
 * writes merged over the interval; flush() cuts the interval short.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Consumer } from 'kafkajs';
import { refusedRecordDeadLetter } from '../src/adapters/kafka/sinks/output-records.js';
import type { RecordProducer } from '../src/adapters/kafka/producer/producer-thread.js';
import { unpackMessages } from '../src/adapters/kafka/producer/record-packer.js';
import { atLeastOnce, type AtLeastOnceHooks } from '../src/adapters/kafka/sinks/at-least-once.js';
import { KafkaSink } from '../src/adapters/kafka/sinks/kafka-sink.js';
import type { DeadLetter } from '../src/operators/records.js';
import { deadLetterJson, predictionJson } from '../src/pipeline/serialize.js';
import { randomModel } from '../src/core/random-model.js';
import { silentLogger } from '../src/observability/logger.js';
import type { PipelineOutput, PredictionRecord } from '../src/pipeline/predict.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { decodeModelMarker, MODEL_MARKER_KEY } from '../src/state/model-marker.js';

const model = randomModel({ features: 2, layers: [{ cell: 'gru', hiddenSize: 2 }], head: { kind: 'softmax', labels: ['a', 'b'] }, seed: 3 });
const topics = { outputTopic: 'out', dlqTopic: 'dlq', changelogTopic: 'changelog' };

/** Records every call; each send resolves when the test says so (the broker's acknowledgement). */
function fakeKafka() {
  const log: string[] = [];
  const acks: ((ok: boolean) => void)[] = [];
  const changelog: { key: string; value: Buffer; partition?: number }[] = [];
  const outputs: { topic: string; key: string; value: string }[] = [];
  /** The highest source offset per input partition whose output the broker has acknowledged. */
  const acked = new Map<number, number>();
  /** Each commit's offsets beside what was acknowledged and in the changelog when it was made. */
  const commitChecks: { partition: number; next: number; acked: number; changelogBefore: boolean }[] = [];
  // An ordered producer: requests are acknowledged in the order they were sent (ackNext).
  const producer: RecordProducer = {
    connect: async () => {},
    disconnect: async () => {},
    abort: () => {},
    // The changelog resolves at once; outputs wait for ackNext (the broker's acknowledgement).
    sendPacked: (packed) => {
      const topics = packed.map((t) => ({ topic: t.topic, messages: unpackMessages(t) }));
      if (topics.length === 1 && topics[0]!.topic === 'changelog') {
        const { messages } = topics[0]!;
        log.push(`send changelog ${messages.length}`);
        for (const m of messages) changelog.push({ key: String(m.key), value: m.value as Buffer, ...(m.partition !== undefined ? { partition: m.partition } : {}) });
        return Promise.resolve();
      }
      const sources: { partition: number; offset: number }[] = [];
      for (const t of topics)
        for (const m of t.messages) {
          outputs.push({ topic: t.topic, key: String(m.key), value: String(m.value) });
          const { source } = JSON.parse(String(m.value)) as { source: { partition: number; offset: string } };
          sources.push({ partition: source.partition, offset: Number(source.offset) });
        }
      log.push(`sendBatch ${topics.map((t) => `${t.topic}:${t.messages.map((m) => String(m.key)).join(',')}`).join(' ')}`);
      return new Promise<void>((resolve, reject) =>
        acks.push((ok) => {
          if (!ok) return reject(new Error('produce abandoned: the producer is stopping'));
          for (const { partition, offset } of sources) acked.set(partition, Math.max(acked.get(partition) ?? -1, offset));
          resolve();
        }),
      );
    },
  };
  const consumer = {
    commitOffsets: async (offsets: { topic: string; partition: number; offset: string }[]) => {
      const lastIndex = (prefix: string): number => log.map((l) => l.startsWith(prefix)).lastIndexOf(true);
      const lastChangelog = lastIndex('send changelog');
      const lastCommit = lastIndex('commit');
      for (const o of offsets) commitChecks.push({ partition: o.partition, next: Number(o.offset), acked: acked.get(o.partition) ?? -1, changelogBefore: lastChangelog > lastCommit });
      log.push(`commit ${offsets.map((o) => `${o.topic}/${o.partition}@${o.offset}`).join(' ')}`);
    },
  } as unknown as Consumer;
  /** Settles the oldest request: acknowledged, or (ok false) failed as after the producer's abort. */
  const ackNext = async (ok = true): Promise<void> => {
    for (let i = 0; i < 50 && acks.length === 0; i++) await new Promise((r) => setImmediate(r));
    acks.shift()!(ok);
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };
  return { log, producer, consumer, changelog, outputs, commitChecks, ackNext };
}

function prediction(store: KeyStateStore, key: string, partition: number, offset: number): PredictionRecord {
  const source = { kind: 'kafka' as const, topic: 'in', partition, offset: String(offset) };
  // What rnnByKey does when it steps the event: the key's state and position move on.
  const before = store.read(store.acquire(key, 0));
  store.set({ ...before, state: new Float32Array(before.state.length).fill(offset), steps: before.steps + 1, position: { partition, offset } });
  // captureState: the state right after this event travels with its prediction.
  const state = store.get(key)!;
  return { kind: 'prediction', key, seq: state.steps, prediction: 'a', head: 'softmax', names: ['a', 'b'], output: new Float32Array([0.5, 0.5]), state, ended: false, source };
}

/** The at-least-once sink on the fake cluster, with the store's changelog captures. */
function atLeastOnceSink(k: ReturnType<typeof fakeKafka>, store: KeyStateStore, options: { hooks?: AtLeastOnceHooks; commitIntervalMs: number; produceBatchSize: number }): KafkaSink {
  return new KafkaSink(atLeastOnce({ producer: k.producer, consumer: k.consumer, topics, changelog: () => store.changelogBatch(), logger: silentLogger, deadLetters: { partitions: 4 }, ...options }));
}

/** Adds the outputs as one request, lets the broker acknowledge it, and waits for the sink to see that. */
async function writeAcknowledged(sink: KafkaSink, k: ReturnType<typeof fakeKafka>, ...outputs: PipelineOutput[]): Promise<void> {
  for (const r of outputs) sink.write(r);
  const drained = sink.drain();
  await k.ackNext();
  await drained;
}

describe('KafkaSink, at least once', () => {
  it('a model marker goes to the changelog after the partition\'s first output since the swap is acknowledged, with its offset, once', async () => {
    const store = new KeyStateStore(model);
    const k = fakeKafka();
    const sink = atLeastOnceSink(k, store, { commitIntervalMs: 0, produceBatchSize: 100 });
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 10));
    await sink.flush();
    const marker = { model: 'cd'.repeat(32), name: 'next', policy: 'reset', at: 2 };
    sink.markModel(0, marker);
    await writeAcknowledged(sink, k, prediction(store, 'y', 1, 20));
    await sink.flush();
    expect(k.changelog.filter((m) => m.key === MODEL_MARKER_KEY)).toEqual([]);
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 11), prediction(store, 'x', 0, 12));
    await sink.flush();
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 13));
    await sink.flush();
    const markers = k.changelog.filter((m) => m.key === MODEL_MARKER_KEY);
    expect(markers.map((m) => ({ partition: m.partition, ...decodeModelMarker(m.value) }))).toEqual([{ partition: 0, ...marker, offset: 11 }]);
  });

  it('outputs in order and in requests of produceBatchSize; changelog with the captured states; commits only behind acknowledged outputs', async () => {
    const store = new KeyStateStore(model);
    const k = fakeKafka();
    const written: number[] = [];
    let committed = 0;
    const sink = atLeastOnceSink(k, store, { hooks: { onWritten: (c) => written.push(c.predictions + c.deadLetters + c.skipped), onCommitted: (n) => (committed += n) }, commitIntervalMs: 0, produceBatchSize: 2 });
    const outputs: PipelineOutput[] = [
      prediction(store, 'x', 0, 10),
      prediction(store, 'y', 1, 20),
      { kind: 'dead-letter', reason: 'not JSON', source: { kind: 'kafka', topic: 'in', partition: 0, offset: '11' }, raw: 'oops', messageKey: 'z' },
      prediction(store, 'x', 0, 12),
      prediction(store, 'y', 1, 21),
      prediction(store, 'x', 0, 13),
    ];
    for (const r of outputs) sink.write(r);
    const drained = sink.drain();
    // A later event steps x on before the broker acknowledges: the changelog must not see it.
    prediction(store, 'x', 0, 14);
    await k.ackNext();
    await k.ackNext();
    expect(written).toEqual([2, 3]);
    await k.ackNext();
    await drained;
    await sink.flush();
    // Requests of at most 2 predictions, in order; the dead letter rides with the request it arrived in.
    expect(k.log.filter((l) => l.startsWith('sendBatch'))).toEqual(['sendBatch out:x,y', 'sendBatch out:x,y dlq:z', 'sendBatch out:x']);
    expect(written).toEqual([2, 3, 1]);
    expect(committed).toBe(6);
    // Every commit is behind acknowledged outputs and after a changelog write; the last one covers everything.
    expect(k.commitChecks.length).toBeGreaterThan(0);
    for (const c of k.commitChecks) {
      expect(c.next - 1).toBeLessThanOrEqual(c.acked);
      expect(c.changelogBefore).toBe(true);
    }
    const highest = new Map<number, number>();
    for (const c of k.commitChecks) highest.set(c.partition, Math.max(highest.get(c.partition) ?? 0, c.next));
    expect(Object.fromEntries(highest)).toEqual({ 0: 14, 1: 22 });
    // The records are the predictions' and dead letter's JSON, keyed like the input.
    const json = (r: PipelineOutput): { topic: string; key: string; value: string } =>
      r.kind === 'prediction' ? { topic: 'out', key: r.key, value: predictionJson(r) } : { topic: 'dlq', key: 'z', value: deadLetterJson(r as DeadLetter) };
    expect(k.outputs).toEqual([outputs[0]!, outputs[1]!, outputs[3]!, outputs[4]!, outputs[2]!, outputs[5]!].map(json));
    const restored = new KeyStateStore(model);
    for (const m of k.changelog) restored.restore(m.value);
    expect([...restored.get('x')!.state]).toEqual([13, 13]); // after offset 13, not 14
    expect(restored.get('x')!.steps).toBe(3);
    expect([...restored.get('y')!.state]).toEqual([21, 21]);
    expect(k.changelog.at(-1)!.partition).toBe(0);
    expect(new Set(k.changelog.map((m) => `${m.key}@${m.partition}`))).toEqual(new Set(['x@0', 'y@1']));
  });

  it('merges the changelog over the interval, and flush() does not wait for it', async () => {
    const store = new KeyStateStore(model);
    const k = fakeKafka();
    const sink = atLeastOnceSink(k, store, { commitIntervalMs: 60_000, produceBatchSize: 100 });
    // The first changelog write goes at once; the next waits for the interval...
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 1));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 2), prediction(store, 'y', 0, 3));
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 4));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(k.log.filter((l) => l.startsWith('send ') || l.startsWith('commit'))).toEqual(['send changelog 1', 'commit in/0@2']);
    // ...unless the service is stopping: then both chunks go as one changelog write and commit.
    await sink.flush();
    expect(k.log.filter((l) => l.startsWith('send ') || l.startsWith('commit'))).toEqual(['send changelog 1', 'commit in/0@2', 'send changelog 2', 'commit in/0@5']);
  });

  it('acknowledges nothing after a failed request, even if a later one is acknowledged', async () => {
    const store = new KeyStateStore(model);
    const k = fakeKafka();
    const written: number[] = [];
    const sink = atLeastOnceSink(k, store, { hooks: { onWritten: (c) => written.push(c.predictions) }, commitIntervalMs: 0, produceBatchSize: 1 });
    sink.write(prediction(store, 'x', 0, 1));
    sink.write(prediction(store, 'x', 0, 2));
    const drained = expect(sink.drain()).rejects.toThrow('produce abandoned');
    await k.ackNext(false);
    await k.ackNext(true);
    await drained;
    expect(written).toEqual([]);
    expect(k.log.filter((l) => l.startsWith('commit') || l.startsWith('send changelog'))).toEqual([]);
    await expect(sink.flush()).rejects.toThrow('produce abandoned');
  });

  it('after a rebalance, writes no state and commits no offset for partitions this member no longer owns', async () => {
    const store = new KeyStateStore(model);
    const k = fakeKafka();
    const sink = atLeastOnceSink(k, store, { commitIntervalMs: 60_000, produceBatchSize: 100 });
    sink.assigned([0, 1]);
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 1)); // the first changelog write and commit go at once
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    // Acknowledged within the interval: pending. Then partition 1 moves to another member.
    await writeAcknowledged(sink, k, prediction(store, 'x', 0, 2), prediction(store, 'y', 1, 7));
    sink.assigned([0]);
    // An output of partition 1 still in flight at the rebalance is produced, but not logged or committed.
    await writeAcknowledged(sink, k, prediction(store, 'y', 1, 8));
    await sink.flush();
    expect(k.log.filter((l) => l.startsWith('send ') || l.startsWith('commit'))).toEqual(['send changelog 1', 'commit in/0@2', 'send changelog 1', 'commit in/0@3']);
    expect(k.changelog.map((m) => `${m.key}@${m.partition}`)).toEqual(['x@0', 'x@0']);
    expect(k.outputs.map((o) => o.key)).toEqual(['x', 'x', 'y', 'y']);
  });
});

describe('refusedRecordDeadLetter', () => {
  const topics = { outputTopic: 'out', dlqTopic: 'dlq', dlqPartitions: 2 };
  const source = { topic: 'in', partition: 3, offset: '41' };

  it('a refused prediction becomes a dead letter with its source, key and size, in the dead-letter partition of its input partition', () => {
    const value = JSON.stringify({ key: 'b-1', seq: 4, prediction: 'up', source });
    const r = refusedRecordDeadLetter(topics, 'out', { key: 'b-1', value }, 'INVALID_TIMESTAMP: out of range')!;
    expect(r.topic).toBe('dlq');
    const m = r.messages[0]!;
    expect([m.key, m.partition]).toEqual(['b-1', 1]);
    expect(JSON.parse(String(m.value))).toEqual({
      reason: 'prediction refused by the broker: INVALID_TIMESTAMP: out of range',
      source,
      refused: { topic: 'out', bytes: Buffer.byteLength(value), sha256: createHash('sha256').update(value).digest('hex') },
    });
  });

  it("a refused dead letter keeps its reason, its input's size and hash, and drops the input's bytes", () => {
    const value = deadLetterJson({ kind: 'dead-letter', reason: 'not valid UTF-8', raw: new Uint8Array(5000).fill(0xff), source: { kind: 'kafka', ...source } } as DeadLetter);
    const m = refusedRecordDeadLetter(topics, 'dlq', { key: null, value }, 'MESSAGE_TOO_LARGE: too large')!.messages[0]!;
    const record = JSON.parse(String(m.value)) as Record<string, unknown>;
    expect(record).toMatchObject({ reason: 'not valid UTF-8 (its dead letter refused by the broker: MESSAGE_TOO_LARGE: too large)', rawBytes: 5000, rawTruncated: true });
    expect(record.rawSha256).toBe(createHash('sha256').update(new Uint8Array(5000).fill(0xff)).digest('hex'));
    expect(record.rawBase64).toBeUndefined();
    expect(m.headers).toEqual({ 'rnnstream-reason': record.reason });
  });

  it('a changelog record has no replacement (the service stops), and a value that is not JSON echoes nothing', () => {
    expect(refusedRecordDeadLetter(topics, 'changelog', { key: 'b-1', value: Buffer.from([1, 2, 3]) }, 'MESSAGE_TOO_LARGE: x')).toBeUndefined();
    const m = refusedRecordDeadLetter(topics, 'out', { key: 'k', value: 'secret-ish bytes' }, 'INVALID_RECORD: x')!.messages[0]!;
    expect(String(m.value)).not.toContain('secret');
    expect(m.partition).toBeUndefined();
  });
});
