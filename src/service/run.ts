/**
 * `rnnstream run`: the pipeline as a Kafka consumer-group service. This file only wires: the
 * runner (src/runner/run-pipeline.ts) with a KafkaSource, a Kafka Sink (at-least-once, or
 * exactly-once through transactions), the changelog restorer, metrics, health and shutdown.
 * docs/architecture.md tells the whole path.
 *
 *   KafkaSource ─▶ predict() ─▶ KafkaSink (outputs, then changelog, then offsets)
 *                            └▶ TransactionalSink (per partition and interval, one transaction)
 */
import type { Server } from 'node:http';
import type { Admin, Consumer, Kafka } from 'kafkajs';
import { resolveBackend } from '../backends/registry.js';
import type { KeptRows, MicroBatch, SlotMicroBatch, StepBackend } from '../backends/types.js';
import { RnnStreamError, UsageError } from '../core/errors.js';
import { loadModelFile } from '../adapters/model-file.js';
import { ChangelogRestorer, type RestoreReport } from '../adapters/kafka/state/changelog.js';
import { standbyPartitionsIn } from '../adapters/kafka/state/standby.js';
import { advertisingAssigner, GroupWatch } from '../adapters/kafka/consumer/group-watch.js';
import { checkKafkajsFixes } from '../adapters/kafka/cluster/kafkajs-fixes.js';
import { createKafka, PRODUCER_CONFIG, type KafkaConnection } from '../adapters/kafka/cluster/client.js';
import { ClusterHealthMonitor } from '../adapters/kafka/cluster/cluster-health.js';
import { ConsumerLagMonitor } from '../adapters/kafka/consumer/consumer-lag.js';
import { KafkaSource } from '../adapters/kafka/consumer/kafka-source.js';
import { InProcessProducer, ProducerThread, refusalReporter, type ProducerHooks, type RecordProducer } from '../adapters/kafka/producer/producer-thread.js';
import { packMessages } from '../adapters/kafka/producer/record-packer.js';
import { KafkaSink } from '../adapters/kafka/sinks/kafka-sink.js';
import { atLeastOnce } from '../adapters/kafka/sinks/at-least-once.js';
import { exactlyOnce } from '../adapters/kafka/sinks/exactly-once.js';
import { createSerial, type Serial } from '../adapters/kafka/cluster/serial.js';
import { ensureTopics, type TopicLayout } from '../adapters/kafka/cluster/topics.js';
import { KafkajsTransactions } from '../adapters/kafka/producer/transactions.js';
import type { Logger } from '../observability/logger.js';
import { BoundedQueue } from '../operators/bounded-queue.js';
import { stateResidence } from '../state/keyed-stepper.js';
import type { EventRecord, SourcePosition } from '../operators/records.js';
import { stateStoreFor, warmHistoryFor, type PredictionRecord } from '../pipeline/predict.js';
import { ServingModel } from '../pipeline/serving-model.js';
import { SwappableBackend } from '../backends/swappable.js';
import { ModelSwapper } from './model-swap.js';
import { ShadowRunner } from './shadow-run.js';
import { startModelSources } from './model-sources.js';
import { prequentialFor, type PrequentialTracker } from '../pipeline/prequential.js';
import { loadPipeline } from '../pipeline/registry.js';
import { runPipeline } from '../runner/run-pipeline.js';
import type { WrittenCounts } from '../runner/types.js';
import type { RnnModel } from '../core/model.js';
import type { KeyStateStore } from '../state/key-state-store.js';
import type { ResolvedConfig } from './config.js';
import { fetchCommittedOffset } from '../adapters/kafka/consumer/committed-offsets.js';
import { serviceHealth } from './health.js';
import { startHttpServer, type Health, type HttpRoutes } from './http.js';
import { keyQuery, type KeyAnswer } from './key-query.js';
import { ServiceMetrics } from './metrics.js';
import { stopWithin, type StopParts, type StopResult } from './shutdown.js';
import { StallWatch } from './stall-watch.js';

export type { StopResult } from './shutdown.js';

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

type Config = ResolvedConfig['config'];

/** Times every backend step into the metrics. */
function instrument(backend: StepBackend, metrics: ServiceMetrics): StepBackend {
  const timed = (keys: number, call: () => void | Promise<void>): void | Promise<void> => {
    metrics.batchSize.observe(keys);
    const end = metrics.stepSeconds.startTimer();
    const r = call();
    if (r) return r.finally(end);
    end();
    return undefined;
  };
  const stepMicroBatch = backend.stepMicroBatch?.bind(backend);
  const table = backend.stateTable;
  return {
    name: backend.name,
    detail: backend.detail,
    device: backend.device,
    get transfers() {
      return backend.transfers;
    },
    dispose: () => backend.dispose(),
    step: (batch, input, state, next, output) => timed(batch, () => backend.step(batch, input, state, next, output)),
    ...(stepMicroBatch ? { stepMicroBatch: (mb: MicroBatch) => timed(mb.keys, () => stepMicroBatch(mb)) } : {}),
    ...(table
      ? {
          stateTable: {
            maxSlots: table.maxSlots,
            step: (mb: SlotMicroBatch) => timed(mb.keys, () => table.step(mb)),
            read: (slots: Int32Array, into: Float32Array) => table.read(slots, into),
            readKept: (parts: readonly KeptRows[], into: Float32Array) => table.readKept(parts, into),
          },
        }
      : {}),
  };
}

/** A cluster health check unanswered for this long reads "brokers unreachable". */
const HEALTH_CHECK_TIMEOUT_MS = 5000;

/**
 * Room left in a record batch below the topics' max.message.bytes: the batch header (61 bytes),
 * a dead letter's key and reason header, and slack for the size estimate.
 */
const RECORD_BATCH_MARGIN_BYTES = 4096;

/** The Kafka clients the service runs on, connected, with its topics made and checked. */
interface Clients {
  readonly kafka: Kafka;
  readonly admin: Admin;
  readonly consumer: Consumer;
  readonly layout: TopicLayout;
  /** The admin client's calls, one at a time (see serial.ts). */
  readonly adminCalls: Serial;
  /** The cluster health check's own admin client: its polls neither wait for nor disturb the others. */
  readonly healthAdmin: Admin;
  /** At least once: the producer of outputs, dead letters and changelog records. */
  readonly producer: RecordProducer | undefined;
}

/**
 * Connects, makes and checks the topics, and (at least once) starts the producer. A failed start
 * (a wrong password, no broker, a refused changelog) leaves nothing running.
 */
async function connect(config: Config, connection: KafkaConnection, parts: { logger: Logger; producerHooks: ProducerHooks; endpoint: string | undefined }): Promise<Clients> {
  const { logger, producerHooks } = parts;
  const kafka = createKafka(connection, logger);
  const admin = kafka.admin();
  const healthAdmin = kafka.admin();
  // A short fetch wait: after a pause for backpressure the next fetch must not idle for seconds.
  const consumer = kafka.consumer({
    groupId: config.group,
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 100,
    sessionTimeout: config.sessionTimeoutMs,
    heartbeatInterval: Math.max(500, Math.floor(config.sessionTimeoutMs / 10)),
    // The other members learn where this one answers /keys from its subscription.
    partitionAssigners: [advertisingAssigner(parts.endpoint)],
  });
  let producer: RecordProducer | undefined;
  try {
    // allSettled, then the first failure: every client must have finished trying before the
    // clean-up below disconnects them, or a late connect would hold the process open.
    const connected = await Promise.allSettled([admin.connect(), healthAdmin.connect(), consumer.connect()]);
    const failed = connected.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    // The changelog is compacted and partitioned like the input before anything is consumed.
    const layout = await ensureTopics(admin, config, logger);
    if (config.guarantee === 'at-least-once') {
      producer = createProducer(config, connection, kafka, layout, logger, producerHooks);
      await producer.connect();
      // Learn the output topics' leaders now, and fail the start on a topic this service cannot write.
      await producer.sendPacked([config.outputTopic, config.dlqTopic, config.changelogTopic].map((topic) => packMessages(topic, [])), { retry: false });
    }
    return { kafka, admin, consumer, layout, producer, adminCalls: createSerial(), healthAdmin };
  } catch (err) {
    await Promise.allSettled([consumer.disconnect(), producer?.disconnect(), admin.disconnect(), healthAdmin.disconnect()]);
    throw err;
  }
}

/** One merged produce request's size: the service's produceBatchSize and produceBatchBytes, below the topics' max.message.bytes. */
function requestLimits(config: Config, layout: TopicLayout): { maxRecords: number; maxBytes: number } {
  return { maxRecords: config.produceBatchSize, maxBytes: Math.min(config.produceBatchBytes, layout.maxMessageBytes - RECORD_BATCH_MARGIN_BYTES) };
}

/**
 * The at-least-once producer. Either way it is built with PRODUCER_CONFIG (partitioner, one
 * request in flight) and sends through an OrderedSender (in order, merged up to
 * produceBatchSize records and produceBatchBytes, below the topics' max.message.bytes).
 */
function createProducer(config: Config, connection: KafkaConnection, kafka: Kafka, layout: TopicLayout, logger: Logger, hooks: ProducerHooks): RecordProducer {
  // A record the broker refuses by itself (a topic's limit lowered since it was read) becomes a minimal dead letter.
  const refusals = { outputTopic: config.outputTopic, dlqTopic: config.dlqTopic, dlqPartitions: layout.dlqPartitions };
  const limits = requestLimits(config, layout);
  if (limits.maxBytes < config.produceBatchBytes) logger.info({ produceBatchBytes: limits.maxBytes, maxMessageBytes: layout.maxMessageBytes }, "produce requests capped below the topics' max.message.bytes");
  return config.producerThread ? new ProducerThread({ connection, limits, refusals }, logger, hooks) : new InProcessProducer(kafka.producer(PRODUCER_CONFIG), limits, logger, hooks, refusals);
}

/** What a sink's durable outputs do to the metrics and the queue. */
function onWritten(metrics: ServiceMetrics, store: KeyStateStore, prequential: PrequentialTracker | undefined, queue: BoundedQueue, stalls: StallWatch): (counts: WrittenCounts) => void {
  return (counts) => {
    stalls.sendSucceeded();
    metrics.predictionsOut.inc(counts.predictions);
    metrics.sequenceGaps.inc(counts.sequenceGaps);
    metrics.deadLetters.inc(counts.deadLetters);
    metrics.skipped.inc(counts.skipped);
    metrics.keysResident.set(store.size);
    metrics.stateBytes.set(store.columnBytes);
    if (counts.inputTimes && counts.inputTimes.length > 0) {
      const now = Date.now();
      for (const t of counts.inputTimes) metrics.endToEndLatency.observe(Math.max(0, now - t) / 1000);
    }
    const s = store.stats;
    metrics.evictions.set(s.evictedByCapacity + s.evictedByTtl);
    if (prequential) {
      metrics.prequentialAccuracy.set(prequential.accuracy);
      metrics.prequentialScored.set(prequential.scored);
    }
    // Durable outputs end an event's time in flight.
    queue.release(counts.predictions + counts.deadLetters + counts.skipped);
  };
}

/** The sink for the configured guarantee. */
interface SinkParts {
  readonly config: Config;
  readonly clients: Clients;
  readonly connection: KafkaConnection;
  readonly store: KeyStateStore;
  readonly logger: Logger;
  /** Outputs became durable (acknowledged, or committed in their transaction). */
  readonly written: (counts: WrittenCounts) => void;
  readonly metrics: ServiceMetrics;
  readonly queue: BoundedQueue;
  readonly stalls: StallWatch;
}

function createSink(parts: SinkParts): KafkaSink {
  const { config, clients, connection, store, logger, written, metrics, queue, stalls } = parts;
  const deadLetters = { limits: { maxRawBytes: config.deadLetterRawBytes, maxBytes: clients.layout.maxMessageBytes - RECORD_BATCH_MARGIN_BYTES }, partitions: clients.layout.dlqPartitions };
  if (config.guarantee === 'at-least-once') {
    return new KafkaSink(
      atLeastOnce({
        producer: clients.producer!,
        consumer: clients.consumer,
        topics: config,
        changelog: () => store.changelogBatch(),
        logger,
        hooks: { onCommitted: () => stalls.sendSucceeded(), onWritten: written },
        commitIntervalMs: config.commitIntervalMs,
        produceBatchSize: config.produceBatchSize,
        deadLetters,
      }),
    );
  }
  const settings = {
    applicationId: config.group,
    inputTopic: config.inputTopic,
    group: config.group,
    transactionTimeoutMs: config.transactionTimeoutMs,
    maxRequestBytes: Math.min(config.produceBatchBytes, clients.layout.maxMessageBytes - RECORD_BATCH_MARGIN_BYTES),
    // A record the broker refuses by itself becomes a minimal dead letter, in the same transaction.
    refusals: { outputTopic: config.outputTopic, dlqTopic: config.dlqTopic, dlqPartitions: clients.layout.dlqPartitions },
  };
  const onRefused = (): void => metrics.recordsRefused.inc();
  const committedOffset = (partition: number): Promise<number | undefined> =>
    fetchCommittedOffset(clients.admin, clients.adminCalls, { group: config.group, topic: config.inputTopic, partition }, { onRetry: (err) => logger.warn({ partition, err: err.message }, 'reading the committed offset: retrying') });
  // On the producer thread, as the at-least-once producer: kafkajs encodes records in JavaScript.
  const transactions = config.producerThread
    ? new ProducerThread({ connection, limits: { maxRecords: config.produceBatchSize, maxBytes: settings.maxRequestBytes }, transactions: settings }, logger, { onRefused })
    : new KafkajsTransactions(createKafka(connection, logger), settings, logger, refusalReporter(logger, { onRefused }));
  return new KafkaSink(
    exactlyOnce({
      transactions,
      topics: config,
      changelog: () => store.changelogBatch(),
      logger,
      hooks: {
        onWritten: (counts, _partition, seconds) => {
          metrics.transactions.inc();
          metrics.transactionSeconds.observe(seconds);
          written(counts);
        },
        onDropped: (events) => queue.release(events),
        onOpen: (open) => metrics.transactionsOpen.set(open),
        onRetry: () => {
          metrics.produceRetries.inc();
          stalls.sendFailed();
        },
      },
      commitIntervalMs: config.commitIntervalMs,
      deadLetters,
      committedOffset,
    }),
  );
}

/**
 * Hot swap: after a restore, each restored partition whose changelog's last model marker names
 * another model than the one served now (its earlier owner had not swapped it yet; no marker:
 * the start model served it) gets a marker at its next output, so that the changelog says from
 * which input offset this model serves it.
 */
function markTakeovers(parts: { sink: KafkaSink; serving: ServingModel; startModel: RnnModel; policy: string }): (r: RestoreReport) => void {
  const { sink, serving, startModel, policy } = parts;
  return (r) => {
    for (const p of r.partitions) {
      const was = r.markers[p]?.model ?? startModel.hash;
      if (was !== serving.model.hash) sink.markModel(p, { model: serving.model.hash, name: serving.model.name, policy, at: Date.now() });
    }
  };
}

/** The changelog reader; its start (joining a group of its own) is part of the service's start. */
function createRestorer(config: Config, clients: Clients, stores: { store: KeyStateStore; standbyStore: (() => KeyStateStore) | undefined }, logger: Logger, metrics: ServiceMetrics, onRestored: (r: RestoreReport) => void): ChangelogRestorer {
  const { store, standbyStore } = stores;
  const report = (r: RestoreReport): void => {
    metrics.restoreSeconds.set(r.seconds);
    metrics.restoredKeys.inc(r.keys);
    metrics.stateBytes.set(store.columnBytes);
    onRestored(r);
  };
  return new ChangelogRestorer({
    kafka: clients.kafka,
    admin: clients.admin,
    changelogTopic: config.changelogTopic,
    group: config.group,
    store,
    standbyStore,
    logger,
    onRestored: report,
    onProgress: (p) => {
      metrics.restoreRecords.inc(p.records);
      metrics.restoreBytes.inc(p.bytes);
      metrics.restoreRemainingRecords.set(p.remainingRecords);
      metrics.restoresInProgress.set(p.partitionsInProgress);
    },
    onRefused: () => metrics.restoreRefusedKeys.inc(),
    adminCalls: clients.adminCalls,
  });
}

/** The HTTP endpoint (/metrics, /healthz, /readyz), bound first: a port in use fails the start before anything connects. */
async function listen(config: Config, metrics: ServiceMetrics, answers: Pick<HttpRoutes, 'health' | 'keys'>): Promise<{ server: Server; httpAddress: string | undefined }> {
  const { host, port } = config.http;
  let server: Server;
  try {
    // Port 0 picks a free port (tests); the address is logged and returned.
    server = await startHttpServer({ host, port, registry: metrics.registry, ...answers });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EADDRINUSE' ? 'the address is in use (another process listens there; choose another port with --http-port or RNNSTREAM_HTTP_PORT)' : `${code ?? ''} ${(err as Error).message}`.trim();
    throw new RnnStreamError(`cannot serve /metrics, /healthz and /readyz on ${host}:${port}: ${why}`, { cause: err });
  }
  const address = server.address();
  return { server, httpAddress: address && typeof address === 'object' ? `http://${address.address}:${address.port}` : undefined };
}

/** The cluster health monitor: brokers, partitions, and the service's topics changing under it. */
function watchCluster(config: Config, clients: Clients, adminCalls: Serial, logger: Logger, onBroken: (reasons: readonly string[]) => void): ClusterHealthMonitor {
  return new ClusterHealthMonitor({
    admin: clients.healthAdmin,
    topics: { ...config, inputPartitions: clients.layout.inputPartitions },
    intervalMs: config.healthCheckIntervalMs,
    checkTimeoutMs: HEALTH_CHECK_TIMEOUT_MS,
    adminCalls,
    onChange: (now, before) => {
      if (now.broken.length && !before.broken.length) onBroken(now.broken);
      if (now.problems.length) logger.warn({ problems: now.problems }, 'cluster degraded');
      else if (before.problems.length) logger.info({}, 'cluster healthy again');
    },
  });
}

/** Consumer lag of every owned partition, into the metrics (a partition no longer owned loses its series). */
function watchLag(config: Config, clients: Clients, adminCalls: Serial, owned: () => readonly number[], parts: { metrics: ServiceMetrics; stalls: StallWatch; logger: Logger }): ConsumerLagMonitor {
  const { metrics, stalls, logger } = parts;
  let stalled = false;
  return new ConsumerLagMonitor({
    admin: clients.healthAdmin,
    adminCalls,
    group: config.group,
    topic: config.inputTopic,
    intervalMs: config.healthCheckIntervalMs,
    owned,
    logger,
    onLag: (lag) => {
      metrics.consumerLag.reset();
      for (const [partition, { records }] of lag) metrics.consumerLag.set({ topic: config.inputTopic, partition: String(partition) }, records);
      stalls.lagPolled(lag);
      // A stall is logged when it starts and when it ends, not only answered on /readyz.
      const now = stalls.problems(config.stallTimeoutMs).filter((p) => p.startsWith('no progress'));
      if (now.length > 0 && !stalled) logger.warn({ problems: now }, 'stalled: an owned partition has records waiting and nothing committed');
      else if (now.length === 0 && stalled) logger.info({}, 'moving again: every owned partition is committing');
      stalled = now.length > 0;
    },
  });
}

/**
 * What a start has set up so far, undone in reverse order when a later step fails: a start is all
 * or nothing, and a failed one leaves no client connected, no group joined, no port bound.
 */
class StartUp {
  private readonly undo: (() => unknown)[] = [];

  add(undo: () => unknown): void {
    this.undo.push(undo);
  }

  async rollback(): Promise<void> {
    for (const undo of this.undo.reverse()) await Promise.resolve().then(undo).catch(() => undefined);
  }
}

/** The first failure of `work`, once every one has settled (a late connect must not outlive the clean-up). */
async function allOrFirstFailure(work: readonly Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(work);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * `stop()` (once, however often called) and `done`, which settles with the stop whether the
 * pipeline ended (a fatal error) or stop() was called: a stop cut short by its deadline leaves
 * the pipeline unfinished.
 */
function stopControl(pipelineDone: Promise<unknown>, markStopping: () => void, stopping: StopParts): { stop: () => Promise<StopResult>; done: Promise<StopResult> } {
  let stopped: Promise<StopResult> | undefined;
  let stopCalled!: () => void;
  const stopRequested = new Promise<void>((resolve) => (stopCalled = resolve));
  const stop = (): Promise<StopResult> => {
    markStopping();
    stopCalled();
    return (stopped ??= stopWithin(stopping));
  };
  // The pipeline's failure, if that is what stopped it: `done` rejects with it whichever branch settles first.
  let fatal: Error | undefined;
  const done = Promise.race([
    pipelineDone.then(
      () => stop(),
      async (err: Error) => {
        fatal = err;
        stopping.abort();
        await stop();
        throw err;
      },
    ),
    stopRequested.then(async () => {
      const result = await stopped!;
      if (fatal) throw fatal;
      return result;
    }),
  ]);
  return { stop, done };
}

export async function startService(resolved: ResolvedConfig, logger: Logger): Promise<RunningService> {
  const { config } = resolved;
  checkKafkajsFixes({ guarantee: config.guarantee, logger });
  const metrics = new ServiceMetrics();
  const pipeline = await loadPipeline(config.pipeline);
  const model = loadModelFile(config.model ?? pipeline.modelFile);
  const resolution = await resolveBackend(config.backend, model, { logger });
  metrics.backendFallbacks.inc(resolution.skipped.length);
  // A model that can be swapped while serving is stepped through a backend that can be replaced.
  const swappable = config.watchModel || config.modelsTopic !== undefined ? new SwappableBackend(resolution.backend) : undefined;
  if (swappable && config.standbyReplicas > 0) throw new RnnStreamError('--standby-replicas cannot be combined with --watch-model or --models-topic yet: standby copies hold the state of the model they were made for');
  if (!swappable && config.swapPolicy !== 'reset') throw new UsageError(`--swap-policy ${config.swapPolicy} applies to hot swap: give --models-topic or --watch-model too`);
  const backend = instrument(swappable ?? resolution.backend, metrics);
  const startUp = new StartUp();
  startUp.add(() => backend.dispose());
  try {
    return await start({ resolved, logger, metrics, pipeline, model, backend, swappable, startUp });
  } catch (err) {
    await startUp.rollback();
    throw err;
  }
}

interface StartParts {
  readonly resolved: ResolvedConfig;
  readonly logger: Logger;
  readonly metrics: ServiceMetrics;
  readonly pipeline: Awaited<ReturnType<typeof loadPipeline>>;
  readonly model: ReturnType<typeof loadModelFile>;
  readonly backend: StepBackend;
  /** The backend a hot swap replaces (--watch-model, --models-topic); `backend` steps through it. */
  readonly swappable: SwappableBackend | undefined;
  readonly startUp: StartUp;
}

/**
 * The start, in the order that makes it all or nothing: the HTTP endpoint, the clients and the
 * topics, the health checks and the changelog reader; only then does the consumer join its group.
 * Each step registers its undoing with `startUp`.
 */
async function start(parts: StartParts): Promise<RunningService> {
  const { resolved, logger, metrics, pipeline, model, backend, swappable, startUp } = parts;
  const { config } = resolved;
  // With policy warm each key keeps its last events, in its state and changelog, from the start.
  const history = config.swapPolicy === 'warm' ? warmHistoryFor(pipeline, config.warmHistory) : undefined;
  const store = stateStoreFor(pipeline, model, { capacity: config.keyCapacity, idleTtlMs: config.idleTtlMs, history });
  // Standby copies are kept apart, one store per partition: their keys are not served, and
  // dropping a revoked partition from the service's store must not touch them. Never evicted by
  // idleness: they see no events.
  const standbyStore = config.standbyReplicas > 0 ? () => stateStoreFor(pipeline, model, { capacity: config.keyCapacity }) : undefined;
  const prequential = prequentialFor(pipeline, model);
  // The chain reads the model through this: a hot swap replaces it.
  const serving = new ServingModel(pipeline, model, config.outOfScopeThreshold);
  const { outOfScope } = serving;
  metrics.modelInfo.set({ pipeline: pipeline.name, model: model.name, hash: model.hash }, 1);
  const queue = new BoundedQueue(config.queueCapacity);
  const stalls = new StallWatch();
  const connection: KafkaConnection = { brokers: config.brokers, clientId: config.clientId, ssl: config.ssl, sasl: config.sasl, saslPassword: resolved.saslPassword };

  let health: () => Health = () => ({ status: 'ok', ready: false, reasons: ['starting'], detail: { pipeline: pipeline.name } });
  metrics.reportHealthFrom(() => health());
  let keys: ((key: string) => KeyAnswer) | undefined;
  const { server, httpAddress } = await listen(config, metrics, { health: () => health(), keys: () => keys });
  startUp.add(() => closeServer(server));

  const producerHooks: ProducerHooks = {
    onRetry: () => {
      metrics.produceRetries.inc();
      stalls.sendFailed();
    },
    onRefused: () => metrics.recordsRefused.inc(),
  };
  const clients = await connect(config, connection, { logger, producerHooks, endpoint: config.http.advertised ?? httpAddress });
  const { admin, consumer, healthAdmin } = clients;
  const disconnectClients = (): Promise<unknown> => Promise.allSettled([consumer.disconnect(), clients.producer?.disconnect(), admin.disconnect(), healthAdmin.disconnect()]);
  startUp.add(disconnectClients);

  // The topics changed under the service: it stops, committing nothing more (see cluster-health.ts).
  let run: ReturnType<typeof runPipeline> | undefined;
  let broken: Error | undefined;
  const onBroken = (reasons: readonly string[]): void => {
    broken ??= new RnnStreamError(reasons.join('; '));
    logger.error({ reasons }, 'the service\'s topics changed under it; stopping without committing anything more');
    run?.fail(broken);
  };
  const healthCalls = createSerial();
  const clusterHealth = watchCluster(config, clients, healthCalls, logger, onBroken);
  // Hot swap: set once the sink is made (see markTakeovers).
  let restored: ((r: RestoreReport) => void) | undefined;
  const restorer = createRestorer(config, clients, { store, standbyStore }, logger, metrics, (r) => restored?.(r));
  metrics.standbyKeysFrom(() => restorer.standbyKeys);
  // After every rebalance: who owns what and where it answers (per-key queries), and this
  // member's standby copies.
  const group = new GroupWatch({
    // The health checks' client: a describe stuck in a broker outage must not hold up restores.
    admin: clients.healthAdmin,
    adminCalls: healthCalls,
    group: config.group,
    topic: config.inputTopic,
    logger,
    onDescribed: (view) => {
      if (!standbyStore) return;
      const partitions = standbyPartitionsIn(view, config.standbyReplicas);
      logger.info({ partitions, members: view.members.length }, 'standby partitions placed');
      restorer.standbyFor(partitions);
    },
  });
  startUp.add(() => group.stop());
  startUp.add(() => clusterHealth.stop());
  startUp.add(() => restorer.stop());
  await allOrFirstFailure([clusterHealth.start(), restorer.start()]);
  if (broken) throw broken;

  const sink = createSink({ config, clients, connection, store, logger, written: onWritten(metrics, store, prequential, queue, stalls), metrics, queue, stalls });
  startUp.add(() => sink.disconnect());
  if (swappable) restored = markTakeovers({ sink, serving, startModel: model, policy: config.swapPolicy });
  let consumerDown: Error | undefined;
  let owned: readonly number[] = [];
  // Hot swap's shadow run, if the models topic names one (made below, before the consumer joins).
  let shadow: ShadowRunner | undefined;
  const source = new KafkaSource(consumer, { topic: config.inputTopic, fromBeginning: config.fromBeginning, queue }, logger, {
    onFetch: () => stalls.fetched(),
    onEventsIn: (n) => metrics.eventsIn.inc(n),
    onAssigned: (partitions, memberId) => {
      shadow?.assigned(new Set(partitions));
      owned = partitions;
      group.joined(memberId);
    },
    onConsumerDown: (err) => {
      consumerDown = err;
      if (err) metrics.consumerRestarts.inc();
    },
  });
  // An event is already applied when its key's (restored) state reflects an offset at or after it.
  const alreadyApplied = (key: string, source: SourcePosition): boolean => source.kind === 'kafka' && store.reflects(key, source.partition, Number(source.offset));
  let spillLogged = false;
  // Before the consumer joins: a restarted instance serves the model the models topic names.
  // Shadow runs come from the models topic; their predictions go to the shadow topic.
  const shadowTopic = config.shadowTopic;
  const shadowOut = swappable && config.modelsTopic !== undefined && shadowTopic !== undefined ? new InProcessProducer(clients.kafka.producer(PRODUCER_CONFIG), requestLimits(config, clients.layout), logger) : undefined;
  if (shadowOut) {
    await shadowOut.connect();
    startUp.add(() => shadowOut.disconnect());
  }
  shadow = shadowOut
    ? new ShadowRunner({
        pipeline,
        serving,
        createBackend: async (m) => (await resolveBackend(swappable!.name, m, { logger })).backend,
        send: (messages) => shadowOut.sendPacked([packMessages(shadowTopic!, messages)]),
        keyCapacity: config.keyCapacity,
        maxBatchSize: config.maxBatchSize,
        ...(config.outOfScopeThreshold !== undefined ? { oosThreshold: config.outOfScopeThreshold } : {}),
        logger,
        metrics,
      })
    : undefined;
  if (shadow) startUp.add(async () => shadow?.stop(undefined));
  const stopModelSources = swappable ? await startHotSwap({ ...parts, serving, swappable, store, queue, sink, source, clients, shadow }) : undefined;
  if (stopModelSources) startUp.add(stopModelSources);
  run = runPipeline({
    source,
    sink,
    restorer,
    pipeline,
    model,
    store,
    logger,
    onLost: (partitions) => metrics.partitionsLost.inc(partitions.length),
    rejoinDrainTimeoutMs: config.rejoinDrainTimeoutMs,
    predict: {
      backend,
      prequential,
      serving,
      // Each prediction carries its key's state right after it: the changelog must hold the
      // state that matches the outputs written with it, and the live state can be ahead.
      captureState: true,
      onKeptStatesSpilled: (bytes) => {
        metrics.keptStatesSpilled.inc();
        if (!spillLogged) logger.warn({ bytes }, 'kept micro-batch states read back whole: the changelog held too many unread on the device (counted in rnnstream_kept_states_spilled_total from now on)');
        spillLogged = true;
      },
      alreadyApplied,
      history,
      // Only where a shadow can run: a call per prediction otherwise for nothing.
      ...(shadow ? { onPrediction: (event: EventRecord<unknown>, prediction: PredictionRecord) => shadow?.observe(event, prediction) } : {}),
      onWarmUp: (keys, events, ms) => {
        metrics.warmUpKeys.inc(keys);
        metrics.warmUpEvents.inc(events);
        metrics.warmUpSeconds.inc(ms / 1000);
      },
      maxBatchSize: config.maxBatchSize,
      maxWaitMs: config.maxWaitMs,
      microBatch: config.microBatch,
      stateOnDevice: config.stateOnDevice,
      maxBytes: config.maxMessageBytes,
      maxKeyBytes: config.maxKeyBytes,
    },
  });
  const pipelineRun = run;
  startUp.add(() => pipelineRun.stop());
  let fatal: Error | undefined;
  const pipelineDone = run.done.catch((err: Error) => {
    fatal = err;
    logger.error({ err: err.message, stack: err.stack }, 'pipeline failed; stopping without committing what is in flight');
    throw err;
  });
  pipelineDone.catch(() => undefined);
  await Promise.race([source.started, pipelineDone]);

  let stopping = false;
  health = serviceHealth({
    unhealthy: () => [
      ...(fatal ? [`pipeline failed: ${fatal.message}`] : []),
      ...(consumerDown ? [`consumer down, rejoining: ${consumerDown.message}`] : []),
      ...source.unservable(),
      ...(stopping ? ['shutting down'] : []),
    ],
    stopping: () => stopping,
    stalls,
    stallTimeoutMs: config.stallTimeoutMs,
    cluster: clusterHealth,
    detail: () => ({ pipeline: pipeline.name, backend: backend.name, guarantee: config.guarantee, keys: store.size, standbyKeys: restorer.standbyKeys, inFlight: queue.size }),
  });
  const lag = watchLag(config, clients, healthCalls, () => owned, { metrics, stalls, logger });
  lag.start();
  keys = keyQuery({ store, inputTopic: config.inputTopic, inputPartitions: clients.layout.inputPartitions, owned: () => owned, group: () => group.view, history });
  const state = stateResidence(backend, store, { ...config, frames: pipeline.frames }).why;
  logger.info({ pipeline: pipeline.name, group: config.group, input: config.inputTopic, guarantee: config.guarantee, backend: backend.name, detail: backend.detail, state, http: httpAddress, ...(outOfScope ? { outOfScope: { label: outOfScope.label, threshold: outOfScope.threshold, from: outOfScope.from } } : {}) }, 'service started');

  const { stop, done } = stopControl(pipelineDone, () => (stopping = true), {
    timeoutMs: config.shutdownTimeoutMs,
    inFlight: () => queue.size,
    drain: async () => {
      await pipelineRun.stop();
      await pipelineDone;
      await sink.flush();
    },
    abort: () => sink.abort(),
    disconnect: () => {
      clusterHealth.stop();
      lag.stop();
      group.stop();
      return Promise.allSettled([stopModelSources?.(), disconnectClients(), sink.disconnect(), restorer.stop()]);
    },
    dispose: () => backend.dispose(),
    server,
    logger,
  });
  return { done, stop, httpAddress, metrics };
}

/**
 * Hot swap (--watch-model, --models-topic): new models are offered by their sources, checked,
 * and swapped in where nothing is in flight (model-swap.ts). Resolves with the sources' stop.
 */
async function startHotSwap(
  parts: StartParts & { serving: ServingModel; swappable: SwappableBackend; store: KeyStateStore; queue: BoundedQueue; sink: KafkaSink; source: KafkaSource; clients: Clients; shadow: ShadowRunner | undefined },
): Promise<() => Promise<void>> {
  const { resolved, logger, metrics, pipeline, serving, swappable, store, queue, sink, source, clients } = parts;
  const { config } = resolved;
  const swapper = new ModelSwapper({
    pipeline,
    serving,
    backend: swappable,
    store,
    queue,
    flush: () => sink.flush(),
    onSwapped: (model) => parts.shadow?.servingChanged(model),
    positions: () => source.positions(),
    markModel: (partition, marker) => sink.markModel(partition, marker),
    createBackend: async (model) => (await resolveBackend(swappable.name, model, { logger })).backend,
    policy: config.swapPolicy,
    ...(config.outOfScopeThreshold !== undefined ? { oosThreshold: config.outOfScopeThreshold } : {}),
    logger,
    metrics,
  });
  return startModelSources({
    swapper,
    modelFile: config.model ?? pipeline.modelFile,
    watch: config.watchModel,
    modelsTopic: config.modelsTopic,
    shadow: parts.shadow,
    kafka: clients.kafka,
    admin: clients.admin,
    group: config.group,
    pipeline: pipeline.name,
    logger,
    metrics,
  });
}

/** Closes the HTTP server and its open connections. */
function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}
