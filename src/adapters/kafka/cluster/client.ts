/**
 * Builds the kafkajs client from the service configuration: brokers, TLS, SASL, and kafkajs's
 * own logs routed into our logger (never its console logger). Credentials go to kafkajs only.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Kafka, logLevel as KafkaLogLevel, Partitioners, type KafkaConfig, type LogEntry, type ProducerConfig, type SASLOptions } from 'kafkajs';
import { UsageError } from '../../../core/errors.js';
import type { Logger } from '../../../observability/logger.js';
import { RepeatLimiter } from '../../../observability/repeat-limiter.js';

export interface KafkaConnection {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly ssl: { enabled: boolean; ca?: string | undefined; cert?: string | undefined; key?: string | undefined; rejectUnauthorized: boolean };
  readonly sasl?: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string } | undefined;
  readonly saslPassword?: string | undefined;
}

// kafkajs's table of broker error codes (not exported by name; kafkajs is pinned at 2.2.4).
const { errorCodes } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as { errorCodes: { message: string; retriable: boolean }[] };

/** Messages of the broker errors kafkajs retries (a group's coordinator loading, a leader moving, ...). */
export const RETRIABLE_BROKER_ERRORS: ReadonlySet<string> = new Set(errorCodes.filter((e) => e.retriable).map((e) => e.message));

const NETWORK_ERROR = /^(connect )?E(CONNREFUSED|CONNRESET|TIMEDOUT|HOSTUNREACH|NETUNREACH|PIPE)\b|^Connection (error|timeout)|^Closed connection/;

/**
 * The level a kafkajs ERROR entry deserves. kafkajs logs every error response at ERROR, those it
 * then retries too: a fresh cluster's "coordinator is loading" at every start, each request to a
 * leader that just moved. Those go to debug; what outlasts kafkajs's retries reaches our callers,
 * which log it. A refused or reset connection, and kafkajs's own "restarting in N ms", are
 * warnings. The rest stay errors.
 */
export function kafkajsErrorLevel(fields: Record<string, unknown>): 'error' | 'warn' | 'debug' {
  const text =
    typeof fields.error === 'string' ? fields.error : typeof fields.stack === 'string' ? fields.stack.split('\n')[0]!.replace(/^\w+: /, '') : undefined;
  if (text !== undefined && RETRIABLE_BROKER_ERRORS.has(text)) return 'debug';
  // A connection kafkajs will try again (an outage: /healthz says so too).
  if (text !== undefined && NETWORK_ERROR.test(text)) return 'warn';
  if (text === undefined && 'retryTime' in fields) return 'warn';
  return 'error';
}

function kafkaLogCreator(logger: Logger) {
  // One limiter per client: each of its lines (message, error, broker) once per 10 s at most.
  const repeats = new RepeatLimiter();
  return () =>
    ({ level, log }: LogEntry): void => {
      const { message, ...fields } = log;
      const as = level === KafkaLogLevel.ERROR ? kafkajsErrorLevel(fields) : level === KafkaLogLevel.WARN ? 'warn' : level === KafkaLogLevel.INFO ? 'debug' : undefined;
      if (!as) return;
      let heldBack = 0;
      if (as !== 'debug') {
        const admitted = repeats.admit(`${as}|${message}|${String(fields.error ?? '')}|${String(fields.broker ?? '')}`);
        if (admitted === undefined) return;
        heldBack = admitted;
      }
      const entry = { component: 'kafkajs', ...fields, ...(heldBack ? { repeatsHeldBack: heldBack } : {}) };
      logger[as](entry, message);
    };
}

/** A TLS file's text; a missing or unreadable one is a usage error naming the setting (never the contents). */
function readTlsFile(setting: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${setting} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}

export function createKafka(c: KafkaConnection, logger: Logger): Kafka {
  const ssl = c.ssl.enabled && {
    rejectUnauthorized: c.ssl.rejectUnauthorized,
    ...(c.ssl.ca ? { ca: [readTlsFile('ssl.ca', c.ssl.ca)] } : {}),
    ...(c.ssl.cert ? { cert: readTlsFile('ssl.cert', c.ssl.cert) } : {}),
    ...(c.ssl.key ? { key: readTlsFile('ssl.key', c.ssl.key) } : {}),
  };
  const config: KafkaConfig = {
    clientId: c.clientId,
    brokers: [...c.brokers],
    ssl,
    logLevel: KafkaLogLevel.INFO,
    logCreator: kafkaLogCreator(logger),
    retry: { initialRetryTime: 100, retries: 8, maxRetryTime: 5000 },
    ...(c.sasl && c.saslPassword ? { sasl: { mechanism: c.sasl.mechanism, username: c.sasl.username, password: c.saslPassword } as SASLOptions } : {}),
  };
  return new Kafka(config);
}

/**
 * The producer settings every rnnstream producer uses. kafkajs's default (murmur2,
 * Java-compatible) partitioner, chosen explicitly: keys land where a Java producer would put
 * them, and the changelog can use the input's partition numbers. One request in flight, so a
 * retried request cannot overtake a later one (per-key order).
 *
 * Retries outlast a broker failover: a killed broker stays the leader in the metadata until the
 * controller fences it (broker.session.timeout.ms, 9 s by default) and elects another, and
 * kafkajs's default of 5 retries (about 3 s) gave up before that (found on a real 3-node
 * cluster; the mock cluster never fails over). 10 retries from 300 ms, capped at 5 s, wait about 25 s.
 */
export const PRODUCER_CONFIG: ProducerConfig = Object.freeze({
  // The service's topics are made by its admin path only (topics.ts), with their policies: a
  // producer that created a deleted changelog again made it with cleanup.policy=delete, and the
  // state written there would have gone after retention.ms.
  allowAutoTopicCreation: false,
  maxInFlightRequests: 1,
  createPartitioner: Partitioners.DefaultPartitioner,
  retry: { retries: 10, initialRetryTime: 300 },
});
