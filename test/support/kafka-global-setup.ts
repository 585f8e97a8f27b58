/**
 * Starts the Kafka broker the integration tests run against, in this order of preference:
 * 1. KAFKA_BROKERS, when set (a real cluster the caller runs);
 * 2. a Kafka container (testcontainers, apache/kafka) where a Docker engine answers;
 * 3. librdkafka's built-in mock cluster, started from Debian's `kcat` (what CI here uses).
 * Never skipped: with none of these, the setup fails and says what to install.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string;
    kafkaKind: string;
  }
}

function startMockCluster(): Promise<{ brokers: string; child: ChildProcess }> {
  return new Promise((resolve, reject) => {
    const child = spawn('kcat', ['-X', 'test.mock.num.brokers=3', '-b', 'localhost:1', '-C', '-t', '_probe', '-d', 'mock'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let seen = '';
    const timer = setTimeout(() => reject(new Error('kcat did not print the mock cluster address within 10 s')), 10_000);
    child.on('error', (err) => reject(new Error(`cannot start kcat (apt-get install kcat): ${err.message}`)));
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

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.KAFKA_BROKERS) {
    project.provide('kafkaBrokers', process.env.KAFKA_BROKERS);
    project.provide('kafkaKind', 'KAFKA_BROKERS');
    return async () => {};
  }
  if (dockerAvailable()) {
    const { KafkaContainer } = await import('@testcontainers/kafka');
    const container = await new KafkaContainer('apache/kafka:3.9.1').withKraft().start();
    project.provide('kafkaBrokers', `${container.getHost()}:${container.getMappedPort(9093)}`);
    project.provide('kafkaKind', 'testcontainers apache/kafka');
    return async () => {
      await container.stop();
    };
  }
  const { brokers, child } = await startMockCluster();
  project.provide('kafkaBrokers', brokers);
  project.provide('kafkaKind', 'librdkafka mock cluster (kcat)');
  return async () => {
    child.kill('SIGKILL');
  };
}
