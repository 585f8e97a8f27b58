/**
 * The fuzz suite, service side (the replay side is fuzz.test.ts): the same 10,000 seeded bad
 * records of every kind among good ones, produced to a real broker and consumed by
 * `rnnstream run`. Every input record ends as exactly one prediction or exactly one dead letter
 * (by its source offset), and the right one; nothing else comes out.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ballHarness, type BallHarness } from './support/harness.js';
import { BAD_KINDS, FUZZ_MAX_MESSAGE_BYTES, fuzzRecords } from './support/fuzz.js';
import { exited, freshTopics, httpAddressOf, produce, readTopic, spawnService, topicSize, waitFor } from './support/kafka.js';

const SEED = Number(process.env.RNNSTREAM_FUZZ_SEED ?? 20261202);
const BAD = 10_000;

let h: BallHarness;
beforeAll(async () => {
  h = await ballHarness(2);
}, 60_000);

describe('fuzz: the service on a real broker', () => {
  it(`${BAD} bad records of ${BAD_KINDS.length} kinds (seed ${SEED}): every record is exactly one prediction or one dead letter, the right one`, async () => {
    const records = fuzzRecords(SEED, BAD);
    // What each record must become, by its bytes (equal bytes always expect the same).
    const expected = new Map<string, string>();
    for (const r of records) {
      const id = `${r.key}\u0000${r.value.toString('base64')}`;
      if (expected.has(id) && expected.get(id) !== r.expect) throw new Error(`fuzz generator: the same record expects two outcomes (${r.kind})`);
      expected.set(id, r.expect);
    }
    const t = freshTopics('fuzz');
    await produce(h.brokers, t.inputTopic, records.map((r) => ({ key: r.key, value: r.value })));
    const input = await readTopic(h.brokers, t.inputTopic, records.length);
    const service = spawnService(['--config', h.config(t, { maxMessageBytes: FUZZ_MAX_MESSAGE_BYTES })]);
    try {
      await httpAddressOf(service);
      const want = { predictions: records.filter((r) => r.expect === 'prediction').length, deadLetters: records.filter((r) => r.expect === 'dead-letter').length };
      await waitFor('every output', async () => (await topicSize(h.brokers, t.outputTopic)) + (await topicSize(h.brokers, t.dlqTopic)) >= records.length, 120_000);
      const outcome = new Map<string, string[]>();
      for (const [topic, kind, count] of [[t.outputTopic, 'prediction', await topicSize(h.brokers, t.outputTopic)], [t.dlqTopic, 'dead-letter', await topicSize(h.brokers, t.dlqTopic)]] as const) {
        for (const m of await readTopic(h.brokers, topic, count)) {
          const s = (JSON.parse(m.value) as { source: { partition: number; offset: string } }).source;
          const at = `${s.partition}/${s.offset}`;
          outcome.set(at, [...(outcome.get(at) ?? []), kind]);
        }
      }
      const wrong: string[] = [];
      for (const r of input) {
        const got = outcome.get(`${r.partition}/${r.offset}`) ?? [];
        const want1 = expected.get(`${r.key}\u0000${r.bytes.toString('base64')}`);
        if (got.length !== 1 || got[0] !== want1) wrong.push(`${r.partition}/${r.offset}: ${JSON.stringify(got)}, expected ${want1}`);
      }
      expect(wrong.slice(0, 10)).toEqual([]);
      expect(outcome.size).toBe(records.length);
      process.stderr.write(`fuzz service: ${records.length} records, ${want.predictions} predictions, ${want.deadLetters} dead letters, seed ${SEED}\n`);
    } finally {
      service.kill('SIGTERM');
      await exited(service);
    }
    expect(service.exitCode, service.output().slice(-2000)).toBe(0);
  }, 240_000);
});
