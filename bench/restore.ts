/**
 * `npm run bench:restore` (issue 26, item 4): how fast the service restores a changelog of N keys
 * of the ball model (default 1,000,000) into its state store, and where the time goes.
 *
 * It writes a compacted changelog topic of 4 partitions as the service writes it (one record per
 * key: the key's snapshot, keyed by the key, in its input partition), then restores all four
 * partitions with the service's ChangelogRestorer into a fresh KeyStateStore, as a new owner
 * does, `--runs` times. Time inside the store's restore (snapshot decode and the store's writes)
 * is measured as the restore runs; decode alone is measured after, on the same bytes; fetch is
 * the rest (kafkajs fetching and parsing record batches, the broker's reads).
 *
 *   node dist/bench/restore.js [--keys 1000000] [--runs 3] [--json] [--topic T]
 *
 * `--topic T` restores an existing changelog of --keys keys (written by an earlier run, which
 * prints its name) without writing one: to profile the restore alone.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { ChangelogRestorer } from '../src/adapters/kafka/state/changelog.js';
import { loadModelFile } from '../src/adapters/model-file.js';
import { createRng } from '../src/core/prng.js';
import { silentLogger } from '../src/observability/logger.js';
import { projectPath } from '../src/paths.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { decodeSnapshots, type KeySnapshot } from '../src/state/snapshot-codec.js';
import { benchBroker } from './broker.js';
import { writeChangelog } from './changelog-fixture.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const keys = opt('--keys', 1_000_000);
const runs = opt('--runs', 3);
const PARTITIONS = 4;

const model = loadModelFile(projectPath('pipelines', 'ball-direction', 'model.json'));
// The ball pipeline's store: its carry is (x, y).
const storeOf = (): KeyStateStore => new KeyStateStore(model, { capacity: keys + 1, carrySize: 2 });

interface Run {
  readonly seconds: number;
  readonly keysPerSecond: number;
  readonly storeSeconds: number;
  readonly keys: number;
}

/** One restore of every partition into a fresh store, timed, with the time inside store.restore. */
async function restoreOnce(kafka: Kafka, topic: string): Promise<Run> {
  const store = storeOf();
  let storeSeconds = 0;
  const restore = store.restore.bind(store);
  store.restore = (bytes, accept) => {
    const t = performance.now();
    try {
      return restore(bytes, accept);
    } finally {
      storeSeconds += (performance.now() - t) / 1000;
    }
  };
  const admin = kafka.admin();
  await admin.connect();
  const restorer = new ChangelogRestorer({ kafka, admin, changelogTopic: topic, group: `restore-bench-${randomUUID()}`, store, logger: silentLogger });
  await restorer.start();
  const started = performance.now();
  await Promise.all(Array.from({ length: PARTITIONS }, (_, p) => restorer.restore(p)));
  const seconds = (performance.now() - started) / 1000;
  await restorer.stop();
  await admin.disconnect();
  if (store.size !== keys) throw new Error(`restored ${store.size} keys, expected ${keys}`);
  return { seconds, keysPerSecond: keys / seconds, storeSeconds, keys: store.size };
}

/** Decoding alone: the snapshot codec over every record's bytes, as a restore decodes them. */
function decodeSeconds(): number {
  const store = storeOf();
  const rng = createRng(26);
  const shape = { hash: model.hash, name: model.name, stateSize: model.stateSize, carrySize: 2 };
  const records: Uint8Array[] = [];
  for (let k = 0; k < Math.min(keys, 100_000); k++) {
    const s: KeySnapshot = { key: `ball-${k}`, state: Float32Array.from({ length: model.stateSize }, () => rng.normal()), steps: 1, lastSeen: 0, position: { partition: 0, offset: k }, sequence: 1, carry: Float64Array.of(1, 2), lastClass: 0 };
    records.push(store.encode([s]));
  }
  const started = performance.now();
  let n = 0;
  for (const r of records) for (const _ of decodeSnapshots(shape, r)) n++;
  return ((performance.now() - started) / 1000) * (keys / n);
}

async function main(): Promise<void> {
  const broker = await benchBroker();
  try {
    const kafka = new Kafka({ clientId: 'rnnstream-bench-restore', brokers: broker.list.split(','), logLevel: logLevel.NOTHING });
    const given = args.includes('--topic') ? args[args.indexOf('--topic') + 1]! : undefined;
    const topic = given ?? `restore-bench-${randomUUID()}.changelog`;
    const written = given
      ? { seconds: 0, bytes: Number.NaN }
      : await writeChangelog({ kafka, topic, keys, partitions: PARTITIONS, store: storeOf(), position: (k) => ({ partition: k % PARTITIONS, offset: k }) });
    if (!given) process.stderr.write(`wrote ${keys} keys (${(written.bytes / 1e6).toFixed(1)} MB of snapshots) to ${topic} in ${written.seconds.toFixed(1)} s\n`);
    const results: Run[] = [];
    for (let r = 0; r < runs; r++) {
      results.push(await restoreOnce(kafka, topic));
      process.stderr.write(`  restore ${r + 1}: ${results.at(-1)!.seconds.toFixed(2)} s, ${Math.round(results.at(-1)!.keysPerSecond)} keys/s\n`);
    }
    const decode = args.includes('--topic') ? 0 : decodeSeconds();
    const seconds = median(results.map((r) => r.seconds));
    const storeSeconds = median(results.map((r) => r.storeSeconds));
    const summary = {
      broker: broker.kind,
      keys,
      bytes: written.bytes,
      runs: results.map((r) => Number(r.seconds.toFixed(3))),
      seconds,
      keysPerSecond: keys / seconds,
      where: { fetch: seconds - storeSeconds, decode, store: storeSeconds - decode },
    };
    if (args.includes('--json')) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else {
      const pct = (s: number): string => `${s.toFixed(2)} s (${((100 * s) / seconds).toFixed(0)} %)`;
      process.stdout.write(
        `restore of ${keys} ball keys (${(written.bytes / 1e6).toFixed(0)} MB, ${PARTITIONS} partitions) on ${broker.kind}, median of ${runs}: ${seconds.toFixed(2)} s, ${Math.round(summary.keysPerSecond)} keys/s\n` +
          `  fetch (kafkajs and the broker) ${pct(summary.where.fetch)}, decode ${pct(decode)}, store ${pct(summary.where.store)}\n`,
      );
    }
  } finally {
    broker.stop();
  }
  process.exit(0);
}

await main();
