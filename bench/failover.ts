/**
 * `npm run bench:failover` (issue 26, item 3): how long the service takes, after its owner is
 * killed -9, to serve a partition holding N keys' state (default 1,000,000, the ball model),
 * without and with a standby replica.
 *
 * Each run: a fresh input topic of one partition and a changelog of N keys (written as the
 * service writes it); instance X starts and restores them; instance Y joins (with
 * --standby-replicas 1 it tails the partition's changelog into its standby store; the run waits
 * until the copy holds every key); a steady trickle of events (200/s, keys among the N) flows;
 * then the owner is killed -9. Measured from the kill: when the survivor was given the partition
 * (the group noticing: the session timeout, 6 s here, the same in both modes), how long its
 * restore took, and when its first prediction arrived on the output topic (its record
 * timestamp at or after the kill: the dead owner wrote none after it).
 *
 *   node dist/bench/failover.js [--keys 1000000] [--runs 2] [--json]
 *
 * Modes alternate (without, with, without, with ...) so that the machine's noise falls on both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import { loadModelFile } from '../src/adapters/model-file.js';
import { projectPath } from '../src/paths.js';
import { KeyStateStore } from '../src/state/key-state-store.js';
import { benchBroker } from './broker.js';
import { writeChangelog } from './changelog-fixture.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const keys = opt('--keys', 1_000_000);
const runs = opt('--runs', 2);
const SESSION_TIMEOUT_MS = 6000;
const TRICKLE_PER_SECOND = 200;

const model = loadModelFile(projectPath('pipelines', 'ball-direction', 'model.json'));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Instance {
  readonly name: string;
  readonly child: ChildProcess;
  log: string;
}

function startInstance(name: string, config: string): Instance {
  const child = spawn(process.execPath, ['--max-semi-space-size=64', projectPath('dist', 'src', 'cli', 'main.js'), 'run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  const instance: Instance = { name, child, log: '' };
  child.stderr!.on('data', (d: Buffer) => (instance.log += d.toString()));
  return instance;
}

/** An instance's log lines with message `msg`, parsed. */
const logged = <T>(i: Instance, msg: string): (T & { time: number })[] =>
  i.log
    .split('\n')
    .filter((l) => l.includes(`"msg":"${msg}"`))
    .map((l) => JSON.parse(l) as T & { time: number });

const lastAssigned = (i: Instance): number[] | undefined => logged<{ partitions: number[] }>(i, 'partitions assigned').at(-1)?.partitions;

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, instances: Instance[]): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(100);
  }
  const tails = instances.map((i) => `${i.name}:\n${i.log.split('\n').slice(-8).join('\n')}`).join('\n');
  throw new Error(`timed out waiting for ${what}\n${tails}`);
}

async function standbyKeys(i: Instance): Promise<number> {
  const started = logged<{ http: string }>(i, 'service started')[0];
  if (!started) return 0;
  const text = await (await fetch(`${started.http}/metrics`)).text().catch(() => '');
  return Number(/^rnnstream_standby_keys (\S+)$/m.exec(text)?.[1] ?? 0);
}

/** Events for keys ball-0, ball-1 ... in turn, each the key's next frame after its changelog state. */
function trickle(producer: Producer, topic: string, first: number): { stop: () => Promise<void> } {
  let k = first;
  let running = true;
  const loop = (async () => {
    while (running) {
      const messages = [];
      for (let n = 0; n < TRICKLE_PER_SECOND / 10; n++, k++) {
        const key = `ball-${k % keys}`;
        // The fixture's sequence is k % 70: the next frame follows it.
        messages.push({ key, value: JSON.stringify({ ballId: key, frame: (k % 70) + 1, t: 0, x: 0.5, y: 0.5 }) });
      }
      await producer.send({ topic, messages });
      await sleep(100);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

interface Outcome {
  readonly standby: boolean;
  /** From the kill to the survivor given the partition (the group noticing). */
  readonly assignedSeconds: number;
  /** The survivor's restore of the partition (its log). */
  readonly restoreSeconds: number;
  readonly changelogRecordsRead: number;
  /** From the kill to the survivor's first prediction on the output topic. */
  readonly firstPredictionSeconds: number;
}

async function once(kafka: Kafka, brokers: string, standby: boolean, run: number): Promise<Outcome> {
  const id = `failover-${randomUUID().slice(0, 8)}`;
  const topics = { inputTopic: `${id}.input`, outputTopic: `${id}.predictions`, dlqTopic: `${id}.dead-letters`, changelogTopic: `${id}.changelog`, group: id };
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: topics.inputTopic, numPartitions: 1 }] });
  await admin.disconnect();
  const store = new KeyStateStore(model, { capacity: keys + 1, carrySize: 2 });
  // Offset 0 for every key: the input's first record (a warm-up) is at 0, the trickle after it.
  await writeChangelog({ kafka, topic: topics.changelogTopic, keys, partitions: 1, store, position: () => ({ partition: 0, offset: 0 }) });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic: topics.inputTopic, messages: [{ key: 'warm-up', value: JSON.stringify({ ballId: 'warm-up', frame: 0, t: 0, x: 0.5, y: 0.5 }) }] });

  const dir = mkdtempSync(join(tmpdir(), 'rnnstream-failover-'));
  const config = join(dir, 'config.json');
  const settings = { ...topics, pipeline: 'ball-direction', brokers: brokers.split(','), backend: 'onnx', sessionTimeoutMs: SESSION_TIMEOUT_MS, keyCapacity: keys + 10_000, http: { port: 0 }, standbyReplicas: standby ? 1 : 0 };
  writeFileSync(config, JSON.stringify(settings));
  const x = startInstance('X', config);
  const instances = [x];
  let output: Consumer | undefined;
  let flow: { stop: () => Promise<void> } | undefined;
  try {
    await until('X to restore the changelog', () => logged(x, 'state restored').length > 0, 180_000, instances);
    const y = startInstance('Y', config);
    instances.push(y);
    // Settled: Y has joined, and whichever owns the partition kept it or has restored it since.
    const owner = (): Instance | undefined => instances.find((i) => lastAssigned(i)?.includes(0));
    await until(
      'the group of two to settle',
      () => {
        const o = owner();
        const assignment = o && logged<{ added: number[] }>(o, 'partitions assigned').at(-1);
        if (!o || !assignment || !lastAssigned(y) || !lastAssigned(x)) return false;
        return !assignment.added.includes(0) || logged(o, 'state restored').some((r) => r.time >= assignment.time);
      },
      180_000,
      instances,
    );
    const survivor = instances.find((i) => i !== owner())!;
    if (standby) await until('the standby copy to hold every key', async () => (await standbyKeys(survivor)) >= keys, 180_000, instances);

    // The output, watched from now: its first record at or after the kill is the survivor's.
    output = kafka.consumer({ groupId: `${id}.watch`, maxWaitTimeInMs: 50 });
    await output.connect();
    await output.subscribe({ topic: topics.outputTopic, fromBeginning: false });
    let killedAt = Number.POSITIVE_INFINITY;
    let firstAfter: number | undefined;
    let seen = 0;
    await output.run({
      eachMessage: async ({ message }) => {
        seen++;
        if (firstAfter === undefined && Number(message.timestamp) >= killedAt) firstAfter = Date.now();
      },
    });
    flow = trickle(producer, topics.inputTopic, run * 1000);
    await until('the owner to predict the trickle', () => seen > 50, 60_000, instances);

    const dead = owner()!;
    killedAt = Date.now();
    dead.child.kill('SIGKILL');
    await until('the survivor to predict', () => firstAfter !== undefined, 180_000, instances);
    const assigned = logged<{ partitions: number[] }>(survivor, 'partitions assigned').find((a) => a.time >= killedAt && a.partitions.includes(0));
    const restored = logged<{ seconds: number; messages: number; fromStandby: number[] }>(survivor, 'state restored').find((r) => r.time >= killedAt);
    if (!assigned || !restored) throw new Error('the survivor logged no assignment or restore after the kill');
    if (standby !== restored.fromStandby.includes(0)) throw new Error(`the survivor restored ${restored.fromStandby.length ? 'from' : 'without'} a standby copy`);
    return {
      standby,
      assignedSeconds: (assigned.time - killedAt) / 1000,
      restoreSeconds: restored.seconds,
      changelogRecordsRead: restored.messages,
      firstPredictionSeconds: (firstAfter! - killedAt) / 1000,
    };
  } finally {
    await flow?.stop();
    await output?.disconnect();
    await producer.disconnect();
    for (const i of instances) i.child.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const broker = await benchBroker();
  try {
    const kafka = new Kafka({ clientId: 'rnnstream-bench-failover', brokers: broker.list.split(','), logLevel: logLevel.NOTHING });
    const outcomes: Outcome[] = [];
    for (let r = 0; r < runs; r++) {
      for (const standby of [false, true]) {
        const o = await once(kafka, broker.list, standby, outcomes.length);
        outcomes.push(o);
        process.stderr.write(
          `  ${standby ? 'with standby   ' : 'without standby'}: given the partition ${o.assignedSeconds.toFixed(2)} s after the kill, restore ${o.restoreSeconds.toFixed(2)} s (${o.changelogRecordsRead} changelog records read), first prediction ${o.firstPredictionSeconds.toFixed(2)} s after the kill\n`,
        );
      }
    }
    const of = (standby: boolean, f: (o: Outcome) => number): number => median(outcomes.filter((o) => o.standby === standby).map(f));
    const summary = {
      broker: broker.kind,
      keys,
      sessionTimeoutMs: SESSION_TIMEOUT_MS,
      runs: outcomes,
      median: Object.fromEntries(
        [false, true].map((s) => [
          s ? 'withStandby' : 'withoutStandby',
          { assignedSeconds: of(s, (o) => o.assignedSeconds), restoreSeconds: of(s, (o) => o.restoreSeconds), firstPredictionSeconds: of(s, (o) => o.firstPredictionSeconds) },
        ]),
      ),
    };
    if (args.includes('--json')) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else {
      const m = summary.median as Record<string, { assignedSeconds: number; restoreSeconds: number; firstPredictionSeconds: number }>;
      const line = (name: string, x: { assignedSeconds: number; restoreSeconds: number; firstPredictionSeconds: number }): string =>
        `| ${name} | ${x.assignedSeconds.toFixed(2)} | ${x.restoreSeconds.toFixed(2)} | ${x.firstPredictionSeconds.toFixed(2)} |\n`;
      process.stdout.write(
        `failover of one partition of ${keys} ball keys on ${broker.kind}, kill -9 of its owner, session timeout ${SESSION_TIMEOUT_MS / 1000} s, median of ${runs}:\n\n` +
          `| | given the partition (s after the kill) | restore (s) | first prediction (s after the kill) |\n|---|---|---|---|\n` +
          line('without standby', m.withoutStandby!) +
          line('with --standby-replicas 1', m.withStandby!),
      );
    }
  } finally {
    broker.stop();
  }
  process.exit(0);
}

await main();
