/**
 * Starts the Kafka cluster the integration tests run against, in this order of preference, and
 * prints which one it chose:
 * 1. KAFKA_BROKERS, when set (a cluster the caller runs; KAFKA_CLUSTER_DIR, when it is one that
 *    scripts/kafka.mjs started, lets the failover tests kill and restart its brokers);
 * 2. a Kafka container (testcontainers, apache/kafka) where a Docker engine answers;
 * 3. Apache Kafka's own broker from the jars kafka/pom.xml resolves, where `java` exists: three
 *    KRaft nodes with a SASL_SSL listener, started by scripts/kafka.mjs (what CI here uses);
 * 4. librdkafka's mock cluster from Debian's `kcat`, as a last resort. It has no CreateTopics,
 *    compaction or transactions, so the tests that need them fail there, and in CI (CI=true)
 *    the setup refuses it outright.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { projectPath } from '../../src/paths.js';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string;
    kafkaKind: string;
    /** scripts/kafka.mjs's folder for the cluster, or '' when the tests cannot kill its brokers. */
    kafkaClusterDir: string;
    /** The SASL_SSL listener (SCRAM-SHA-512 over TLS), or '' where the cluster has none. */
    kafkaSaslBrokers: string;
    kafkaCaFile: string;
    kafkaSaslUsername: string;
    kafkaSaslPasswordFile: string;
  }
}

const execFileAsync = promisify(execFile);
const kafkaScript = projectPath('scripts', 'kafka.mjs');

function startMockCluster(): Promise<{ brokers: string; child: ChildProcess }> {
  return new Promise((resolve, reject) => {
    const child = spawn('kcat', ['-X', 'test.mock.num.brokers=3', '-b', 'localhost:1', '-C', '-t', '_probe', '-d', 'mock'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let seen = '';
    const timer = setTimeout(() => reject(new Error('kcat did not print the mock cluster address within 10 s')), 10_000);
    child.on('error', (err) => reject(new Error(`no Kafka for the integration tests: no KAFKA_BROKERS, no Docker engine, no java, and kcat cannot start (${err.message})`)));
    child.stderr!.on('data', (d: Buffer) => {
      seen += d.toString();
      const m = /bootstrap\.servers=(\S+)/.exec(seen);
      if (m) {
        clearTimeout(timer);
        seen = '';
        child.stderr!.removeAllListeners('data');
        child.stderr!.resume();
        resolve({ brokers: m[1]!, child });
      }
    });
  });
}

function dockerAvailable(): boolean {
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return false;
  return spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

const javaAvailable = (): boolean => spawnSync('java', ['-version'], { stdio: 'ignore' }).status === 0;

/** `KEY=value` lines of scripts/kafka.mjs's stdout. */
const parseLines = (stdout: string): Record<string, string> =>
  Object.fromEntries(stdout.split('\n').flatMap((l) => {
    const m = /^([A-Z_]+)=(.*)$/.exec(l);
    return m ? [[m[1]!, m[2]!]] : [];
  }));

async function startJarCluster(): Promise<{ values: Record<string, string>; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'rnnstream-kafka-cluster-'));
  try {
    const { stdout } = await execFileAsync(process.execPath, [kafkaScript, 'start', '--brokers', '3', '--dir', dir, '--sasl'], { timeout: 240_000 });
    return { values: parseLines(stdout), dir };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`could not start the Kafka jar cluster (scripts/kafka.mjs): ${e.stderr?.trim() || e.message}`);
  }
}

function provideAll(project: TestProject, p: Partial<Record<keyof import('vitest').ProvidedContext, string>>): void {
  project.provide('kafkaBrokers', p.kafkaBrokers ?? '');
  project.provide('kafkaKind', p.kafkaKind ?? '');
  project.provide('kafkaClusterDir', p.kafkaClusterDir ?? '');
  project.provide('kafkaSaslBrokers', p.kafkaSaslBrokers ?? '');
  project.provide('kafkaCaFile', p.kafkaCaFile ?? '');
  project.provide('kafkaSaslUsername', p.kafkaSaslUsername ?? '');
  project.provide('kafkaSaslPasswordFile', p.kafkaSaslPasswordFile ?? '');
}

const say = (line: string): void => void process.stderr.write(`[kafka] ${line}\n`);

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.KAFKA_BROKERS) {
    const env = process.env;
    say(`integration tests on KAFKA_BROKERS=${env.KAFKA_BROKERS}`);
    provideAll(project, {
      kafkaBrokers: env.KAFKA_BROKERS,
      kafkaKind: 'KAFKA_BROKERS',
      kafkaClusterDir: env.KAFKA_CLUSTER_DIR,
      kafkaSaslBrokers: env.KAFKA_SASL_BROKERS,
      kafkaCaFile: env.KAFKA_CA,
      kafkaSaslUsername: env.KAFKA_SASL_USERNAME,
      kafkaSaslPasswordFile: env.KAFKA_SASL_PASSWORD_FILE,
    });
    return async () => {};
  }
  if (dockerAvailable()) {
    const { KafkaContainer } = await import('@testcontainers/kafka');
    const { kafkaVersion } = (await import(kafkaScript)) as { kafkaVersion: () => string };
    const image = `apache/kafka:${kafkaVersion()}`;
    say(`integration tests on a testcontainers ${image} (single node: the failover and SASL tests are skipped)`);
    const container = await new KafkaContainer(image).withKraft().start();
    provideAll(project, { kafkaBrokers: `${container.getHost()}:${container.getMappedPort(9093)}`, kafkaKind: `testcontainers ${image}` });
    return async () => {
      await container.stop();
    };
  }
  if (javaAvailable()) {
    const started = performance.now();
    const { values, dir } = await startJarCluster();
    say(`integration tests on Apache Kafka ${values.KAFKA_VERSION} from the jars: 3 KRaft nodes at ${values.KAFKA_BROKERS} (started in ${((performance.now() - started) / 1000).toFixed(1)} s, ${dir})`);
    provideAll(project, {
      kafkaBrokers: values.KAFKA_BROKERS,
      kafkaKind: `Apache Kafka ${values.KAFKA_VERSION} (jar broker, 3 nodes)`,
      kafkaClusterDir: dir,
      kafkaSaslBrokers: values.KAFKA_SASL_BROKERS,
      kafkaCaFile: values.KAFKA_CA,
      kafkaSaslUsername: values.KAFKA_SASL_USERNAME,
      kafkaSaslPasswordFile: values.KAFKA_SASL_PASSWORD_FILE,
    });
    return async () => {
      spawnSync(process.execPath, [kafkaScript, 'stop', '--dir', dir], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    };
  }
  if (process.env.CI === 'true') throw new Error('CI needs a real Kafka broker: java is missing (and no KAFKA_BROKERS or Docker engine); see .ci/run');
  say('LAST RESORT: librdkafka mock cluster (kcat); no CreateTopics, compaction or transactions, so the tests that need them fail here. Install Java 17 for the real broker.');
  const { brokers, child } = await startMockCluster();
  provideAll(project, { kafkaBrokers: brokers, kafkaKind: 'librdkafka mock cluster (kcat)' });
  return async () => {
    child.kill('SIGKILL');
  };
}
