/** The tables `npm run bench:peers` prints (markdown, for docs/benchmarks.md) and its JSON. */
import type { Contender } from './contenders.js';
import type { Agreement, LatencyRun, ThroughputRun } from './measure.js';
import { median } from '../stats.js';

export interface ContenderResult {
  readonly contender: Contender;
  readonly throughput: readonly ThroughputRun[];
  readonly latency: readonly LatencyRun[];
  readonly agreement: Agreement;
}

export interface SweepRow {
  readonly contender: string;
  readonly commitIntervalMs: number;
  readonly throughput: readonly number[];
  readonly p99: readonly number[];
}

export interface ReportInput {
  readonly broker: string;
  readonly events: number;
  readonly runs: number;
  readonly rate: number;
  readonly tolerance: number;
  readonly results: readonly ContenderResult[];
  readonly sweep: readonly SweepRow[];
  readonly cluster3: { kind: string; value: { rows: { contender: string; throughput: number[] }[] } } | undefined;
}


const k = (n: number): string => (Number.isFinite(n) ? (n >= 10_000 ? `${(n / 1000).toFixed(1)}k` : Math.round(n).toLocaleString('en-US')) : '-');
const ms = (n: number): string => (Number.isFinite(n) ? `${Math.round(n)}` : '-');
const throughputOf = (r: ContenderResult): number => median(r.throughput.map((t) => t.eventsPerSecond));

function mainRows(input: ReportInput): string[] {
  const rows = ['| contender | events/s (median) | runs | p50 ms | p99 ms | CPU s per M events | peak RSS MiB | max \\|Δp\\| vs replay | counts |', '|---|---|---|---|---|---|---|---|---|'];
  for (const r of input.results) {
    const lat = r.latency;
    const a = r.agreement;
    const valid = a.worst <= input.tolerance && a.unmatched === 0;
    const incomplete = r.throughput.filter((t) => !t.complete).length;
    const missing = lat.reduce((n, l) => n + l.missing, 0);
    rows.push(
      `| ${r.contender.label} | ${k(throughputOf(r))}${incomplete ? ` (${incomplete} run(s) cut at the time limit)` : ''} | ${r.throughput.map((t) => k(t.eventsPerSecond)).join(', ')} | ${ms(median(lat.map((l) => l.p50Ms)))} | ${ms(median(lat.map((l) => l.p99Ms)))}${missing ? ` (${missing} outputs missing: did not keep up)` : ''} | ${median(r.throughput.map((t) => t.cpuSecondsPerMillion)).toFixed(1)} | ${(median(r.throughput.map((t) => t.peakRssBytes)) / 2 ** 20).toFixed(0)} | ${a.worst.toExponential(1)}${valid ? '' : ' (**does not count**)'} | ${a.predictions} predictions, ${a.duplicates} duplicates${a.unmatched ? `, ${a.unmatched} unmatched` : ''} |`,
    );
  }
  return rows;
}

function ratioLines(input: ReportInput): string[] {
  const by = (id: string): ContenderResult | undefined => input.results.find((r) => r.contender.id === id);
  const lines: string[] = [];
  for (const [g, suffix] of [['at-least-once', 'alos'], ['exactly-once', 'eos']] as const) {
    const ours = by(`rnnstream-${suffix}`);
    if (!ours) continue;
    const ks = input.results.filter((r) => r.contender.guarantee === g && r.contender.id.startsWith('kstreams') && r.agreement.worst <= input.tolerance);
    const best = [...ks].sort((a, b) => throughputOf(b) - throughputOf(a))[0];
    const peerA = by(`kstreams-a-rocksdb-${suffix}`);
    if (best) lines.push(`- ${g}: rnnstream / best Kafka Streams (${best.contender.label}) = **${(throughputOf(ours) / throughputOf(best)).toFixed(2)}x**`);
    if (peerA) lines.push(`- ${g}: rnnstream / peer A (${peerA.contender.label}) = **${(throughputOf(ours) / throughputOf(peerA)).toFixed(2)}x**`);
  }
  const c = by('node-loop');
  const alos = by('rnnstream-alos');
  if (c && alos) lines.push(`- at-least-once: rnnstream / plain Node loop = **${(throughputOf(alos) / throughputOf(c)).toFixed(1)}x**`);
  return lines;
}

export function printReport(input: ReportInput): { markdown: string; json: unknown } {
  const out = [
    `### Peers: ${input.events.toLocaleString('en-US')} ball events, 4 partitions, ${input.broker}`,
    '',
    `Medians of ${input.runs} runs per contender, each alone, in rotating order. Throughput from 5 % to 95 % of the outputs (start-up left out); latency at ${input.rate} events/s from just before an event is sent to a read_committed reader receiving its prediction; CPU of the contender's process only (the broker's is not counted).`,
    '',
    ...mainRows(input),
    '',
    ...ratioLines(input),
  ];
  if (input.sweep.length) {
    out.push('', '#### Exactly once: commit interval', '', '| contender | commit interval ms | events/s (median of 3) | p99 ms (median of 3) |', '|---|---|---|---|');
    for (const s of input.sweep) out.push(`| ${s.contender} | ${s.commitIntervalMs} | ${k(median(s.throughput))} (${s.throughput.map(k).join(', ')}) | ${ms(median(s.p99))} (${s.p99.map(ms).join(', ')}) |`);
  }
  if (input.cluster3) {
    out.push('', `#### ${input.cluster3.kind}`, '', '| contender | events/s (median of 3) | runs |', '|---|---|---|');
    for (const r of input.cluster3.value.rows) out.push(`| ${r.contender} | ${k(median(r.throughput))} | ${r.throughput.map(k).join(', ')} |`);
  }
  const json = { ...input, results: input.results.map((r) => ({ ...r, contender: r.contender.id })) };
  return { markdown: out.join('\n') + '\n', json };
}
