/**
 * The worker side of ProducerThread (producer-thread.ts): one kafkajs producer, one request at a
 * time, replies in order. Runs only as a worker thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Producer } from 'kafkajs';
import type { Logger } from '../../observability/logger.js';
import { createKafka, PRODUCER_CONFIG } from './client.js';
import type { ProducerThreadOptions, WireReply, WireRequest } from './producer-thread.js';
import { unpackMessages } from './record-packer.js';

if (!parentPort) throw new Error('producer-worker.js runs only as a worker thread');
const port = parentPort;
const options = workerData as ProducerThreadOptions;

const forward =
  (log: 'debug' | 'info' | 'warn' | 'error') =>
  (fields: object, message?: string): void =>
    port.postMessage({ log, fields, message } satisfies WireReply);
const logger: Logger = { debug: forward('debug'), info: forward('info'), warn: forward('warn'), error: forward('error') };

const kafka = createKafka(options.connection, logger);
const producer: Producer = kafka.producer(PRODUCER_CONFIG);

async function handle(request: WireRequest): Promise<void> {
  if (request.op !== 'send') return request.op === 'connect' ? producer.connect() : producer.disconnect();
  await producer.sendBatch({ acks: request.acks, topicMessages: request.topicMessages.map((t) => ({ topic: t.topic, messages: unpackMessages(t) })) });
}

// One request at a time, in arrival order: the order the main thread asked for is the order
// the broker sees.
let queue: Promise<void> = Promise.resolve();
port.on('message', (request: WireRequest) => {
  queue = queue.then(async () => {
    try {
      await handle(request);
      port.postMessage({ id: request.id, ok: true } satisfies WireReply);
    } catch (err) {
      const e = err as Error & { retriable?: boolean };
      port.postMessage({ id: request.id, ok: false, error: { name: e.name, message: e.message, retriable: e.retriable ?? false } } satisfies WireReply);
    }
  });
});
