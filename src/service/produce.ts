/**
 * `rnnstream produce`: writes a fixture into Kafka, one message per line, keyed by the
 * pipeline's key (lines that are not valid events go unkeyed, so the service dead-letters them).
 */
import type { Producer } from 'kafkajs';
import { readJsonLines, type LineValue } from '../adapters/fixture-source.js';
import { sleep } from '../adapters/sleep.js';
import { eventOfLine, type PipelineDefinition } from '../pipeline/define.js';

export interface ProduceOptions {
  readonly topic: string;
  readonly pace: 'max' | 'realtime';
  readonly batchSize?: number;
  /**
   * Most bytes of values per produce request: the broker refuses a request above the topic's
   * max.message.bytes (1 MiB by default), and 2,000 audio chunks are 80 MB.
   */
  readonly batchBytes?: number;
}

/** A request well below Kafka's default max.message.bytes (1,048,588), headers and keys included. */
const DEFAULT_BATCH_BYTES = 900_000;


export async function produceFixture(producer: Producer, pipeline: PipelineDefinition, file: string, options: ProduceOptions): Promise<{ messages: number; seconds: number }> {
  const started = performance.now();
  const batchSize = options.batchSize ?? 2000;
  const batchBytes = options.batchBytes ?? DEFAULT_BATCH_BYTES;
  let batch: { key: string | null; value: LineValue }[] = [];
  let bytes = 0;
  let messages = 0;
  let firstTime: number | undefined;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    await producer.send({ topic: options.topic, messages: batch, acks: -1 });
    messages += batch.length;
    batch = [];
    bytes = 0;
  };
  for await (const { text, value } of readJsonLines(file)) {
    // A line that is not a valid event is produced as is, unkeyed, for the service to dead-letter.
    const event = eventOfLine(pipeline, text);
    const key = event === undefined ? null : pipeline.key(event);
    const time = event === undefined ? undefined : pipeline.eventTime?.(event);
    if (options.pace === 'realtime' && time !== undefined) {
      firstTime ??= time;
      const due = time - firstTime - (performance.now() - started);
      if (due > 1) {
        await flush();
        await sleep(due);
      }
    }
    // The line as read: its text, or its bytes where it is not UTF-8 (sent as they are, so the
    // service decodes what replay decodes).
    const size = typeof value === 'string' ? Buffer.byteLength(value) : value.length;
    if (bytes + size > batchBytes) await flush();
    batch.push({ key, value });
    bytes += size;
    if (batch.length >= batchSize) await flush();
  }
  await flush();
  return { messages, seconds: (performance.now() - started) / 1000 };
}
