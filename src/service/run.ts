/**
 * `rnnstream run`: the pipeline as a Kafka consumer-group service.
 *
 *   kafkajs consumer (eachBatch) -> predict() chain (the same operators as replay)
 *     -> KafkaSink (packs outputs into produce requests as they arrive; changelog, then commit)
 *     -> the producer (on its thread): requests in order, merged while one is in flight, retried
 *
 * Backpressure: every consumed event holds a slot of a bounded queue until the broker has
 * acknowledged its output; when the queue is full the consumer pauses its partitions and waits.
 * State: restored per assigned partition from the changelog before that partition's events are
 * processed. Shutdown on SIGTERM/SIGINT: stop fetching, finish the in-flight events, produce,
 * commit, leave the group.
 */
import type { Server } from 'node:http';
import type { Kafka } from 'kafkajs';
import { lastValueFrom, Subject, type Observable } from 'rxjs';
import { resolveBackend } from '../backends/registry.js';
import type { StepBackend } from '../backends/types.js';
import { loadModelFile } from '../core/model.js';
import { ChangelogRestorer } from '../adapters/kafka/changelog.js';
import { createKafka, PRODUCER_CONFIG, type KafkaConnection } from '../adapters/kafka/client.js';
import { InProcessProducer, ProducerThread, type RecordProducer } from '../adapters/kafka/producer-thread.js';
import { packMessages } from '../adapters/kafka/record-packer.js';
import { positionAtLeast } from '../adapters/kafka/offsets.js';
import { KafkaSink, writeTo } from '../adapters/kafka/sink.js';
import { ensureTopics, type TopicLayout } from '../adapters/kafka/topics.js';
import { ClusterHealthMonitor } from '../adapters/kafka/cluster-health.js';
import type { Logger } from '../observability/logger.js';
import { BoundedQueue } from '../operators/bounded-queue.js';
import type { RawRecord, SourcePosition } from '../operators/records.js';
import { predict } from '../pipeline/predict.js';
import { prequentialFor } from '../pipeline/prequential.js';
import { loadPipeline } from '../pipeline/registry.js';
import { KeyStateStore } from '../state/key-state-store.js';
import type { ResolvedConfig } from './config.js';
import { startHttpServer, type Health } from './http.js';
import { ServiceMetrics } from './metrics.js';
import { StallWatch } from './stall-watch.js';

/** Times every backend step into the metrics. */
function instrument(backend: StepBackend, metrics: ServiceMetrics): StepBackend {
  return {
    name: backend.name,
    detail: backend.detail,
    dispose: () => backend.dispose(),
    step: (batch, input, state, next, output) => {
      metrics.batchSize.observe(batch);
      const end = metrics.stepSeconds.startTimer();
      const r = backend.step(batch, input, state, next, output);
      if (r) return r.finally(end);
      end();
      return undefined;
    },
  };
}

/** How a stop went. */
export interface StopResult {
  /** Every event taken in was produced and committed before the deadline. */
  readonly flushed: boolean;
  /** Events in flight when the deadline came (not committed: they are redelivered). */
  readonly unflushedEvents: number;
}

export interface RunningService {
  /** Resolves when the service has stopped after a stop(); rejects after a fatal error. */
  readonly done: Promise<StopResult>;
  /**
   * Graceful shutdown, within shutdownTimeoutMs: finish in-flight events, produce, commit, leave
   * the group. What is not flushed by then stays uncommitted.
   */
  stop(): Promise<StopResult>;
  readonly httpAddress: string | undefined;
  readonly metrics: ServiceMetrics;
}

/** `work`'s value, or 'timeout' if it takes longer than `ms`. */
async function within<T>(ms: number, work: Promise<T>): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A cluster health check unanswered for this long reads "brokers unreachable". */
const HEALTH_CHECK_TIMEOUT_MS = 5000;

/**
 * Room left in a record batch below the topics' max.message.bytes: the batch header (61 bytes),
 * a dead letter's key and reason header, and slack for the size estimate.
 */
const RECORD_BATCH_MARGIN_BYTES = 4096;

/**
 * The producer of outputs, dead letters and changelog records. Either way it is built with
 * PRODUCER_CONFIG (partitioner, one request in flight) and sends through an OrderedSender (in
 * order, merged up to produceBatchSize records and produceBatchBytes, below the topics'
 * max.message.bytes, retried while the error is retriable).
 */
function createProducer(config: ResolvedConfig['config'], connection: KafkaConnection, kafka: Kafka, maxMessageBytes: number, logger: Logger, onRetry: () => void): RecordProducer {
  const hooks = { onRetry };
  const maxBytes = Math.min(config.produceBatchBytes, maxMessageBytes - RECORD_BATCH_MARGIN_BYTES);
  if (maxBytes < config.produceBatchBytes) logger.info({ produceBatchBytes: maxBytes, maxMessageBytes }, "produce requests capped below the topics' max.message.bytes");
  const limits = { maxRecords: config.produceBatchSize, maxBytes };
  return config.producerThread ? new ProducerThread({ connection, limits }, logger, hooks) : new InProcessProducer(kafka.producer(PRODUCER_CONFIG), limits, logger, hooks);
}

export async function startService(resolved: ResolvedConfig, logger: Logger): Promise<RunningService> {
  const { config } = resolved;
  const metrics = new ServiceMetrics();
  const pipeline = await loadPipeline(config.pipeline);
  const model = loadModelFile(config.model ?? pipeline.modelFile);
  const resolution = await resolveBackend(config.backend, model, { logger });
  metrics.backendFallbacks.inc(resolution.skipped.length);
  const backend = instrument(resolution.backend, metrics);
  const store = new KeyStateStore<unknown>(model, { capacity: config.keyCapacity, idleTtlMs: config.idleTtlMs });
  const prequential = prequentialFor(pipeline, model, config.keyCapacity);
  const queue = new BoundedQueue(config.queueCapacity);

  const connection: KafkaConnection = { brokers: config.brokers, clientId: config.clientId, ssl: config.ssl, sasl: config.sasl, saslPassword: resolved.saslPassword };
  const kafka = createKafka(connection, logger);
  const admin = kafka.admin();
  // A short fetch wait: after a pause for backpressure the next fetch must not idle for seconds.
  const consumer = kafka.consumer({ groupId: config.group, allowAutoTopicCreation: true, maxWaitTimeInMs: 100, sessionTimeout: config.sessionTimeoutMs, heartbeatInterval: Math.max(500, Math.floor(config.sessionTimeoutMs / 10)) });
  const stalls = new StallWatch();
  let producer: RecordProducer | undefined;
  let layout: TopicLayout;
  try {
    // allSettled, then the first failure: every client must have finished trying before the
    // clean-up below disconnects them, or a late connect would hold the process open.
    const connected = await Promise.allSettled([admin.connect(), consumer.connect()]);
    const failed = connected.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    // The topics exist, and the changelog is compacted and partitioned like the input, before
    // anything is consumed: a changelog with deletion would lose state, one with other partitions
    // would restore a key's state on the wrong member.
    layout = await ensureTopics(admin, config, logger);
    producer = createProducer(config, connection, kafka, layout.maxMessageBytes, logger, () => {
      metrics.produceRetries.inc();
      stalls.sendFailed();
    });
    await producer.connect();
    // Learn the output topics' leaders now (the broker creates them here if it auto-creates
    // topics): the first predictions then do not wait for it, and a topic this service cannot
    // write fails the start instead of the first request.
    await producer.sendPacked([config.outputTopic, config.dlqTopic, config.changelogTopic].map((topic) => packMessages(topic, [])), { retry: false });
  } catch (err) {
    // A failed start (wrong password, no broker, a refused changelog) leaves nothing running:
    // the caller prints one line and the process exits.
    await Promise.allSettled([consumer.disconnect(), producer?.disconnect(), admin.disconnect()]);
    backend.dispose();
    throw err;
  }

  const restorer = new ChangelogRestorer(kafka, admin, config.changelogTopic, config.group, store, logger, (r) => {
    metrics.restoreSeconds.set(r.seconds);
    metrics.restoredKeys.inc(r.keys);
  });
  // Join the changelog reader's own group now, alongside the service's group join.
  void restorer.start().catch((err: Error) => logger.error({ err: err.message }, 'changelog reader failed to start'));
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    const partitions = e.payload.memberAssignment[config.inputTopic] ?? [];
    logger.info({ generation: e.payload.groupId, partitions }, 'partitions assigned');
    restorer.assign(partitions);
    sink.assign(partitions);
  });

  let fatal: Error | undefined;
  let stopping = false;
  const sink = new KafkaSink(
    producer,
    consumer,
    config,
    store,
    logger,
    {
      onCommitted: () => stalls.sendSucceeded(),
      onWritten: (counts) => {
        stalls.sendSucceeded();
        metrics.predictionsOut.inc(counts.predictions);
        metrics.sequenceGaps.inc(counts.sequenceGaps);
        metrics.deadLetters.inc(counts.deadLetters);
        metrics.skipped.inc(counts.skipped);
        metrics.keysResident.set(store.size);
        const s = store.stats;
        metrics.evictions.set(s.evictedByCapacity + s.evictedByTtl);
        if (prequential) {
          metrics.prequentialAccuracy.set(prequential.accuracy);
          metrics.prequentialScored.set(prequential.scored);
        }
        // Acknowledged outputs end an event's time in flight; its commit may follow later.
        queue.release(counts.predictions + counts.deadLetters + counts.skipped);
      },
    },
    {
      changelogIntervalMs: config.changelogIntervalMs,
      produceBatchSize: config.produceBatchSize,
      deadLetterLimits: { maxRawBytes: config.deadLetterRawBytes, maxBytes: layout.maxMessageBytes - RECORD_BATCH_MARGIN_BYTES },
    },
  );

  // An event is already applied when its key's state reflects an offset at or after it.
  const alreadyApplied = (key: string, source: SourcePosition): boolean =>
    positionAtLeast(store.get(key)?.position as SourcePosition | undefined, source) === true;

  const input = new Subject<RawRecord>();
  const outputs$: Observable<unknown> = input.pipe(
    predict(pipeline, model, {
      backend,
      store,
      prequential,
      // Each prediction carries its key's state right after it: the changelog must hold the
      // state that matches the acknowledged outputs, and with an asynchronous backend the live
      // state can already be ahead of the outputs handed to the sink.
      captureState: true,
      alreadyApplied,
      maxBatchSize: config.maxBatchSize,
      maxWaitMs: config.maxWaitMs,
      maxBytes: config.maxMessageBytes,
      maxKeyBytes: config.maxKeyBytes,
    }),
    // Packed on arrival; one produce request in flight at a time, the next one filling meanwhile.
    writeTo(sink),
  );
  const pipelineDone = lastValueFrom(outputs$, { defaultValue: undefined }).catch((err: Error) => {
    fatal = err;
    logger.error({ err: err.message, stack: err.stack }, 'pipeline failed; stopping without committing what is in flight');
    throw err;
  });

  const allPartitions = (): { topic: string; partitions?: number[] }[] => [{ topic: config.inputTopic }];
  await consumer.subscribe({ topic: config.inputTopic, fromBeginning: config.fromBeginning });
  const run = (): Promise<void> => consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    partitionsConsumedConcurrently: 1,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      // The partition's state must be restored before its events; keep heartbeating meanwhile
      // so the group does not take the partition away for the wait.
      const restoring = restorer.ensure(batch.partition);
      let restored = false;
      void restoring.then(() => (restored = true), () => (restored = true));
      while (!restored) {
        await Promise.race([restoring, new Promise((r) => setTimeout(r, 1000))]);
        await heartbeat();
      }
      await restoring;
      // Counted and resolved per batch, not per event: prom-client's inc and kafkajs's
      // resolveOffset are not free at 50k events/s. Resolved in `finally`, so a batch left early
      // (a heartbeat that throws in a rebalance) still marks what was handed on.
      let admitted = 0;
      let handedOn: string | undefined;
      // Whether to stop handing events on can only change across an await (the loop below is
      // synchronous between backpressure waits), so it is checked there, not per message:
      // kafkajs's isStale builds a string key per call.
      const mustStop = (): boolean => !isRunning() || isStale() || stopping || fatal !== undefined;
      try {
        if (!mustStop()) for (const m of batch.messages) {
          if (!queue.hasRoom()) {
            metrics.eventsIn.inc(admitted);
            admitted = 0;
            // Backpressure: stop fetching until the outputs in flight have been acknowledged.
            // Resume in `finally`: a heartbeat that throws (the group is rebalancing) must not
            // leave the partitions paused for good.
            consumer.pause(allPartitions());
            try {
              while (!queue.hasRoom() && !stopping && !fatal) {
                await Promise.race([queue.whenReady(), new Promise((r) => setTimeout(r, 1000))]);
                await heartbeat();
              }
            } finally {
              consumer.resume(allPartitions());
            }
            if (mustStop()) break;
          }
          queue.admit(1);
          admitted++;
          const source: SourcePosition = { kind: 'kafka', topic: batch.topic, partition: batch.partition, offset: m.offset };
          const value = m.value ?? new Uint8Array(0);
          input.next(m.key ? { value, source, messageKey: m.key.toString() } : { value, source });
          handedOn = m.offset;
        }
      } finally {
        if (handedOn !== undefined) resolveOffset(handedOn);
        metrics.eventsIn.inc(admitted);
        admitted = 0;
      }
      const last = batch.messages.at(-1);
      if (last) metrics.consumerLag.set({ topic: batch.topic, partition: String(batch.partition) }, Math.max(0, Number(BigInt(batch.highWatermark) - BigInt(last.offset) - 1n)));
      await heartbeat();
    },
  });

  // kafkajs restarts its consumer after a retriable error but stops for good after any other
  // (a protocol error from a broker, say), leaving a service that looks up and consumes nothing.
  // Rejoin instead, with backoff, and say so: the partitions resume from their last commit and
  // the restored state skips what was already applied. /healthz is not ok meanwhile.
  let consumerDown: Error | undefined;
  let restartDelayMs = 1000;
  consumer.on(consumer.events.CRASH, (e) => {
    if (e.payload.restart || stopping || fatal) return;
    consumerDown = e.payload.error;
    metrics.consumerRestarts.inc();
    logger.error({ err: e.payload.error.message, retryInMs: restartDelayMs }, 'consumer stopped on an error kafkajs does not retry; rejoining');
    const delay = restartDelayMs;
    restartDelayMs = Math.min(restartDelayMs * 2, 30_000);
    setTimeout(() => {
      if (stopping || fatal) return;
      run().then(
        () => {
          consumerDown = undefined;
          restartDelayMs = 1000;
        },
        (err: Error) => logger.error({ err: err.message }, 'consumer rejoin failed'),
      );
    }, delay);
  });
  await run();

  const clusterHealth = new ClusterHealthMonitor(admin, [config.inputTopic, config.outputTopic, config.dlqTopic, config.changelogTopic], config.healthCheckIntervalMs, HEALTH_CHECK_TIMEOUT_MS, (now) => {
    if (now.problems.length) logger.warn({ problems: now.problems }, 'cluster degraded');
    else logger.info({}, 'cluster healthy again');
  });
  await clusterHealth.start();
  // Stalls kafkajs retries through in silence: a send failing, the consumer not fetching.
  consumer.on(consumer.events.FETCH, () => stalls.fetched());
  const health = (): Health => {
    const unhealthy = [
      ...(fatal ? [`pipeline failed: ${fatal.message}`] : []),
      ...(consumerDown ? [`consumer down, rejoining: ${consumerDown.message}`] : []),
      ...(stopping ? ['shutting down'] : []),
    ];
    const stalled = stopping ? [] : stalls.problems(config.stallTimeoutMs);
    const cluster = clusterHealth.health;
    const degraded = [...stalled, ...cluster.problems];
    const status = unhealthy.length ? 'unhealthy' : degraded.length ? 'degraded' : 'ok';
    // Not ready while it cannot do its job; degraded by an under-replicated partition, it can.
    const ready = !unhealthy.length && !stalled.length && cluster.reachable;
    return { status, ready, reasons: [...unhealthy, ...degraded], detail: { pipeline: pipeline.name, backend: backend.name, keys: store.size, inFlight: queue.size } };
  };
  metrics.reportHealthFrom(() => health().status);
  // Port 0 picks a free port (tests); the address is logged and returned.
  const server: Server = await startHttpServer(config.http.host, config.http.port, metrics.registry, health);
  const address = server.address();
  const httpAddress = address && typeof address === 'object' ? `http://${address.address}:${address.port}` : undefined;
  logger.info({ pipeline: pipeline.name, group: config.group, input: config.inputTopic, backend: backend.name, detail: backend.detail, http: httpAddress }, 'service started');

  let stopped: Promise<StopResult> | undefined;
  let stopCalled: (() => void) | undefined;
  const stopRequested = new Promise<void>((resolve) => (stopCalled = resolve));
  const stop = (): Promise<StopResult> =>
    (stopped ??= (async () => {
      stopCalled?.();
      stopping = true;
      const deadline = performance.now() + config.shutdownTimeoutMs;
      const left = (): number => Math.max(0, deadline - performance.now());
      logger.info({ inFlight: queue.size, timeoutMs: config.shutdownTimeoutMs }, 'stopping: finishing in-flight events');
      // Flushing gets most of the time; leaving the group and disconnecting the rest. In an
      // outage neither ends by itself: kafkajs retries for as long as it is let.
      const drained = async (): Promise<boolean> => {
        await consumer.stop();
        input.complete();
        await pipelineDone;
        await sink.flush();
        return true;
      };
      // A failure was logged where it happened; what was in flight stays uncommitted.
      const flushed = (await within(left() * 0.8, drained().catch(() => false))) === true;
      const unflushedEvents = flushed ? 0 : queue.size;
      if (!flushed) {
        sink.abort();
        logger.warn({ unflushedEvents, timeoutMs: config.shutdownTimeoutMs }, 'stopping without flushing everything: what is not committed is redelivered');
      }
      clusterHealth.stop();
      await within(left(), Promise.allSettled([consumer.disconnect(), restorer.stop(), producer.disconnect(), admin.disconnect()]));
      // A backend still stepping (a flush cut short) is left to the process's exit.
      if (flushed) backend.dispose();
      server.closeAllConnections();
      await within(left(), new Promise<void>((r) => server.close(() => r())));
      logger.info({ flushed, unflushedEvents }, 'stopped');
      return { flushed, unflushedEvents };
    })());

  // Settles with the stop, whether the pipeline ended (a fatal error, the input completed) or
  // stop() was called: a stop cut short by its deadline leaves the pipeline unfinished.
  const done = Promise.race([
    pipelineDone.then(
      () => stop(),
      async (err: Error) => {
        sink.abort();
        await stop();
        throw err;
      },
    ),
    stopRequested.then(() => stopped!),
  ]);
  return { done, stop, httpAddress, metrics };
}
