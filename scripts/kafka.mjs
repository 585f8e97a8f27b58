#!/usr/bin/env node
/**
 * A real Apache Kafka cluster (KRaft, combined broker+controller nodes) on 127.0.0.1, run from the
 * jars that kafka/pom.xml resolves from Maven Central. No Docker engine needed; Java 17 is.
 *
 *   node scripts/kafka.mjs start   --brokers N --dir DIR [--sasl]
 *   node scripts/kafka.mjs kill    --dir DIR --broker K      SIGKILL broker K (1-based)
 *   node scripts/kafka.mjs restart --dir DIR --broker K      start it again, same ports and data
 *   node scripts/kafka.mjs stop    --dir DIR                 end every broker of the cluster
 *
 * `start` formats KRaft storage (kafka.tools.StorageTool), starts the nodes on free ports with
 * small heaps, waits until the cluster answers metadata with every broker, and returns with the
 * brokers running (pid files and logs in DIR). Its last stdout line is `KAFKA_BROKERS=h:p,...`.
 *
 * `--sasl` adds a second listener per node: SASL_SSL with SCRAM-SHA-512, a TLS certificate signed
 * by a CA made here (openssl), and one SCRAM user created at format time. Lines before the last
 * one then give KAFKA_SASL_BROKERS, KAFKA_CA (the CA's PEM), KAFKA_SASL_USERNAME and
 * KAFKA_SASL_PASSWORD_FILE; the password itself is never printed.
 *
 * The broker settings live in one place, BROKER_SETTINGS (exported, with the version), so that
 * docker-compose.yml can be checked against them (test/compose.test.ts).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const KAFKA_DIR = join(root, 'kafka');
export const LIBS = join(KAFKA_DIR, 'libs');

/** The Kafka version of kafka/pom.xml (and docker-compose.yml's image tag). */
export function kafkaVersion() {
  const pom = readFileSync(join(KAFKA_DIR, 'pom.xml'), 'utf8');
  const m = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom);
  if (!m) throw new Error('kafka/pom.xml has no <kafka.version>');
  return m[1];
}

/**
 * Broker settings that depend only on the cluster size: what the tests, the benchmarks and
 * docker-compose.yml all run with. Replication 3 and min.insync.replicas 2 on a 3-node cluster,
 * so one broker can die without stopping a producer that asks for acks=all.
 */
export function BROKER_SETTINGS(nodes) {
  const rf = Math.min(3, nodes);
  const isr = Math.min(2, rf);
  return {
    'num.partitions': '4',
    'default.replication.factor': String(rf),
    'min.insync.replicas': String(isr),
    'offsets.topic.replication.factor': String(rf),
    'offsets.topic.num.partitions': '10',
    'transaction.state.log.replication.factor': String(rf),
    'transaction.state.log.min.isr': String(isr),
    'transaction.state.log.num.partitions': '10',
    'group.initial.rebalance.delay.ms': '0',
    'auto.create.topics.enable': 'true',
    // Small segments and a quick cleaner, so a test can watch compaction happen.
    'log.cleaner.backoff.ms': '1000',
    'log.segment.bytes': String(16 * 1024 * 1024),
    'unclean.leader.election.enable': 'false',
  };
}

/** What makes each node a combined KRaft broker + controller (docker-compose.yml's nodes too). */
export const COMBINED_NODE_SETTINGS = {
  'process.roles': 'broker,controller',
  'controller.listener.names': 'CONTROLLER',
  'inter.broker.listener.name': 'PLAINTEXT',
};

const JVM_HEAP = '512m';

function usage(message) {
  if (message) process.stderr.write(`kafka.mjs: ${message}\n`);
  process.stderr.write('usage: node scripts/kafka.mjs start --brokers N --dir DIR [--sasl] | kill --dir DIR --broker K | restart --dir DIR --broker K | stop --dir DIR\n');
  process.exit(2);
}

function parseArgs(argv) {
  const [command, ...rest] = argv;
  const opts = { command, sasl: false };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === '--sasl') opts.sasl = true;
    else if (a === '--brokers' || a === '--dir' || a === '--broker') {
      const v = rest[++i];
      if (v === undefined) usage(`${a} needs a value`);
      opts[a.slice(2)] = v;
    } else usage(`unknown argument ${a}`);
  }
  return opts;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Resolves the broker jars through Maven when kafka/libs is missing (CI does it up front). */
export function ensureJars() {
  if (existsSync(LIBS) && readdirSync(LIBS).some((f) => f.startsWith('kafka_2.13-'))) return;
  process.stderr.write('kafka.mjs: resolving the Kafka broker jars through Maven (kafka/pom.xml)\n');
  execFileSync('mvn', ['-q', '-f', join(KAFKA_DIR, 'pom.xml'), 'dependency:copy-dependencies'], { stdio: ['ignore', 'inherit', 'inherit'] });
}

function javaArgs(cluster, k, main, args, heap = JVM_HEAP) {
  return [
    `-Xms${heap}`,
    `-Xmx${heap}`,
    '-XX:+UseG1GC',
    '-XX:MaxGCPauseMillis=20',
    '-Djava.awt.headless=true',
    `-Dlog4j2.configurationFile=${join(cluster.dir, 'log4j2.properties')}`,
    `-Dkafka.logs.dir=${join(cluster.dir, `broker-${k}`)}`,
    '-cp',
    `${LIBS}/*`,
    main,
    ...args,
  ];
}

const LOG4J2 = `status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.server.name = org.apache.kafka
logger.server.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
`;

function serverProperties(cluster, k) {
  const node = cluster.nodes[k - 1];
  const voters = cluster.nodes.map((n, i) => `${i + 1}@127.0.0.1:${n.controllerPort}`).join(',');
  const listeners = [`PLAINTEXT://127.0.0.1:${node.port}`, `CONTROLLER://127.0.0.1:${node.controllerPort}`];
  const advertised = [`PLAINTEXT://127.0.0.1:${node.port}`];
  const protocols = ['PLAINTEXT:PLAINTEXT', 'CONTROLLER:PLAINTEXT'];
  const props = {
    ...COMBINED_NODE_SETTINGS,
    'node.id': String(k),
    'controller.quorum.voters': voters,
    'log.dirs': join(cluster.dir, `broker-${k}`, 'data'),
    ...BROKER_SETTINGS(cluster.nodes.length),
  };
  if (cluster.sasl) {
    listeners.push(`SASL_SSL://127.0.0.1:${node.saslPort}`);
    advertised.push(`SASL_SSL://127.0.0.1:${node.saslPort}`);
    protocols.push('SASL_SSL:SASL_SSL');
    Object.assign(props, {
      'sasl.enabled.mechanisms': 'SCRAM-SHA-512',
      'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config': 'org.apache.kafka.common.security.scram.ScramLoginModule required;',
      'ssl.keystore.type': 'PEM',
      'ssl.keystore.location': join(cluster.dir, 'tls', 'broker.pem'),
      'ssl.client.auth': 'none',
    });
  }
  props.listeners = listeners.join(',');
  props['advertised.listeners'] = advertised.join(',');
  props['listener.security.protocol.map'] = protocols.join(',');
  return Object.entries(props).map(([key, v]) => `${key}=${v}`).join('\n') + '\n';
}

/** A CA and a broker certificate for 127.0.0.1 and localhost, made with openssl. */
function makeTls(dir) {
  const tls = join(dir, 'tls');
  mkdirSync(tls, { recursive: true });
  const run = (args) => execFileSync('openssl', args, { cwd: tls, stdio: ['ignore', 'ignore', 'pipe'] });
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30', '-subj', '/CN=rnnstream test CA', '-keyout', 'ca.key', '-out', 'ca.pem']);
  run(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'broker.key']);
  run(['req', '-new', '-key', 'broker.key', '-subj', '/CN=127.0.0.1', '-out', 'broker.csr']);
  writeFileSync(join(tls, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run(['x509', '-req', '-in', 'broker.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '30', '-extfile', 'san.ext', '-out', 'broker.crt']);
  // Kafka's PEM key store: the PKCS#8 private key, then the certificate chain.
  const key = execFileSync('openssl', ['pkcs8', '-topk8', '-nocrypt', '-in', 'broker.key'], { cwd: tls });
  writeFileSync(join(tls, 'broker.pem'), Buffer.concat([key, readFileSync(join(tls, 'broker.crt')), readFileSync(join(tls, 'ca.pem'))]));
  for (const f of ['ca.key', 'broker.key', 'broker.pem']) chmodSync(join(tls, f), 0o600);
}

const clusterFile = (dir) => join(dir, 'cluster.json');
const pidFile = (dir, k) => join(dir, `broker-${k}.pid`);

function loadCluster(dir) {
  if (!existsSync(clusterFile(dir))) usage(`${dir} holds no cluster (no cluster.json): run start first`);
  return JSON.parse(readFileSync(clusterFile(dir), 'utf8'));
}

/** Kafka's Uuid text form: 16 random bytes in URL-safe base64 without padding. */
/**
 * A KRaft cluster id: 16 random bytes in base64url, as Kafka's own `random-uuid` makes them, but
 * never starting with '-', which the storage tool's argument parser reads as an option
 * ("--cluster-id: expected one argument"; it failed 1 start in 64, at random).
 */
export const clusterId = () => {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
};

async function format(cluster, k) {
  const args = ['format', '-t', cluster.id, '-c', join(cluster.dir, `broker-${k}`, 'server.properties'), '--ignore-formatted'];
  if (cluster.sasl) {
    const password = readFileSync(join(cluster.dir, 'sasl-password'), 'utf8').trim();
    args.push('--add-scram', `SCRAM-SHA-512=[name=${cluster.saslUser},password=${password}]`);
  }
  try {
    await execFileAsync('java', javaArgs(cluster, k, 'kafka.tools.StorageTool', args, '256m'));
  } catch (err) {
    throw new Error(`formatting broker ${k} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

function launch(cluster, k) {
  const dir = join(cluster.dir, `broker-${k}`);
  const log = openSync(join(dir, 'broker.log'), 'a');
  const child = spawn('java', javaArgs(cluster, k, 'kafka.Kafka', [join(dir, 'server.properties')]), {
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.unref();
  writeFileSync(pidFile(cluster.dir, k), `${child.pid}\n`);
}

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const readPid = (dir, k) => (existsSync(pidFile(dir, k)) ? Number(readFileSync(pidFile(dir, k), 'utf8')) : undefined);

function portOpen(port) {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** Waits until every broker's client port accepts connections and the cluster lists them all. */
async function waitReady(cluster, nodes, timeoutMs = 120_000) {
  const { Kafka, logLevel } = await import('kafkajs');
  const deadline = Date.now() + timeoutMs;
  const brokers = cluster.nodes.map((n) => `127.0.0.1:${n.port}`);
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    for (const k of nodes) {
      const pid = readPid(cluster.dir, k);
      if (pid && !alive(pid)) {
        const tail = readFileSync(join(cluster.dir, `broker-${k}`, 'broker.log'), 'utf8').split('\n').slice(-15).join('\n');
        throw new Error(`broker ${k} exited during start-up; the end of its log:\n${tail}`);
      }
    }
    const open = await Promise.all(nodes.map((k) => portOpen(cluster.nodes[k - 1].port)));
    if (open.every(Boolean)) {
      const admin = new Kafka({ clientId: 'kafka.mjs', brokers, logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
      try {
        await admin.connect();
        const { brokers: seen } = await admin.describeCluster();
        const ids = new Set(seen.map((b) => b.nodeId));
        if (nodes.every((k) => ids.has(k))) return;
        last = `metadata lists brokers ${[...ids].join(',') || 'none'}`;
      } catch (err) {
        last = err.message;
      } finally {
        await admin.disconnect().catch(() => {});
      }
    } else last = 'client ports not open yet';
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the cluster did not answer metadata within ${timeoutMs / 1000} s (${last})`);
}

async function start(opts) {
  const n = Number(opts.brokers ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 9) usage('--brokers expects an integer from 1 to 9');
  if (!opts.dir) usage('--dir is required');
  const dir = resolve(opts.dir);
  if (existsSync(clusterFile(dir))) usage(`${dir} already holds a cluster; stop it and remove the folder, or use another --dir`);
  ensureJars();
  mkdirSync(dir, { recursive: true });
  const nodes = [];
  for (let k = 0; k < n; k++) nodes.push({ port: await freePort(), controllerPort: await freePort(), saslPort: opts.sasl ? await freePort() : undefined });
  const cluster = { id: clusterId(), dir, version: kafkaVersion(), sasl: opts.sasl, saslUser: opts.sasl ? 'rnnstream' : undefined, nodes };
  writeFileSync(join(dir, 'log4j2.properties'), LOG4J2);
  if (opts.sasl) {
    makeTls(dir);
    writeFileSync(join(dir, 'sasl-password'), `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600 });
  }
  writeFileSync(clusterFile(dir), JSON.stringify(cluster, null, 2));
  for (let k = 1; k <= n; k++) {
    mkdirSync(join(dir, `broker-${k}`), { recursive: true });
    writeFileSync(join(dir, `broker-${k}`, 'server.properties'), serverProperties(cluster, k));
  }
  // Formatting is a JVM start each; do them side by side.
  await Promise.all(Array.from({ length: n }, (_, i) => format(cluster, i + 1)));
  for (let k = 1; k <= n; k++) launch(cluster, k);
  const all = Array.from({ length: n }, (_, i) => i + 1);
  try {
    await waitReady(cluster, all);
  } catch (err) {
    stop({ dir });
    throw err;
  }
  const brokers = nodes.map((x) => `127.0.0.1:${x.port}`).join(',');
  if (opts.sasl) {
    process.stdout.write(`KAFKA_SASL_BROKERS=${nodes.map((x) => `127.0.0.1:${x.saslPort}`).join(',')}\n`);
    process.stdout.write(`KAFKA_CA=${join(dir, 'tls', 'ca.pem')}\n`);
    process.stdout.write(`KAFKA_SASL_USERNAME=${cluster.saslUser}\n`);
    process.stdout.write(`KAFKA_SASL_PASSWORD_FILE=${join(dir, 'sasl-password')}\n`);
  }
  process.stdout.write(`KAFKA_VERSION=${cluster.version}\n`);
  process.stdout.write(`KAFKA_BROKERS=${brokers}\n`);
}

function brokerOf(opts, cluster) {
  const k = Number(opts.broker);
  if (!Number.isInteger(k) || k < 1 || k > cluster.nodes.length) usage(`--broker expects 1 to ${cluster.nodes.length}`);
  return k;
}

function kill(opts) {
  if (!opts.dir) usage('--dir is required');
  const cluster = loadCluster(resolve(opts.dir));
  const k = brokerOf(opts, cluster);
  const pid = readPid(cluster.dir, k);
  if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(pidFile(cluster.dir, k), { force: true });
  process.stdout.write(`killed broker ${k}\n`);
}

async function restart(opts) {
  if (!opts.dir) usage('--dir is required');
  const cluster = loadCluster(resolve(opts.dir));
  const k = brokerOf(opts, cluster);
  const pid = readPid(cluster.dir, k);
  if (pid && alive(pid)) usage(`broker ${k} is running (pid ${pid}); kill it first`);
  launch(cluster, k);
  await waitReady(cluster, [k]);
  process.stdout.write(`restarted broker ${k}\n`);
  process.stdout.write(`KAFKA_BROKERS=${cluster.nodes.map((x) => `127.0.0.1:${x.port}`).join(',')}\n`);
}

/** SIGTERM every broker (a clean shutdown), then SIGKILL whatever is left after 20 s. */
export function stop(opts) {
  if (!opts.dir) usage('--dir is required');
  const dir = resolve(opts.dir);
  const cluster = loadCluster(dir);
  const pids = cluster.nodes.map((_, i) => readPid(dir, i + 1)).filter((p) => p && alive(p));
  for (const p of pids) process.kill(p, 'SIGTERM');
  const deadline = Date.now() + 20_000;
  while (pids.some(alive) && Date.now() < deadline) execFileSync('sleep', ['0.2']);
  for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL');
  cluster.nodes.forEach((_, i) => rmSync(pidFile(dir, i + 1), { force: true }));
  process.stdout.write(`stopped ${pids.length} broker(s)\n`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  switch (opts.command) {
    case 'start':
      return start(opts);
    case 'kill':
      return kill(opts);
    case 'restart':
      return restart(opts);
    case 'stop':
      return stop(opts);
    default:
      usage(opts.command ? `unknown command ${opts.command}` : undefined);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`kafka.mjs: ${err.message}\n`);
      process.exit(1);
    },
  );
}
