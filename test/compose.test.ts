/**
 * docker-compose.yml runs the broker and the service the way the tests do, and cannot drift:
 * its Kafka nodes carry scripts/kafka.mjs's BROKER_SETTINGS(3) and COMBINED_NODE_SETTINGS as
 * the apache/kafka image's KAFKA_* variables, its image is kafka/pom.xml's version, and the
 * service's environment resolves through the service's own config loader to the same
 * replication and the same brokers. No Docker engine is needed to check it.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { projectPath } from '../src/paths.js';
import { resolveServiceConfig, SERVICE_ENVIRONMENT_VARIABLES } from '../src/service/config.js';

interface KafkaScript {
  BROKER_SETTINGS(nodes: number): Record<string, string>;
  COMBINED_NODE_SETTINGS: Record<string, string>;
  kafkaVersion(): string;
}
interface ComposeService {
  image?: string;
  build?: unknown;
  environment?: Record<string, string | number>;
  command?: string[];
  ports?: string[];
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
}

const kafkaScript = (await import(projectPath('scripts', 'kafka.mjs'))) as KafkaScript;
const composeText = readFileSync(projectPath('docker-compose.yml'), 'utf8');
// Compose resolves YAML merge keys (<<: *anchor); so must the check.
const compose = parse(composeText, { merge: true }) as { services: Record<string, ComposeService> };
const services = compose.services;
const kafkaNodes = Object.entries(services).filter(([name]) => /^kafka-\d+$/.test(name));

/** The apache/kafka image's variable for a server property: KAFKA_ + upper case, dots as underscores. */
const imageVariable = (property: string): string => `KAFKA_${property.toUpperCase().replace(/_/g, '___').replace(/-/g, '__').replace(/\./g, '_')}`;
const env = (s: ComposeService): Record<string, string> => Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));

// Per-node topology: names and addresses differ between compose and the jar cluster by nature.
const TOPOLOGY = new Set(['KAFKA_NODE_ID', 'KAFKA_CONTROLLER_QUORUM_VOTERS', 'KAFKA_LISTENERS', 'KAFKA_ADVERTISED_LISTENERS', 'KAFKA_LISTENER_SECURITY_PROTOCOL_MAP']);

describe('docker-compose.yml agrees with scripts/kafka.mjs', () => {
  it('runs three KRaft nodes of the Kafka version in kafka/pom.xml', () => {
    expect(kafkaNodes.map(([n]) => n)).toEqual(['kafka-1', 'kafka-2', 'kafka-3']);
    for (const [, node] of kafkaNodes) expect(node.image).toBe(`apache/kafka:${kafkaScript.kafkaVersion()}`);
  });

  it('gives every node exactly the broker settings the tests run with, and no others', () => {
    const expected = { ...kafkaScript.COMBINED_NODE_SETTINGS, ...kafkaScript.BROKER_SETTINGS(kafkaNodes.length) };
    const expectedVariables = Object.fromEntries(Object.entries(expected).map(([k, v]) => [imageVariable(k), v]));
    for (const [name, node] of kafkaNodes) {
      const tuning = Object.fromEntries(Object.entries(env(node)).filter(([k]) => k.startsWith('KAFKA_') && !TOPOLOGY.has(k)));
      expect(tuning, name).toEqual(expectedVariables);
    }
  });

  it('forms one quorum: distinct node ids, every node a voter, one cluster id', () => {
    const ids = kafkaNodes.map(([, n]) => env(n).KAFKA_NODE_ID);
    expect(new Set(ids).size).toBe(kafkaNodes.length);
    const voters = kafkaNodes.map(([name, n]) => `${env(n).KAFKA_NODE_ID}@${name}:9093`).join(',');
    for (const [, n] of kafkaNodes) {
      expect(env(n).KAFKA_CONTROLLER_QUORUM_VOTERS).toBe(voters);
      expect(env(n).CLUSTER_ID).toBe(env(kafkaNodes[0]![1]).CLUSTER_ID);
    }
  });

  it("configures the service through its own config loader: every node, the tests' replication", () => {
    const service = services.rnnstream!;
    const variables = env(service);
    for (const name of Object.keys(variables)) expect(SERVICE_ENVIRONMENT_VARIABLES, `${name} is not read by the service`).toContain(name);
    const { config } = resolveServiceConfig({ env: variables });
    const internal = kafkaNodes.map(([name, n]) => {
      const advertised = env(n).KAFKA_ADVERTISED_LISTENERS!.split(',').find((l) => l.startsWith('PLAINTEXT://'))!;
      expect(advertised.startsWith(`PLAINTEXT://${name}:`)).toBe(true);
      return advertised.slice('PLAINTEXT://'.length);
    });
    expect(config.brokers).toEqual(internal);
    expect(config.replicationFactor).toBe(Number(kafkaScript.BROKER_SETTINGS(kafkaNodes.length)['default.replication.factor']));
    expect(Object.keys(service.depends_on ?? {}).sort()).toEqual(kafkaNodes.map(([n]) => n));
    // The health check and the published port are the port the service listens on.
    expect(service.ports).toContain(String(config.http.port));
    expect(service.healthcheck?.test.join(' ')).toContain(`127.0.0.1:${config.http.port}/healthz`);
    // The fixture producer talks to the same brokers.
    const produce = services.produce!.command!;
    expect(produce[produce.indexOf('--brokers') + 1]).toBe(internal.join(','));
  });

  it('leaves topic creation to the service (compacted changelog, partitioned like the input), as in the tests', () => {
    expect(composeText).not.toMatch(/kafka-topics(\.sh)? [^\n]*--create/);
    expect(Object.keys(services).sort()).toEqual([...kafkaNodes.map(([n]) => n), 'produce', 'rnnstream'].sort());
  });
});

describe('scripts/kafka.mjs', () => {
  it("makes cluster ids the storage tool accepts: never starting with '-' (read as an option)", async () => {
    const { clusterId } = (await import(projectPath('scripts', 'kafka.mjs'))) as { clusterId: () => string };
    // 1 in 64 of Kafka's base64url ids starts with '-'; 5,000 draws all but surely include such a start.
    const ids = Array.from({ length: 5000 }, clusterId);
    expect(ids.every((id) => /^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/.test(id))).toBe(true);
  });
});
