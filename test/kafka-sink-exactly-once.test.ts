/**
 * The exactly-once sink against a fake transactional producer (a log of what each partition's
 * transaction did): outputs are sent in the open transaction as they come, each interval ends it
 * with the changelog and the offset, what gathers behind a commit is committed at the next
 * interval, a retriable failure sends the transaction again from its first records, a fenced
 * one loses the partition, and a revoked partition's outputs are dropped. Timers are vitest's.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { randomModel } from '../src/core/random-model.js';
import { silentLogger } from '../src/observability/logger.js';
import type { PipelineOutput, PredictionRecord } from '../src/pipeline/predict.js';
import { unpackMessages, type WireTopicMessages } from '../src/adapters/kafka/producer/record-packer.js';
import { exactlyOnce } from '../src/adapters/kafka/sinks/exactly-once.js';
import { KafkaSink } from '../src/adapters/kafka/sinks/kafka-sink.js';
import { KafkajsTransactions, TransactionError, type PartitionTransactions, type TransactionContent } from '../src/adapters/kafka/producer/transactions.js';
import { CaptureLedger } from '../src/state/deferred-captures.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { decodeModelMarker, MODEL_MARKER_KEY } from '../src/state/model-marker.js';

const model = randomModel({ features: 1, layers: [{ cell: 'gru', hiddenSize: 2 }], head: { kind: 'softmax', labels: ['a', 'b'] }, seed: 5 });
const topics = { outputTopic: 'out', dlqTopic: 'dlq', changelogTopic: 'changelog' };

/** What each call did, as text: `send p0 out:k1,k2`, `commit p0 out:k3 changelog:k1,k3 @12`. */
function fakeTransactions(): PartitionTransactions & { log: string[]; committed: TransactionContent[]; failNext: (err: Error) => void; gate: () => () => void } {
  const log: string[] = [];
  const committed: TransactionContent[] = [];
  let failure: Error | undefined;
  let held: Promise<void> | undefined;
  const describe = (records: readonly WireTopicMessages[]): string =>
    records.map((t) => `${t.topic}:${unpackMessages(t).map((m) => (m.value === null ? `${String(m.key)}(tombstone)` : String(m.key))).join(',')}`).join(' ');
  const call = async (what: string): Promise<void> => {
    if (held) await held;
    if (failure) {
      const err = failure;
      failure = undefined;
      log.push(`${what} FAILED`);
      throw err;
    }
    log.push(what);
  };
  return {
    log,
    committed,
    failNext: (err) => (failure = err),
    /** Holds every later call until the returned function is called. */
    gate: () => {
      let open!: () => void;
      held = new Promise<void>((r) => (open = r)).then(() => void (held = undefined));
      return open;
    },
    init: (p) => call(`init p${p}`),
    send: (p, records) => call(`send p${p} ${describe(records)}`),
    commit: (p, c: TransactionContent) => call(`commit p${p} ${describe(c.records)} @${c.nextOffset}`.replace('  ', ' ')).then(() => void committed.push(c)),
    close: (p) => call(`close p${p}`),
    disconnect: async () => {},
  };
}

function prediction(store: KeyStateStore, key: string, partition: number, offset: number, ended = false): PredictionRecord {
  store.set({ key, state: new Float32Array(model.stateSize).fill(offset), steps: 1, lastSeen: 0, position: { partition, offset }, sequence: Number.NaN, carry: new Float64Array(0), lastClass: -1 });
  return { kind: 'prediction', key, seq: 1, prediction: 'a', head: 'softmax', names: ['a', 'b'], output: Float32Array.of(0.5, 0.5), state: store.get(key)!, ended, source: { kind: 'kafka', topic: 'in', partition, offset: String(offset) } };
}

const deadLetter = (partition: number, offset: number): PipelineOutput => ({ kind: 'dead-letter', reason: 'not JSON', source: { kind: 'kafka', topic: 'in', partition, offset: String(offset) }, raw: 'oops', messageKey: undefined });

function setup() {
  const store = new KeyStateStore(model);
  const tx = fakeTransactions();
  const written: string[] = [];
  const dropped: number[] = [];
  const lost: number[][] = [];
  const sink = new KafkaSink(
    exactlyOnce({
      transactions: tx,
      topics,
      changelog: () => store.changelogBatch(),
      logger: silentLogger,
      hooks: { onWritten: (c, p) => written.push(`p${p}: ${c.predictions}+${c.deadLetters}`), onDropped: (n) => dropped.push(n) },
      commitIntervalMs: 100,
      deadLetters: { partitions: 4 },
      committedOffset: async (p) => (p === 1 ? 40 : undefined),
      maxRetryMs: 100,
    }),
  );
  sink.onLost = (partitions) => lost.push([...partitions]);
  return { store, tx, sink, written, dropped, lost };
}

/** Lets microtasks and the fake's promises run. */
const settle = async (): Promise<void> => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }));
afterEach(() => vi.useRealTimers());

describe('KafkaSink, exactly once', () => {
  it('sends outputs in the open transaction as they come, and ends it each interval with the changelog and the next offset', async () => {
    const { store, tx, sink, written } = setup();
    expect(await sink.prepare(0)).toBeUndefined();
    expect(await sink.prepare(1)).toBe(40);
    sink.write(prediction(store, 'k1', 0, 10));
    sink.write(prediction(store, 'k2', 0, 11));
    sink.write(deadLetter(1, 40));
    await settle();
    sink.write(prediction(store, 'k1', 0, 12));
    await settle();
    expect(tx.log).toEqual(['init p0', 'init p1', 'send p0 out:k1,k2', 'send p1 dlq:null', 'send p0 out:k1']);
    expect(written).toEqual([]);
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    expect(tx.log.slice(5).sort()).toEqual(['commit p0 changelog:k1,k2 @13', 'commit p1 @41']);
    expect(written.sort()).toEqual(['p0: 3+0', 'p1: 0+1']);
  });

  it('a model marker goes in the transaction that carries the partition\'s first output after the swap, with that output\'s offset', async () => {
    const { store, tx, sink } = setup();
    await sink.prepare(0);
    await sink.prepare(1);
    sink.write(prediction(store, 'k1', 0, 10));
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    const marker = { model: 'ab'.repeat(32), name: 'next', policy: 'warm', at: 1 };
    sink.markModel(0, marker);
    sink.markModel(1, marker);
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    // No output yet: nothing to carry it, no transaction.
    expect(tx.log.filter((l) => l.startsWith('commit'))).toEqual(['commit p0 changelog:k1 @11']);
    sink.write(prediction(store, 'k2', 0, 11));
    sink.write(prediction(store, 'k1', 0, 12));
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    const last = tx.committed.at(-1)!;
    const changelog = last.records.filter((t) => t.topic === 'changelog').flatMap((t) => unpackMessages(t));
    const markers = changelog.filter((m) => String(m.key) === MODEL_MARKER_KEY);
    expect(markers).toHaveLength(1);
    expect(markers[0]!.partition).toBe(0);
    expect(decodeModelMarker(markers[0]!.value as Buffer)).toEqual({ ...marker, offset: 11 });
    // Once: the next transaction of p0 carries none; p1's waits for p1's first output.
    sink.write(prediction(store, 'k1', 0, 13));
    sink.write(prediction(store, 'k5', 1, 41));
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    const byPartition = tx.committed.slice(-2).map((c) => c.records.filter((t) => t.topic === 'changelog').flatMap((t) => unpackMessages(t)).filter((m) => String(m.key) === MODEL_MARKER_KEY).map((m) => decodeModelMarker(m.value as Buffer).offset));
    expect(byPartition.sort()).toEqual([[], [41]]);
  });

  it('reads every partition\'s changelog states still on the device in one read at the interval, not one per partition', async () => {
    const { store, tx, sink } = setup();
    await sink.prepare(0);
    await sink.prepare(1);
    // Captures whose floats are rows of a kept block on a stand-in device.
    const reads: number[] = [];
    const ledger = new CaptureLedger(
      { readKept: (parts, into) => void (reads.push(parts.reduce((n, p) => n + p.rows.length, 0)), into.fill(0.25)) },
      model.stateSegments,
      model.stateSize,
    );
    const block = ledger.block({ rows: 4, bytes: 4 * model.stateSize * 4, release: () => {} });
    const onDevice = (key: string, partition: number, offset: number, row: number, ended = false): PredictionRecord => ({
      ...prediction(store, key, partition, offset, ended),
      state: ledger.capture(block, row, { key, steps: 1, lastSeen: 0, position: { partition, offset }, sequence: Number.NaN, carry: new Float64Array(0), lastClass: -1 }),
    });
    sink.write(onDevice('k1', 0, 10, 0));
    sink.write(onDevice('k2', 1, 41, 1));
    sink.write(onDevice('k3', 1, 42, 2, true));
    sink.write(onDevice('k1', 0, 11, 3));
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    // k1's first capture was replaced, k3 ended (a tombstone): two rows, one read.
    expect(reads).toEqual([2]);
    expect(tx.log.filter((l) => l.startsWith('commit')).sort()).toEqual(['commit p0 changelog:k1 @12', 'commit p1 changelog:k2,k3(tombstone) @43']);
    expect(ledger.stats.liveBytes).toBe(0);
  });

  it('commits what gathered while the last transaction was committing, at the next interval, with no new write to prompt it', async () => {
    const { store, tx, sink, written } = setup();
    await sink.prepare(0);
    sink.write(prediction(store, 'k1', 0, 10));
    await settle();
    const open = tx.gate();
    await vi.advanceTimersByTimeAsync(100); // cut: the commit waits at the gate
    sink.write(prediction(store, 'k2', 0, 11)); // gathers behind it
    await settle();
    await vi.advanceTimersByTimeAsync(100); // an interval passes while the commit still waits
    open();
    await settle();
    expect(written).toEqual(['p0: 1+0']);
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    expect(tx.log.filter((l) => l.startsWith('commit'))).toEqual(['commit p0 changelog:k1 @11', 'commit p0 changelog:k2 @12']);
    expect(written).toEqual(['p0: 1+0', 'p0: 1+0']);
  });

  it('a retriable failure sends the aborted transaction again from its first records', async () => {
    const { store, tx, sink, written } = setup();
    await sink.prepare(0);
    sink.write(prediction(store, 'k1', 0, 10));
    await settle();
    sink.write(prediction(store, 'k2', 0, 11));
    tx.failNext(new TransactionError('broker gone', 0, false, true));
    await settle();
    await vi.advanceTimersByTimeAsync(100); // the retry's backoff
    await settle();
    await vi.advanceTimersByTimeAsync(100); // the interval
    await settle();
    // The interval came during the backoff: the resent records (from k1 on) ride with the commit.
    expect(tx.log.slice(1)).toEqual(['send p0 out:k1', 'send p0 out:k2 FAILED', 'commit p0 out:k1 out:k2 changelog:k1,k2 @12']);
    expect(written).toEqual(['p0: 2+0']);
  });

  it('a fenced transaction loses the partition: its outputs are dropped and the runner is told', async () => {
    const { store, tx, sink, written, dropped, lost } = setup();
    await sink.prepare(0);
    sink.write(prediction(store, 'k1', 0, 10));
    tx.failNext(new TransactionError('old epoch', 0, true, false));
    await settle();
    expect(lost).toEqual([[0]]);
    expect(dropped).toEqual([1]);
    // Later outputs of the lost partition are dropped too, until it is prepared again.
    sink.write(prediction(store, 'k1', 0, 11));
    expect(dropped).toEqual([1, 1]);
    await vi.advanceTimersByTimeAsync(100);
    expect(written).toEqual([]);
    await expect(sink.flush()).resolves.toBeUndefined();
  });

  it('after abort(), flush() ends and nothing is pumped again: no loop of microtasks that starves the timers', async () => {
    const { store, tx, sink } = setup();
    await sink.prepare(0);
    await sink.prepare(1);
    sink.write(prediction(store, 'k1', 0, 10));
    sink.write(prediction(store, 'k2', 1, 20));
    await settle();
    const open = tx.gate(); // the commits hang, as through a dead coordinator
    const flushing = sink.flush();
    await settle();
    sink.abort();
    // The hung commit then fails retriably: its transaction stays cut, and was pumped again.
    tx.failNext(new TransactionError('The group coordinator is not available', 0, false, true));
    open();
    // A timer must get its turn: before the fix flush() looped on microtasks for ever (100 % CPU).
    let timerRan = false;
    setTimeout(() => (timerRan = true), 0);
    await vi.advanceTimersByTimeAsync(1);
    expect(timerRan).toBe(true);
    await expect(flushing).resolves.toBeUndefined();
    const calls = tx.log.length;
    await vi.advanceTimersByTimeAsync(1000);
    expect(tx.log.length).toBe(calls);
  });

  it('a record the broker can never take fails the sink', async () => {
    const { store, tx, sink } = setup();
    await sink.prepare(0);
    sink.write(prediction(store, 'k1', 0, 10));
    tx.failNext(new TransactionError('MESSAGE_TOO_LARGE', 0, false, false));
    await settle();
    await expect(sink.failure).rejects.toThrow(/MESSAGE_TOO_LARGE/);
  });

  it('drops what a revoked partition gathered, and writes a tombstone for a key that ended', async () => {
    const { store, tx, sink, dropped } = setup();
    await sink.prepare(0);
    await sink.prepare(1);
    sink.write(prediction(store, 'k1', 0, 10, true));
    sink.write(prediction(store, 'k9', 1, 50));
    await settle();
    sink.assigned([0]);
    expect(dropped).toEqual([1]);
    await sink.flush();
    expect(tx.log.filter((l) => l.startsWith('commit'))).toEqual(['commit p0 changelog:k1(tombstone) @11']);
  });
});

describe('KafkajsTransactions', () => {
  /** A kafkajs stand-in: each transaction records its calls; `commitFails` makes the next commit fail as a lost connection does. */
  function fakeKafka() {
    const calls: string[] = [];
    let commitFails = false;
    const producer = {
      connect: async () => void calls.push('connect'),
      disconnect: async () => void calls.push('disconnect'),
      transaction: async () => {
        let active = true;
        return {
          isActive: () => active,
          sendBatch: async () => void calls.push('sendBatch'),
          sendOffsets: async () => void calls.push('sendOffsets'),
          abort: async () => {
            active = false;
            calls.push('abort');
          },
          commit: async () => {
            calls.push('commit');
            if (commitFails) {
              // kafkajs's state stays COMMITTING: the transaction is no longer active, and neither commit nor abort can follow.
              active = false;
              throw Object.assign(new Error('Connection error: read ECONNRESET'), { name: 'KafkaJSConnectionError', retriable: true });
            }
            active = false;
          },
        };
      },
    };
    const kafka = { producer: () => producer } as unknown as import('kafkajs').Kafka;
    return { kafka, calls, failCommits: () => (commitFails = true) };
  }

  const settings = { applicationId: 'app', inputTopic: 'in', group: 'g', transactionTimeoutMs: 10_000, maxRequestBytes: 1 << 20 };

  it('a commit that fails midway is in doubt: the producer is dropped (the partition is prepared anew), not the transaction sent again', async () => {
    const { kafka, calls, failCommits } = fakeKafka();
    const transactions = new KafkajsTransactions(kafka, settings, silentLogger);
    await transactions.init(0);
    failCommits();
    const err = await transactions.commit(0, { records: [], nextOffset: '5' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionError);
    expect([(err as TransactionError).producerGone, (err as TransactionError).retriable, (err as TransactionError).fenced]).toEqual([true, false, false]);
    expect((err as Error).message).toMatch(/commit of partition 0's transaction is in doubt: Connection error: read ECONNRESET/);
    // No abort after the failed commit; the producer was let go.
    expect(calls.slice(-3)).toEqual(['sendOffsets', 'commit', 'disconnect']);
    await expect(transactions.send(0, [])).rejects.toThrow(/has no transactional producer/);
  });
});
