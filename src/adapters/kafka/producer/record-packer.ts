/**
 * Kafka records packed into one byte buffer: what the sink builds and what crosses to the
 * producer thread. Every key and value of a topic's records lies in one buffer, with the end
 * offset of each: posting a few buffers to a worker is a memcpy each, where structured-cloning
 * thousands of small message objects cost about 2 µs a record on the sending thread. Predictions are written into it
 * as JSON bytes directly (serialize.ts's writePredictionJson), with no string or kafkajs Message
 * per record on the service's thread.
 */
import type { Message } from 'kafkajs';
import { ByteWriter } from '../../../pipeline/json-bytes.js';

/** One topic's records, packed. Headers, rare (dead letters only), travel as they are. */
export interface WireTopicMessages {
  readonly topic: string;
  readonly count: number;
  readonly bytes: Uint8Array;
  /** For record i: key in [ends[2i-1] or 0, ends[2i]), value in [ends[2i], ends[2i+1]). */
  readonly ends: Int32Array;
  /** Per record: KEY_NULL and VALUE_NULL bits. */
  readonly nulls: Uint8Array;
  /** Partition per record, -1 for the partitioner's choice. */
  readonly partitions: Int32Array;
  readonly headers?: (Record<string, string> | null)[];
}

const KEY_NULL = 1;
const VALUE_NULL = 2;

/**
 * Packs records one at a time: `key` (or `nullKey`), then the value written into `writer` (or
 * `nullValue`), then `end`. `finish` returns the packed topic and starts over with the same
 * memory. A packer is reused across requests; its writer is sized by the largest request seen.
 */
export class RecordPacker {
  readonly writer = new ByteWriter();
  private ends: number[] = [];
  private nulls: number[] = [];
  private partitions: number[] = [];
  private headers: (Record<string, string> | null)[] | undefined;
  private flags = 0;

  get count(): number {
    return this.nulls.length;
  }

  /** Starts a record with this key (UTF-8); the value is written into `writer` next. */
  key(key: string | Uint8Array | null | undefined): void {
    this.flags = 0;
    if (key == null) this.flags |= KEY_NULL;
    else if (typeof key === 'string') this.writer.utf8(key);
    else this.writer.bytes(key);
    this.ends.push(this.writer.length);
  }

  /** Ends the record whose value was just written into `writer` (or has none: `valueIsNull`). */
  end(options: { partition?: number | undefined; headers?: Message['headers']; valueIsNull?: boolean } = {}): void {
    if (options.valueIsNull) this.flags |= VALUE_NULL;
    this.ends.push(this.writer.length);
    this.nulls.push(this.flags);
    this.partitions.push(options.partition ?? -1);
    if (options.headers) {
      this.headers ??= new Array<Record<string, string> | null>(this.nulls.length - 1).fill(null);
      this.headers.push(Object.fromEntries(Object.entries(options.headers).map(([k, v]) => [k, String(v)])));
    } else this.headers?.push(null);
  }

  /** A kafkajs message, whole. */
  add(m: Message): void {
    this.key(m.key);
    if (m.value != null) {
      if (typeof m.value === 'string') this.writer.utf8(m.value);
      else this.writer.bytes(m.value);
    }
    this.end({ partition: m.partition, headers: m.headers, valueIsNull: m.value == null });
  }

  /** The records packed so far for `topic`; the packer is then empty. */
  finish(topic: string): WireTopicMessages {
    // A copy at its exact size (a view would post the writer's whole buffer); the writer's
    // memory is reused by the next request.
    const packed: WireTopicMessages = {
      topic,
      count: this.nulls.length,
      bytes: this.writer.copy(),
      ends: Int32Array.from(this.ends),
      nulls: Uint8Array.from(this.nulls),
      partitions: Int32Array.from(this.partitions),
      ...(this.headers ? { headers: this.headers } : {}),
    };
    this.writer.reset();
    this.ends = [];
    this.nulls = [];
    this.partitions = [];
    this.headers = undefined;
    return packed;
  }
}

const shared = new RecordPacker();

/** kafkajs messages, packed (for the producer thread). */
export function packMessages(topic: string, messages: readonly Message[]): WireTopicMessages {
  for (const m of messages) shared.add(m);
  return shared.finish(topic);
}

/** The other side of packing: kafkajs messages whose keys and values view the buffer. */
export function unpackMessages(t: WireTopicMessages): Message[] {
  const buf = Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  const out: Message[] = new Array(t.count);
  let start = 0;
  for (let i = 0; i < t.count; i++) {
    const keyEnd = t.ends[2 * i]!;
    const valueEnd = t.ends[2 * i + 1]!;
    const m: Message = {
      key: t.nulls[i]! & KEY_NULL ? null : buf.subarray(start, keyEnd),
      value: t.nulls[i]! & VALUE_NULL ? null : buf.subarray(keyEnd, valueEnd),
    };
    if (t.partitions[i]! >= 0) m.partition = t.partitions[i]!;
    const h = t.headers?.[i];
    if (h) m.headers = h;
    out[i] = m;
    start = valueEnd;
  }
  return out;
}
