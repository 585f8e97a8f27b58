// Writes deploy/grafana/rnnstream-dashboard.json: the panels, each with its PromQL, declared
// once here (test/prometheus.integration.test.ts runs every query against a real Prometheus).
//   node scripts/dashboard.mjs
import { writeFileSync } from 'node:fs';

const q = (expr, legendFormat) => ({ expr, legendFormat });
const rows = [
  ['Throughput (events/s)', 'ops', [q('sum by (instance) (rate(rnnstream_events_in_total[1m]))', 'in {{instance}}'), q('sum by (instance) (rate(rnnstream_predictions_out_total[1m]))', 'predictions {{instance}}'), q('sum by (instance) (rate(rnnstream_dead_letters_total[1m]))', 'dead letters {{instance}}')]],
  ['Consumer lag (records), by partition', 'short', [q('sum by (topic, partition) (rnnstream_consumer_lag_records)', '{{topic}}/{{partition}}')]],
  ['End-to-end latency: input timestamp to durable output', 's', [q('histogram_quantile(0.5, sum by (le) (rate(rnnstream_end_to_end_latency_seconds_bucket[1m])))', 'p50'), q('histogram_quantile(0.99, sum by (le) (rate(rnnstream_end_to_end_latency_seconds_bucket[1m])))', 'p99')]],
  ['Model step latency (one backend call)', 's', [q('histogram_quantile(0.99, sum by (le) (rate(rnnstream_step_seconds_bucket[1m])))', 'p99'), q('histogram_quantile(0.5, sum by (le) (rate(rnnstream_step_seconds_bucket[1m])))', 'p50')]],
  ['Keys per backend call', 'short', [q('histogram_quantile(0.5, sum by (le) (rate(rnnstream_step_batch_keys_bucket[1m])))', 'median')]],
  ['Dead letters (share of input)', 'percentunit', [q('sum by (instance) (rate(rnnstream_dead_letters_total[5m])) / sum by (instance) (rate(rnnstream_events_in_total[5m]))', '{{instance}}')]],
  ['Keys resident', 'short', [q('sum by (instance) (rnnstream_keys_resident)', '{{instance}}')]],
  ['State store (bytes)', 'bytes', [q('sum by (instance) (rnnstream_state_bytes)', '{{instance}}')]],
  ['Restore: records left, partitions restoring', 'short', [q('sum by (instance) (rnnstream_restore_remaining_records)', 'records left {{instance}}'), q('sum by (instance) (rnnstream_restore_partitions_in_progress)', 'partitions {{instance}}')]],
  ['Restore: read rate', 'Bps', [q('sum by (instance) (rate(rnnstream_restore_bytes_total[1m]))', 'bytes/s {{instance}}'), q('sum by (instance) (rate(rnnstream_restore_records_total[1m]))', 'records/s {{instance}}')]],
  ['Last restore (s) and keys restored', 'short', [q('max by (instance) (rnnstream_restore_seconds)', 'seconds {{instance}}'), q('sum by (instance) (rnnstream_restored_keys_total)', 'keys {{instance}}')]],
  ['Health (0 ok, 1 degraded, 2 unhealthy) and ready', 'short', [q('max by (instance) (rnnstream_health_status)', 'health {{instance}}'), q('min by (instance) (rnnstream_ready)', 'ready {{instance}}')]],
  ['Model served', 'short', [q('max by (instance, pipeline, model, hash) (rnnstream_model_info)', '{{pipeline}} {{model}} {{hash}}')]],
  ['Prequential accuracy', 'percentunit', [q('avg by (instance) (rnnstream_prequential_accuracy)', '{{instance}}')]],
  ['Resident memory', 'bytes', [q('sum by (instance) (rnnstream_process_resident_memory_bytes)', '{{instance}}')]],
  ['Exactly once: transactions/s and p99 duration', 'short', [q('sum by (instance) (rate(rnnstream_transactions_total[1m]))', 'commits/s {{instance}}'), q('histogram_quantile(0.99, sum by (le) (rate(rnnstream_transaction_seconds_bucket[1m])))', 'p99 s')]],
  ['Retries and restarts (per minute)', 'short', [q('sum by (instance) (increase(rnnstream_produce_retries_total[1m]))', 'produce retries {{instance}}'), q('sum by (instance) (increase(rnnstream_consumer_restarts_total[1m]))', 'consumer restarts {{instance}}')]],
];

const panels = rows.map(([title, unit, targets], i) => ({
  id: i + 1,
  type: 'timeseries',
  title,
  datasource: { type: 'prometheus', uid: '${DS_PROMETHEUS}' },
  gridPos: { h: 8, w: 12, x: (i % 2) * 12, y: Math.floor(i / 2) * 8 },
  fieldConfig: { defaults: { unit }, overrides: [] },
  options: { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
  targets: targets.map((t, k) => ({ ...t, refId: String.fromCharCode(65 + k), datasource: { type: 'prometheus', uid: '${DS_PROMETHEUS}' } })),
}));

const dashboard = {
  __inputs: [{ name: 'DS_PROMETHEUS', label: 'Prometheus', type: 'datasource', pluginId: 'prometheus', pluginName: 'Prometheus' }],
  title: 'rnnstream',
  uid: 'rnnstream',
  description: 'rnnstream services: throughput, lag, latency, state, restores, health (metrics documented in docs/deploy.md)',
  tags: ['rnnstream', 'kafka'],
  timezone: 'browser',
  schemaVersion: 39,
  version: 1,
  refresh: '10s',
  time: { from: 'now-1h', to: 'now' },
  panels,
};
writeFileSync(new URL('../deploy/grafana/rnnstream-dashboard.json', import.meta.url), `${JSON.stringify(dashboard, null, 2)}\n`);
