/**
 * The producer thread's wire format: kafkajs messages packed into one transferable buffer and
 * unpacked on the worker side byte for byte (null keys and values, strings with multi-byte
 * characters, binary values, explicit partitions, headers).
 */
import { describe, expect, it } from 'vitest';
import type { Message } from 'kafkajs';
import { packMessages, unpackMessages } from '../src/adapters/kafka/producer/record-packer.js';

const bytesOf = (v: Message['value'] | Message['key']): string | null => (v == null ? null : Buffer.from(v as string | Buffer).toString('hex'));

describe('producer thread wire format', () => {
  it('round-trips keys, values, partitions and headers exactly', () => {
    const messages: Message[] = [
      { key: 'b-0001', value: '{"key":"b-0001","p":0.5}' },
      { key: null, value: Buffer.from([0, 255, 1, 2, 3]), headers: { 'rnnstream-reason': 'not JSON: ü' } },
      { key: 'ключ-✓', value: 'значение ✓ 😀', partition: 3 },
      { key: 'empty', value: '' },
      { key: 'tombstone', value: null, partition: 0 },
    ];
    const wire = packMessages('t', messages);
    expect(wire.count).toBe(5);
    // One buffer for every key and value, and it is its own ArrayBuffer (transferable whole).
    expect(wire.bytes.byteOffset).toBe(0);
    const back = unpackMessages(structuredClone(wire));
    expect(back.map((m) => bytesOf(m.key))).toEqual(messages.map((m) => bytesOf(m.key)));
    expect(back.map((m) => bytesOf(m.value))).toEqual(messages.map((m) => bytesOf(m.value)));
    expect(back.map((m) => m.partition)).toEqual([undefined, undefined, 3, undefined, 0]);
    expect(back[1]!.headers).toEqual({ 'rnnstream-reason': 'not JSON: ü' });
    expect(back[0]!.headers).toBeUndefined();
    expect(Buffer.from(back[2]!.value as Buffer).toString('utf8')).toBe('значение ✓ 😀');
  });

  it('packs an empty list', () => {
    const wire = packMessages('t', []);
    expect(unpackMessages(wire)).toEqual([]);
  });
});
