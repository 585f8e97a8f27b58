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
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
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

type KafkaBroker = typeof import('../../scripts/kafka-broker.mjs');
const kafkaBroker = (): Promise<KafkaBroker> => import(projectPath('scripts', 'kafka-broker.mjs')) as Promise<KafkaBroker>;

function dockerAvailable(): boolean {
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return false;
  return spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
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
    const { kafkaVersion } = (await import(projectPath('scripts', 'kafka.mjs'))) as { kafkaVersion: () => string };
    const image = `apache/kafka:${kafkaVersion()}`;
    say(`integration tests on a testcontainers ${image} (single node: the failover and SASL tests are skipped)`);
    const container = await new KafkaContainer(image).withKraft().start();
    provideAll(project, { kafkaBrokers: `${container.getHost()}:${container.getMappedPort(9093)}`, kafkaKind: `testcontainers ${image}` });
    return async () => {
      await container.stop();
    };
  }
  const { javaAvailable, startJarCluster, startMockCluster } = await kafkaBroker();
  if (javaAvailable()) {
    const cluster = await startJarCluster({ nodes: 3, sasl: true });
    const { values } = cluster;
    say(`integration tests on Apache Kafka ${values.KAFKA_VERSION} from the jars: 3 KRaft nodes at ${values.KAFKA_BROKERS} (started in ${cluster.startSeconds.toFixed(1)} s, ${cluster.dir})`);
    provideAll(project, {
      kafkaBrokers: values.KAFKA_BROKERS,
      kafkaKind: `Apache Kafka ${values.KAFKA_VERSION} (jar broker, 3 nodes)`,
      kafkaClusterDir: cluster.dir,
      kafkaSaslBrokers: values.KAFKA_SASL_BROKERS,
      kafkaCaFile: values.KAFKA_CA,
      kafkaSaslUsername: values.KAFKA_SASL_USERNAME,
      kafkaSaslPasswordFile: values.KAFKA_SASL_PASSWORD_FILE,
    });
    return async () => cluster.stop();
  }
  if (process.env.CI === 'true') throw new Error('CI needs a real Kafka broker: java is missing (and no KAFKA_BROKERS or Docker engine); see .ci/run');
  say('LAST RESORT: librdkafka mock cluster (kcat); no CreateTopics, compaction or transactions, so the tests that need them fail here. Install Java 17 for the real broker.');
  const mock = await startMockCluster().catch((err: Error) => {
    throw new Error(`no Kafka for the integration tests: no KAFKA_BROKERS, no Docker engine, no java, and ${err.message}`);
  });
  provideAll(project, { kafkaBrokers: mock.brokers, kafkaKind: 'librdkafka mock cluster (kcat)' });
  return async () => mock.stop();
}
