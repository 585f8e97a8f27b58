/**
 * The contenders of `npm run bench:peers`, each started as its own process (so that its CPU time
 * and peak RSS are its own, and a kill hits it, not a wrapper), on topics the harness names.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectPath } from '../../src/paths.js';

export type Guarantee = 'at-least-once' | 'exactly-once';

/** The topics and ids of one run: fresh outputs, group and state per run. */
export interface RunTopics {
  readonly input: string;
  readonly output: string;
  /** Unique per run: the consumer group, Kafka Streams' application.id, and the changelog's prefix. */
  readonly id: string;
}

export interface StartOptions {
  readonly brokers: string;
  /** The exported ball model (`rnnstream export`). */
  readonly model: string;
  /** Overrides the contender's commit interval (ms). */
  readonly commitIntervalMs?: number;
}

export interface Contender {
  readonly id: string;
  readonly label: string;
  readonly guarantee: Guarantee;
  /** The consumer group whose committed offsets say what it has processed. */
  group(t: RunTopics): string;
  start(t: RunTopics, o: StartOptions): ChildProcess;
}

/** Commit intervals as rnnstream's defaults (src/service/config.ts COMMIT_INTERVAL_MS), for every contender. */
export const COMMIT_INTERVAL: Readonly<Record<Guarantee, number>> = { 'at-least-once': 1000, 'exactly-once': 100 };

const dir = mkdtempSync(join(tmpdir(), 'rnnstream-peers-'));

/** Keeps a child's stderr (the last 64 KiB) for a post-mortem. */
function withLog(child: ChildProcess): ChildProcess & { log: () => string } {
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-65_536)));
  child.stdout?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-65_536)));
  return Object.assign(child, { log: () => log });
}

function rnnstream(guarantee: Guarantee): Contender {
  return {
    id: `rnnstream-${guarantee === 'exactly-once' ? 'eos' : 'alos'}`,
    label: `rnnstream run (${guarantee})`,
    guarantee,
    group: (t) => t.id,
    start: (t, o) => {
      const config = join(dir, `${t.id}.json`);
      writeFileSync(
        config,
        JSON.stringify({
          pipeline: 'ball-direction',
          brokers: o.brokers.split(','),
          inputTopic: t.input,
          outputTopic: t.output,
          dlqTopic: `${t.id}.dead-letters`,
          changelogTopic: `${t.id}.changelog`,
          group: t.id,
          backend: 'onnx',
          guarantee,
          commitIntervalMs: o.commitIntervalMs ?? COMMIT_INTERVAL[guarantee],
          http: { port: 0 },
          logLevel: 'warn',
        }),
      );
      return withLog(spawn(process.execPath, ['--max-semi-space-size=64', projectPath('dist', 'src', 'cli', 'main.js'), 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] }));
    },
  };
}

/**
 * Kafka Streams settings chosen for this 2-core machine (bench/peers/README.md says how): one
 * stream thread (the broker shares the two cores; two threads measured slower) and one ORT
 * intra-op thread (a step of one key, or of a few hundred, is too small to split).
 */
export const KSTREAMS_TUNING = {
  streamThreads: Number(process.env.PEERS_STREAM_THREADS ?? 1),
  ortThreads: Number(process.env.PEERS_ORT_THREADS ?? 1),
  heap: '-Xmx1g',
  /** Peer B: flush every this many ms or records (rnnstream's maxWaitMs and maxBatchSize). */
  batchMs: Number(process.env.PEERS_BATCH_MS ?? 5),
  batchRecords: Number(process.env.PEERS_BATCH_RECORDS ?? 1024),
} as const;

function kstreams(mode: 'per-record' | 'batched', store: 'rocksdb' | 'memory', guarantee: Guarantee): Contender {
  const peer = mode === 'per-record' ? 'A' : 'B';
  return {
    id: `kstreams-${peer.toLowerCase()}-${store}-${guarantee === 'exactly-once' ? 'eos' : 'alos'}`,
    label: `Kafka Streams ${peer}: ${mode}, ${store === 'rocksdb' ? 'RocksDB' : 'in-memory'} store (${guarantee})`,
    guarantee,
    group: (t) => t.id,
    start: (t, o) => {
      const classes = projectPath('bench', 'peers', 'kstreams', 'target');
      const args = [
        KSTREAMS_TUNING.heap,
        '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn',
        '-cp',
        `${join(classes, 'classes')}:${join(classes, 'libs', '*')}`,
        'dev.rnnstream.peers.BallPeer',
        ...['-brokers', o.brokers, '-input', t.input, '-output', t.output, '-application-id', t.id, '-model', o.model],
        ...['-mode', mode, '-store', store, '-guarantee', guarantee === 'exactly-once' ? 'exactly_once_v2' : 'at_least_once'],
        ...['-commit-interval', String(o.commitIntervalMs ?? COMMIT_INTERVAL[guarantee])],
        ...['-stream-threads', String(KSTREAMS_TUNING.streamThreads), '-ort-threads', String(KSTREAMS_TUNING.ortThreads)],
        ...['-batch-ms', String(KSTREAMS_TUNING.batchMs), '-batch-records', String(KSTREAMS_TUNING.batchRecords)],
        ...['-state-dir', join(dir, `${t.id}.state`)],
      ];
      return withLog(spawn('java', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    },
  };
}

const nodeLoop: Contender = {
  id: 'node-loop',
  label: 'plain Node loop: kafkajs eachMessage + onnxruntime-node (at-least-once)',
  guarantee: 'at-least-once',
  group: (t) => t.id,
  start: (t, o) =>
    withLog(
      spawn(process.execPath, [projectPath('dist', 'bench', 'peers', 'node-loop.js'), '--brokers', o.brokers, '--input', t.input, '--output', t.output, '--group', t.id, '--model', o.model], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    ),
};

export const CONTENDERS: readonly Contender[] = [
  rnnstream('at-least-once'),
  rnnstream('exactly-once'),
  kstreams('per-record', 'rocksdb', 'at-least-once'),
  kstreams('per-record', 'rocksdb', 'exactly-once'),
  kstreams('per-record', 'memory', 'at-least-once'),
  kstreams('per-record', 'memory', 'exactly-once'),
  kstreams('batched', 'memory', 'at-least-once'),
  kstreams('batched', 'memory', 'exactly-once'),
  nodeLoop,
];

export const logOf = (child: ChildProcess): string => (child as ChildProcess & { log?: () => string }).log?.() ?? '';
