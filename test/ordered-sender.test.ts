/**
 * OrderedSender: requests go out one at a time in queue order, those queued meanwhile merged into
 * the next send (up to maxRecords and maxBytes; a larger request is split, in order), a failed send is retried before anything after it is sent, and
 * abort rejects what is in flight and queued.
 */
import { describe, expect, it } from 'vitest';
import type { TopicMessages } from 'kafkajs';
import { halves, OrderedSender, RECORD_OVERHEAD_BYTES, splitByBytes, type RefusalNotice, type RefusedRecords, type RetryNotice } from '../src/adapters/kafka/producer/ordered-sender.js';
import { packMessages } from '../src/adapters/kafka/producer/record-packer.js';

const req = (topic: string, ...keys: string[]) => [packMessages(topic, keys.map((k) => ({ key: k, value: `v${k}` })))];
const describeSend = (t: TopicMessages[]): string => t.map((x) => `${x.topic}:${x.messages.map((m) => String(m.key)).join(',')}`).join(' ');
const tick = async (n = 5): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/** kafkajs's error for a retriable broker answer. */
const notLeader = (): Error => Object.assign(new Error('NOT_LEADER'), { name: 'KafkaJSProtocolError', retriable: true });

/** kafkajs's error for a broker answer of this type, wrapped as kafkajs wraps what it gives up on. */
const brokerError = (type: string, retriable = false): Error =>
  Object.assign(new Error(`gave up: ${type}`), { name: 'KafkaJSNonRetriableError', retriable: false, cause: Object.assign(new Error(`broker said ${type}`), { name: 'KafkaJSProtocolError', type, retriable }) });

/** A broker that refuses any request holding one of `refused` (as Kafka refuses a partition's whole batch for one record). */
function refusingBroker(refused: readonly string[], type = 'MESSAGE_TOO_LARGE') {
  const sends: string[] = [];
  const send = (t: TopicMessages[]): Promise<void> => {
    sends.push(describeSend(t));
    return t.some((x) => x.messages.some((m) => refused.includes(String(m.key)))) ? Promise.reject(brokerError(type)) : Promise.resolve();
  };
  return { sends, send };
}

/** Refused records become one 'dlq' record keyed `dl-<key>`, except in 'changelog' (none: the sender stops). */
function deadLettering(notices: RefusalNotice[]): RefusedRecords {
  return {
    replacement: (topic, message) => (topic === 'changelog' ? undefined : { topic: 'dlq', messages: [{ key: `dl-${String(message.key)}`, value: 'minimal' }] }),
    onRefused: (n) => notices.push(n),
  };
}

/** A broker that answers when told: `next(ok)` settles the oldest send. */
function fakeBroker() {
  const sends: string[] = [];
  const answers: ((ok: boolean) => void)[] = [];
  const send = (t: TopicMessages[]): Promise<void> => {
    sends.push(describeSend(t));
    return new Promise<void>((resolve, reject) => answers.push((ok) => (ok ? resolve() : reject(notLeader()))));
  };
  const next = async (ok = true): Promise<void> => {
    for (let i = 0; i < 50 && answers.length === 0; i++) await tick(1);
    answers.shift()!(ok);
    await tick();
  };
  return { sends, send, next };
}

describe('OrderedSender', () => {
  it('sends one request at a time, in order, merging what queued up meanwhile (up to maxRecords)', async () => {
    const b = fakeBroker();
    const sender = new OrderedSender(b.send, () => {}, { maxRecords: 3, maxBytes: 1 << 20 });
    const done: string[] = [];
    const track = (name: string, p: Promise<void>): void => void p.then(() => done.push(name));
    track('a', sender.enqueue(req('out', 'a')));
    track('b', sender.enqueue(req('out', 'b')));
    track('c', sender.enqueue([...req('out', 'c'), ...req('dlq', 'x')]));
    track('d', sender.enqueue(req('out', 'd', 'e')));
    let idle = false;
    void sender.idle().then(() => (idle = true));
    await tick();
    expect(b.sends).toEqual(['out:a']);
    expect(idle).toBe(false);
    await b.next();
    // b and c merged (3 records, per topic in queue order); d would pass maxRecords.
    expect(b.sends).toEqual(['out:a', 'out:b,c dlq:x']);
    expect(done).toEqual(['a']);
    await b.next();
    await b.next();
    expect(b.sends).toEqual(['out:a', 'out:b,c dlq:x', 'out:d,e']);
    expect(done).toEqual(['a', 'b', 'c', 'd']);
    expect(idle).toBe(true);
    await sender.idle(); // nothing queued: at once
  });

  it('merges only up to maxBytes, and splits a request larger than maxBytes into ordered requests', async () => {
    const b = fakeBroker();
    // Each record: key (1 byte) + value 'v' + key (2 bytes) + the overhead estimate.
    const record = 1 + 2 + RECORD_OVERHEAD_BYTES;
    const sender = new OrderedSender(b.send, () => {}, { maxRecords: 100, maxBytes: 2 * record });
    const done: string[] = [];
    const track = (name: string, p: Promise<void>): void => void p.then(() => done.push(name));
    track('a', sender.enqueue(req('out', 'a')));
    track('b', sender.enqueue(req('out', 'b')));
    track('c', sender.enqueue(req('out', 'c')));
    track('big', sender.enqueue([...req('out', 'd', 'e', 'f'), ...req('changelog', 'g', 'h')]));
    await tick();
    await b.next();
    // b and c fit in maxBytes together; the 5-record request does not join them.
    expect(b.sends).toEqual(['out:a', 'out:b,c']);
    await b.next();
    expect(done).toEqual(['a', 'b', 'c']);
    // Split in order, no part over 2 records' bytes, one at a time; each topic's records in
    // queue order, and the request resolves only when its last part is acknowledged.
    expect(b.sends.slice(2)).toEqual(['out:d,e']);
    await b.next();
    expect(b.sends.slice(2)).toEqual(['out:d,e', 'out:f changelog:g']);
    await b.next();
    expect(b.sends.slice(2)).toEqual(['out:d,e', 'out:f changelog:g', 'changelog:h']);
    expect(done).toEqual(['a', 'b', 'c']);
    await b.next();
    expect(done).toEqual(['a', 'b', 'c', 'big']);
  });

  it('splitByBytes keeps a record larger than the limit alone and loses nothing', () => {
    const big = { key: 'k', value: 'x'.repeat(5000) };
    const parts = splitByBytes([{ topic: 't', messages: [{ key: 'a', value: 'v' }, big, { key: 'b', value: 'v' }] }], 1000);
    expect(parts.map(describeSend)).toEqual(['t:a', 't:k', 't:b']);
  });

  it('gives up at once on an error no retry cures: that request and everything queued after it reject, later ones too', async () => {
    const tooLarge = Object.assign(new Error('The request included a message larger than the max message size the server will accept'), { name: 'KafkaJSProtocolError', retriable: false });
    const sends: string[] = [];
    const retries: RetryNotice[] = [];
    const sender = new OrderedSender(
      (t) => {
        sends.push(describeSend(t));
        return Promise.reject(sends.length === 1 ? notLeader() : Object.assign(new Error(tooLarge.message), { name: 'KafkaJSNonRetriableError', retriable: false, cause: tooLarge }));
      },
      (n) => retries.push(n),
      { maxRecords: 1, maxBytes: 1 << 20, initialRetryMs: 1 },
    );
    const first = sender.enqueue(req('out', 'a'));
    const second = sender.enqueue(req('out', 'b'));
    await expect(first).rejects.toThrow(/producing to out failed and cannot succeed by retrying: The request included a message larger/);
    await expect(second).rejects.toThrow(/cannot succeed by retrying/);
    await expect(sender.enqueue(req('out', 'c'))).rejects.toThrow(/cannot succeed by retrying/);
    // One retry for the retriable error, none for the other; b and c were never sent.
    expect(retries.map((r) => r.error.retriable)).toEqual([true]);
    expect(sends).toEqual(['out:a', 'out:a']);
  });

  it('keeps retrying a retriable cause that outlasted kafkajs\'s own retries (an outage)', async () => {
    const exhausted = (): Error => Object.assign(new Error('Connection error'), { name: 'KafkaJSNumberOfRetriesExceeded', retriable: false, cause: Object.assign(new Error('Connection error: ECONNREFUSED'), { name: 'KafkaJSConnectionError', retriable: true }) });
    let calls = 0;
    const sender = new OrderedSender(() => (++calls < 4 ? Promise.reject(exhausted()) : Promise.resolve()), () => {}, { maxRecords: 10, maxBytes: 1 << 20, initialRetryMs: 1 });
    await sender.enqueue(req('out', 'a'));
    expect(calls).toBe(4);
  });

  it('retries a failed send with backoff before sending anything queued after it', async () => {
    const b = fakeBroker();
    const retries: RetryNotice[] = [];
    const sender = new OrderedSender(b.send, (n) => retries.push(n), { maxRecords: 100, maxBytes: 1 << 20, initialRetryMs: 1 });
    const first = sender.enqueue(req('out', 'a'));
    await tick();
    const second = sender.enqueue(req('out', 'b'));
    await b.next(false);
    await new Promise((r) => setTimeout(r, 10));
    // The retry of a comes first; b waits.
    expect(b.sends).toEqual(['out:a', 'out:a']);
    await b.next(true);
    await first;
    await b.next(true);
    await second;
    expect(b.sends).toEqual(['out:a', 'out:a', 'out:b']);
    expect(retries.map((r) => [r.attempt, r.error.message, r.error.retriable])).toEqual([[1, 'NOT_LEADER', true]]);
  });

  it('abort rejects the request in flight and everything queued; a request without retry fails alone', async () => {
    const b = fakeBroker();
    const sender = new OrderedSender(b.send, () => {}, { maxRecords: 100, maxBytes: 1 << 20, initialRetryMs: 60_000 });
    // Each expectation is attached before the rejection it waits for.
    const probe = expect(sender.enqueue(req('out'), { retry: false })).rejects.toThrow('NOT_LEADER');
    await b.next(false);
    await probe;
    const inFlight = expect(sender.enqueue(req('out', 'a'))).rejects.toThrow('produce abandoned: stopping');
    await tick();
    const queued = expect(sender.enqueue(req('out', 'b'))).rejects.toThrow('produce abandoned: stopping');
    await b.next(false); // now waiting 60 s to retry
    sender.abort('stopping');
    await inFlight;
    await queued;
    await expect(sender.enqueue(req('out', 'c'))).rejects.toThrow('produce abandoned');
    expect(b.sends).toEqual(['out:', 'out:a']);
  });

  it('halves a request the broker refuses for a record in it, down to that record, and writes its replacement in its place; the stream goes on', async () => {
    const b = refusingBroker(['c']);
    const notices: RefusalNotice[] = [];
    const sender = new OrderedSender(b.send, () => {}, { maxRecords: 100, maxBytes: 1 << 20 }, deadLettering(notices));
    await sender.enqueue([...req('out', 'a', 'b', 'c', 'd'), ...req('other', 'e')]);
    await sender.enqueue(req('out', 'f'));
    expect(b.sends).toEqual([
      'out:a,b,c,d other:e', // refused: c is in it
      'out:a,b,c', // refused
      'out:a,b',
      'out:c', // refused alone: replaced
      'dlq:dl-c',
      'out:d other:e',
      'out:f',
    ]);
    expect(notices.map((n) => [n.topic, n.replacedIn, n.reason])).toEqual([['out', 'dlq', 'MESSAGE_TOO_LARGE: broker said MESSAGE_TOO_LARGE']]);
    expect(notices[0]!.bytes).toBe(RECORD_OVERHEAD_BYTES + 'c'.length + 'vc'.length);
  });

  it('stops when a replacement is refused too, when a refused record has none (changelog), or on an error that is not about the records', async () => {
    const cases: [RefusedRecords | undefined, readonly string[], string, string][] = [
      [deadLettering([]), ['c', 'dl-c'], 'MESSAGE_TOO_LARGE', 'producing to dlq failed'],
      [deadLettering([]), ['c'], 'MESSAGE_TOO_LARGE', 'producing to changelog failed'],
      [undefined, ['c'], 'INVALID_RECORD', 'producing to out failed'],
      [deadLettering([]), ['c'], 'TOPIC_AUTHORIZATION_FAILED', 'producing to out failed'],
    ];
    for (const [refused, keys, type, message] of cases) {
      const b = refusingBroker(keys, type);
      const sender = new OrderedSender(b.send, () => {}, { maxRecords: 100, maxBytes: 1 << 20 }, refused);
      const topic = message.includes('changelog') ? 'changelog' : 'out';
      await expect(sender.enqueue(req(topic, 'a', 'c'))).rejects.toThrow(message);
      await expect(sender.enqueue(req('out', 'z'))).rejects.toThrow('cannot succeed by retrying');
      // Not about the records: no halving at all.
      if (type === 'TOPIC_AUTHORIZATION_FAILED') expect(b.sends).toEqual(['out:a,c']);
      expect(b.sends.join(' ')).not.toContain('out:z');
    }
  });

  it('halves keep each topic\'s order and lose nothing', () => {
    const request: TopicMessages[] = [
      { topic: 'x', messages: [{ key: '1', value: '' }, { key: '2', value: '' }] },
      { topic: 'y', messages: [{ key: '3', value: '' }, { key: '4', value: '' }, { key: '5', value: '' }] },
    ];
    expect(halves(request).map(describeSend)).toEqual(['x:1,2 y:3', 'y:4,5']);
  });
});
