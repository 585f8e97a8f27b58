/** The broker a Kafka benchmark runs on (bench:kafka, bench:restore). */
import { projectPath } from '../src/paths.js';

type KafkaBroker = typeof import('../scripts/kafka-broker.mjs');

/** KAFKA_BROKERS when set; else one KRaft node of the jar broker; the kcat mock only without java. */
export async function benchBroker(): Promise<{ list: string; kind: string; stop: () => void }> {
  if (process.env.KAFKA_BROKERS) return { list: process.env.KAFKA_BROKERS, kind: 'KAFKA_BROKERS', stop: () => {} };
  const { javaAvailable, startJarCluster, startMockCluster } = (await import(projectPath('scripts', 'kafka-broker.mjs'))) as KafkaBroker;
  if (javaAvailable()) {
    const cluster = await startJarCluster({ nodes: 1 });
    const list = cluster.values.KAFKA_BROKERS;
    if (!list) throw new Error('scripts/kafka.mjs printed no KAFKA_BROKERS line');
    return { list, kind: `Apache Kafka ${cluster.values.KAFKA_VERSION} (jar broker, 1 node)`, stop: () => cluster.stop() };
  }
  process.stderr.write("bench: no java, so on librdkafka's mock cluster (kcat), which is not a real broker; install Java 17 and run `mvn -f kafka/pom.xml dependency:copy-dependencies`\n");
  const mock = await startMockCluster();
  return { list: mock.brokers, kind: 'librdkafka mock cluster (kcat, 3 brokers)', stop: () => mock.stop() };
}
