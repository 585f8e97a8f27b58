/**
 * patches/kafkajs+2.2.4.patch is applied (npm ci runs it) and groups exactly as kafkajs did: every
 * message under its partition, in the order given.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { checkKafkajsFixes, missingKafkajsFixes } from '../src/adapters/kafka/cluster/kafkajs-fixes.js';

const require = createRequire(import.meta.url);
type Group = (args: { topic: string; partitionMetadata: unknown[]; messages: { key: string }[]; partitioner: (a: { message: { key: string } }) => number }) => Record<string, { key: string }[]>;
const group = require('kafkajs/src/producer/groupMessagesPerPartition.js') as Group;

describe('kafkajs patch: a produce request is retried only once every broker has answered', () => {
  it('is applied: requests settle before a retry, one already answered is not sent again, a transaction adds its partitions at once', async () => {
    const { readFileSync } = await import('node:fs');
    const source = readFileSync(require.resolve('kafkajs/src/producer/sendMessages.js'), 'utf8');
    expect(source).toContain('await Promise.allSettled(requests)');
    expect(source).toContain('if (responsePerBroker.get(broker)) return');
    expect(source).toContain('await eosManager.addPartitionsToTransaction(allTopicData)');
  });
});

describe('kafkajs patch: linear groupMessagesPerPartition', () => {
  it('is applied', () => {
    expect(group.toString()).toContain('rnnstream patch');
  });

  it('groups every message under its partition, in order', () => {
    const messages = Array.from({ length: 20_000 }, (_, i) => ({ key: `k${(i * 7919) % 1000}` }));
    const partitioner = ({ message }: { message: { key: string } }): number => Number(message.key.slice(1)) % 4;
    const grouped = group({ topic: 't', partitionMetadata: [{}, {}, {}, {}], messages, partitioner });
    expect(Object.keys(grouped)).toEqual(['0', '1', '2', '3']);
    for (const p of [0, 1, 2, 3]) expect(grouped[p]).toEqual(messages.filter((m) => partitioner({ message: m }) === p));
    expect(group({ topic: 't', partitionMetadata: [], messages, partitioner })).toEqual({});
  });
});

describe('the start-up check of the fixes in the kafkajs that is loaded', () => {
  it('finds none missing in this install; in an unpatched one, finds both, and exactly once is refused with what to do', () => {
    expect(missingKafkajsFixes()).toEqual([]);
    // kafkajs 2.2.4 as published: none of the fixed lines.
    const missing = missingKafkajsFixes(() => 'module.exports = () => Promise.all(requests)');
    expect(missing.map((m) => [m.file, m.neededForExactlyOnce])).toEqual([
      ['kafkajs/src/producer/sendMessages.js', true],
      ['kafkajs/src/producer/groupMessagesPerPartition.js', false],
    ]);
    expect(missing[0]!.path).toMatch(/node_modules\/kafkajs\/src\/producer\/sendMessages\.js$/);
    const warned: string[] = [];
    const logger = { debug: () => {}, info: () => {}, error: () => {}, warn: (o: object, msg: string) => warned.push(msg) };
    expect(() => checkKafkajsFixes({ guarantee: 'exactly-once', logger, missing })).toThrow(
      /^exactly-once needs rnnstream's fix to kafkajs 2\.2\.4 in .*sendMessages\.js, which this install lacks .*npx patch-package --patch-dir node_modules\/rnnstream\/patches\), or run at-least-once$/,
    );
    checkKafkajsFixes({ guarantee: 'at-least-once', logger, missing });
    expect(warned).toHaveLength(2);
  });
});
