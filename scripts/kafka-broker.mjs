/**
 * The Kafka cluster a test run or a benchmark starts for itself, in one place, so that the
 * integration tests' setup and `npm run bench:kafka` start it the same way:
 *
 * - startJarCluster: Apache Kafka's own broker from kafka/libs, run by scripts/kafka.mjs in a
 *   fresh temporary folder; stop() ends the JVMs and removes the folder.
 * - startMockCluster: librdkafka's mock cluster (Debian's kcat), the last resort where there is
 *   no java. It has no CreateTopics, compaction or transactions, and drops the oldest data past
 *   about 5 MiB per partition, so what runs on it proves less; callers say so.
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const kafkaScript = join(resolve(dirname(fileURLToPath(import.meta.url))), 'kafka.mjs');

export const javaAvailable = () => spawnSync('java', ['-version'], { stdio: 'ignore' }).status === 0;

/** `KEY=value` lines of scripts/kafka.mjs's stdout. */
export const parseKeyValueLines = (stdout) =>
  Object.fromEntries(
    stdout.split('\n').flatMap((l) => {
      const m = /^([A-Z_]+)=(.*)$/.exec(l);
      return m ? [[m[1], m[2]]] : [];
    }),
  );

/**
 * Starts `nodes` KRaft nodes (with a SASL_SSL listener when `sasl`) and resolves once the cluster
 * answers metadata. `values` holds scripts/kafka.mjs's KAFKA_* lines (KAFKA_BROKERS, KAFKA_VERSION,
 * and with sasl KAFKA_SASL_BROKERS, KAFKA_CA, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD_FILE).
 */
export async function startJarCluster({ nodes, sasl = false, timeoutMs = 240_000 }) {
  const dir = mkdtempSync(join(tmpdir(), 'rnnstream-kafka-cluster-'));
  const args = [kafkaScript, 'start', '--brokers', String(nodes), '--dir', dir, ...(sasl ? ['--sasl'] : [])];
  const started = performance.now();
  let stdout;
  try {
    ({ stdout } = await execFileAsync(process.execPath, args, { timeout: timeoutMs }));
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start the Kafka jar cluster (scripts/kafka.mjs): ${err.stderr?.trim() || err.message}`);
  }
  return {
    values: parseKeyValueLines(stdout),
    dir,
    startSeconds: (performance.now() - started) / 1000,
    stop: () => {
      spawnSync(process.execPath, [kafkaScript, 'stop', '--dir', dir], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** librdkafka's mock cluster with 3 brokers; resolves with its bootstrap list. */
export function startMockCluster() {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('kcat', ['-X', 'test.mock.num.brokers=3', '-b', 'localhost:1', '-C', '-t', '_probe', '-d', 'mock'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let seen = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('kcat did not print the mock cluster address within 10 s'));
    }, 10_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`kcat cannot start the mock cluster: ${err.message}`));
    });
    child.stderr.on('data', (d) => {
      seen += d.toString();
      const m = /bootstrap\.servers=(\S+)/.exec(seen);
      if (m) {
        clearTimeout(timer);
        seen = '';
        child.stderr.removeAllListeners('data');
        child.stderr.resume();
        resolvePromise({ brokers: m[1], stop: () => child.kill('SIGKILL') });
      }
    });
  });
}
