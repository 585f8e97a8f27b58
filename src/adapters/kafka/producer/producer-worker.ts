/**
 * The worker side of ProducerThread (producer-thread.ts): one kafkajs producer behind an
 * OrderedSender (requests in arrival order, merged while one is in flight, each retried until
 * acknowledged). Replies per request id. Runs only as a worker thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Producer } from 'kafkajs';
import type { Logger } from '../../../observability/logger.js';
import { createKafka, PRODUCER_CONFIG } from '../cluster/client.js';
import { OrderedSender } from './ordered-sender.js';
import { refusedRecords, type ProducerThreadOptions, type WireReply, type WireRequest } from './producer-thread.js';
import { KafkajsTransactions, TransactionError } from './transactions.js';

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
const sender = new OrderedSender(
  (topicMessages) => producer.sendBatch({ acks: -1, topicMessages }),
  (retry) => port.postMessage({ retry } satisfies WireReply),
  options.limits,
  refusedRecords(options.refusals, (refused) => port.postMessage({ refused } satisfies WireReply)),
);

// Exactly once: the partitions' transactional producers live here too, so that kafkajs encodes
// their records on this thread, as it does the at-least-once producer's.
const transactions = options.transactions ? new KafkajsTransactions(kafka, options.transactions, logger, (refused) => port.postMessage({ refused } satisfies WireReply)) : undefined;
const noTransactions = (): Promise<never> => Promise.reject(new Error('this producer thread was started without transactions'));

const reply = (id: number, work: Promise<unknown>): void => {
  work.then(
    () => port.postMessage({ id, ok: true } satisfies WireReply),
    (err: Error & { retriable?: boolean }) => {
      const transaction = err instanceof TransactionError ? { partition: err.partition, fenced: err.fenced, producerGone: err.producerGone } : undefined;
      port.postMessage({ id, ok: false, error: { name: err.name, message: err.message, retriable: err.retriable ?? false, ...(transaction ? { transaction } : {}) } } satisfies WireReply);
    },
  );
};

port.on('message', (request: WireRequest) => {
  switch (request.op) {
    case 'send':
      return reply(request.id, sender.enqueue(request.topicMessages, { retry: request.retry }));
    case 'connect':
      return reply(request.id, producer.connect());
    case 'disconnect':
      return reply(
        request.id,
        sender.idle().then(() => Promise.all([producer.disconnect(), transactions?.disconnect()])),
      );
    case 'abort':
      return sender.abort();
    case 'txn-init':
      return reply(request.id, transactions?.init(request.partition) ?? noTransactions());
    case 'txn-send':
      return reply(request.id, transactions?.send(request.partition, request.records) ?? noTransactions());
    case 'txn-commit':
      return reply(request.id, transactions?.commit(request.partition, request.content) ?? noTransactions());
    case 'txn-close':
      return reply(request.id, transactions?.close(request.partition) ?? noTransactions());
  }
});
