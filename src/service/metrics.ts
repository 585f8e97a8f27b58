/**
 * Prometheus metrics of the service (prom-client), on their own registry so tests and several
 * services in one process do not collide.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Health } from './http.js';

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly eventsIn = new Counter({ name: 'rnnstream_events_in_total', help: 'Input messages consumed', registers: [this.registry] });
  readonly predictionsOut = new Counter({ name: 'rnnstream_predictions_out_total', help: 'Predictions acknowledged by the broker', registers: [this.registry] });
  readonly deadLetters = new Counter({ name: 'rnnstream_dead_letters_total', help: 'Dead letters acknowledged by the broker', registers: [this.registry] });
  readonly sequenceGaps = new Counter({
    name: 'rnnstream_sequence_gaps_total',
    help: "Events missing by the pipeline's sequence field (e.g. skipped ball frames), summed over keys",
    registers: [this.registry],
  });
  readonly skipped = new Counter({
    name: 'rnnstream_events_skipped_total',
    help: 'Redelivered events already reflected in restored state (not applied twice)',
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: 'rnnstream_step_batch_keys',
    help: 'Keys per backend call: one wave of a micro-batch, or on a device backend every key of the micro-batch (all its waves in one call)',
    buckets: [1, 4, 16, 64, 256, 1024, 4096, 16384],
    registers: [this.registry],
  });
  readonly stepSeconds = new Histogram({
    name: 'rnnstream_step_seconds',
    help: 'Latency of one backend call (a wave, or on a device backend a whole micro-batch)',
    buckets: [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1],
    registers: [this.registry],
  });
  readonly keysResident = new Gauge({ name: 'rnnstream_keys_resident', help: 'Keys with state in memory', registers: [this.registry] });
  readonly evictions = new Gauge({ name: 'rnnstream_evictions', help: 'Keys evicted from the state store (capacity or idle TTL), since start', registers: [this.registry] });
  readonly consumerLag = new Gauge({
    name: 'rnnstream_consumer_lag_records',
    help: "Records of each assigned input partition not yet committed by the group: the log end offset minus the committed offset (polled every health check)",
    labelNames: ['topic', 'partition'],
    registers: [this.registry],
  });
  readonly endToEndLatency = new Histogram({
    name: 'rnnstream_end_to_end_latency_seconds',
    help: "From an input record's timestamp to its output being durable: acknowledged by the broker (at least once) or committed in its transaction (exactly once)",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly restoreSeconds = new Gauge({ name: 'rnnstream_restore_seconds', help: 'Duration of the last state restore', registers: [this.registry] });
  readonly restoredKeys = new Counter({ name: 'rnnstream_restored_keys_total', help: 'Keys restored from the changelog', registers: [this.registry] });
  readonly restoreRecords = new Counter({ name: 'rnnstream_restore_records_total', help: 'Changelog records read by restores, as they are read', registers: [this.registry] });
  readonly restoreBytes = new Counter({ name: 'rnnstream_restore_bytes_total', help: 'Bytes of changelog records read by restores, as they are read', registers: [this.registry] });
  readonly restoreRemainingRecords = new Gauge({
    name: 'rnnstream_restore_remaining_records',
    help: 'Changelog records (offsets) restores still have to read before their partitions serve; 0 when none is under way',
    registers: [this.registry],
  });
  readonly restoresInProgress = new Gauge({ name: 'rnnstream_restore_partitions_in_progress', help: 'Input partitions whose state is being restored now (they serve nothing until it ends); 0: done', registers: [this.registry] });
  readonly stateBytes = new Gauge({
    name: 'rnnstream_state_bytes',
    help: "Bytes of the key state store's columns (every key's state, carry and bookkeeping; allocated 4,096 keys at a time)",
    registers: [this.registry],
  });
  readonly modelInfo = new Gauge({ name: 'rnnstream_model_info', help: 'The model being served (always 1): its pipeline, name and sha256', labelNames: ['pipeline', 'model', 'hash'], registers: [this.registry] });
  readonly modelSwaps = new Counter({ name: 'rnnstream_model_swaps_total', help: 'Models swapped in while serving (--watch-model or --models-topic), after their checks', registers: [this.registry] });
  readonly modelRefusals = new Counter({
    name: 'rnnstream_model_refusals_total',
    help: 'New models refused before serving (unreadable, a wrong sha256, not fitting the pipeline, or steps that disagree with the float64 reference); the served model went on',
    registers: [this.registry],
  });
  readonly warmUpKeys = new Counter({ name: 'rnnstream_warmup_keys_total', help: 'Keys warmed up after a hot swap (policy warm): their state rebuilt from their history under the new model', registers: [this.registry] });
  readonly warmUpEvents = new Counter({ name: 'rnnstream_warmup_events_total', help: 'History events stepped through a new model to warm keys up (policy warm)', registers: [this.registry] });
  readonly warmUpSeconds = new Counter({ name: 'rnnstream_warmup_seconds_total', help: 'Time spent warming keys up (policy warm), before their micro-batch steps', registers: [this.registry] });
  readonly modelSwapSeconds = new Gauge({
    name: 'rnnstream_model_swap_seconds',
    help: 'The last swap: from holding new events to serving the new model (the outputs in flight made durable first)',
    registers: [this.registry],
  });
  private standbyKeysNow: () => number = () => 0;
  readonly standbyKeys: Gauge = new Gauge({
    name: 'rnnstream_standby_keys',
    help: 'Keys held as standby copies of partitions other members own (--standby-replicas), warm for a failover',
    registers: [this.registry],
    collect: (): void => this.standbyKeys.set(this.standbyKeysNow()),
  });
  readonly restoreRefusedKeys = new Counter({
    name: 'rnnstream_restore_refused_keys_total',
    help: "Keys whose latest changelog record was refused in a restore (written by another model, or unreadable): each started again from zero state",
    registers: [this.registry],
  });
  readonly prequentialAccuracy = new Gauge({
    name: 'rnnstream_prequential_accuracy',
    help: "Running accuracy of predictions scored by their key's next event (or, for keys that end, each key's final prediction by its last event)",
    registers: [this.registry],
  });
  readonly prequentialScored = new Gauge({ name: 'rnnstream_prequential_scored', help: 'Predictions scored so far', registers: [this.registry] });
  readonly shadowInfo = new Gauge({ name: 'rnnstream_shadow_info', help: 'The shadow model running beside the served one (1; none: no series), by model, hash and share of keys', labelNames: ['model', 'hash', 'share'], registers: [this.registry] });
  readonly shadowPrequentialAccuracy = new Gauge({
    name: 'rnnstream_shadow_prequential_accuracy',
    help: 'Prequential accuracy on the shadowed keys since the shadow started, by model: "shadow" (the candidate) and "serving" (the served model on the same events)',
    labelNames: ['model'],
    registers: [this.registry],
  });
  readonly shadowPrequentialScored = new Gauge({ name: 'rnnstream_shadow_prequential_scored', help: 'Predictions scored on the shadowed keys since the shadow started, by model (shadow, serving)', labelNames: ['model'], registers: [this.registry] });
  readonly shadowPredictions = new Counter({ name: 'rnnstream_shadow_predictions_total', help: "Shadow predictions written to the shadow topic", registers: [this.registry] });
  readonly shadowDropped = new Counter({
    name: 'rnnstream_shadow_dropped_total',
    help: 'Events the shadow skipped because it had fallen behind, or whose shadow predictions could not be written: a shadow never holds up serving',
    registers: [this.registry],
  });
  readonly backendFallbacks = new Counter({ name: 'rnnstream_backend_fallbacks_total', help: 'Backends skipped by auto selection', registers: [this.registry] });
  readonly keptStatesSpilled = new Counter({
    name: 'rnnstream_kept_states_spilled_total',
    help: 'Micro-batches whose every-row states, kept on the device for the changelog, were read back whole because too many were held unread',
    registers: [this.registry],
  });
  readonly produceRetries = new Counter({ name: 'rnnstream_produce_retries_total', help: 'Produce requests retried after a failure', registers: [this.registry] });
  readonly recordsRefused = new Counter({
    name: 'rnnstream_records_refused_total',
    help: 'Output records the broker refused by themselves (too large, invalid), each replaced by a minimal dead letter',
    registers: [this.registry],
  });
  readonly transactions = new Counter({ name: 'rnnstream_transactions_total', help: 'Exactly-once: transactions committed (one per input partition and commit interval)', registers: [this.registry] });
  readonly transactionSeconds = new Histogram({
    name: 'rnnstream_transaction_seconds',
    help: 'Exactly-once: from the start of a transaction to its commit, retries included',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [this.registry],
  });
  readonly transactionsOpen = new Gauge({ name: 'rnnstream_transactions_open', help: 'Exactly-once: transactions begun and not yet committed or aborted (at most one per input partition)', registers: [this.registry] });
  readonly partitionsLost = new Counter({
    name: 'rnnstream_partitions_lost_total',
    help: "Exactly-once: partitions whose producer was fenced (a new owner, or a transaction the broker expired); their uncommitted outputs were dropped and redone from what is committed",
    registers: [this.registry],
  });
  readonly consumerRestarts = new Counter({ name: 'rnnstream_consumer_restarts_total', help: 'Times the consumer crashed with an error kafkajs does not retry and was rejoined', registers: [this.registry] });

  /** What /healthz and /readyz would answer now; the service sets it (reportHealthFrom). */
  private healthNow: () => Pick<Health, 'status' | 'ready'> = () => ({ status: 'ok', ready: false });
  readonly health = new Gauge({
    name: 'rnnstream_health_status',
    help: '0 ok, 1 degraded (e.g. a broker down, partitions under-replicated), 2 unhealthy; as /healthz',
    registers: [this.registry],
    // Read at each scrape, so /metrics says the same as /healthz whether or not anyone asked it.
    collect: () => {
      const { status } = this.healthNow();
      this.health.set(status === 'ok' ? 0 : status === 'degraded' ? 1 : 2);
    },
  });
  readonly ready: Gauge = new Gauge({
    name: 'rnnstream_ready',
    help: '1 when doing its job (consuming and producing), else 0; as /readyz',
    registers: [this.registry],
    collect: (): void => this.ready.set(this.healthNow().ready ? 1 : 0),
  });

  reportHealthFrom(health: () => Pick<Health, 'status' | 'ready'>): void {
    this.healthNow = health;
  }

  /** Where rnnstream_standby_keys reads its count when scraped. */
  standbyKeysFrom(count: () => number): void {
    this.standbyKeysNow = count;
  }

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'rnnstream_' });
  }
}
