/**
 * The Kafka service's configuration: one readonly object, checked once by zod. Every option can
 * come from a JSON config file, from RNNSTREAM_* environment variables, or from the command line
 * (in rising precedence). A bad value is reported with its field and where it came from; secrets
 * (the SASL password) are read from the environment or a file and never printed.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { BACKEND_NAMES } from '../backends/types.js';
import { UsageError } from '../core/errors.js';
import { describeJsonError, formatPath, parseNumberText } from '../core/validation.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../operators/decode-events.js';
import { DEFAULT_MAX_KEY_BYTES } from '../pipeline/predict.js';
import { DEAD_LETTER_RAW_BYTES } from '../pipeline/serialize.js';
import { DEFAULT_KEY_CAPACITY } from '../state/key-state-store.js';

export const GUARANTEES = ['at-least-once', 'exactly-once'] as const;
export type Guarantee = (typeof GUARANTEES)[number];

/**
 * The commit interval by guarantee, as in Kafka Streams (commit.interval.ms: 30 s, and 100 ms
 * with exactly-once): at least once it only bounds what a crash redelivers; exactly once it is
 * how long outputs wait to become visible.
 */
export const COMMIT_INTERVAL_MS: Readonly<Record<Guarantee, number>> = Object.freeze({ 'at-least-once': 1000, 'exactly-once': 100 });

/**
 * Events in flight by guarantee. At least once an event leaves when its outputs are acknowledged;
 * exactly once only when its transaction commits, a commit interval and a transaction later
 * (300-700 ms on the 2-core CI machine), so it needs more room for the same throughput (Little's
 * law: in flight = rate x time in flight). bench:kafka measured exactly once at 31-37k events/s
 * with 16,384 and 45-62k with 65,536. The outputs wait as packed bytes, a few hundred per event.
 */
export const QUEUE_CAPACITY: Readonly<Record<Guarantee, number>> = Object.freeze({ 'at-least-once': 16_384, 'exactly-once': 65_536 });

const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/, { message: 'expected host:port' });

export const serviceConfigSchema = z
  .object({
    pipeline: z.string().min(1),
    brokers: z.array(hostPort).min(1, { message: 'expected at least one broker' }),
    clientId: z.string().min(1).default('rnnstream'),
    /** Consumer group; instances with the same group share the input partitions. */
    group: z.string().min(1).optional(),
    inputTopic: z.string().min(1).optional(),
    outputTopic: z.string().min(1).optional(),
    dlqTopic: z.string().min(1).optional(),
    changelogTopic: z.string().min(1).optional(),
    /**
     * Replication of the topics the service creates (predictions, dead letters, changelog and a
     * missing input); unset: the broker's default.replication.factor.
     */
    replicationFactor: z.int().positive().optional(),
    /**
     * Extra topic configs for a changelog the service creates (cleanup.policy is always
     * compact), e.g. {"min.insync.replicas": "2", "segment.ms": "600000"}.
     */
    changelogTopicConfig: z.record(z.string(), z.string()).default({}),
    backend: z.enum(['auto', ...BACKEND_NAMES]).default('auto'),
    model: z.string().min(1).optional(),
    maxBatchSize: z.int().positive().default(1024),
    maxWaitMs: z.number().nonnegative().default(5),
    /**
     * Device backends: step whole micro-batches in one call (false: one call, and a round trip,
     * per wave). Unset: on where the backend has the path.
     */
    microBatch: z.boolean().optional(),
    /**
     * Device backends: keep keys' state in the backend's slot table between micro-batches, and
     * read the changelog's states back only when it writes them (false: state goes up and down
     * with every micro-batch). Unset: on where the backend has a table and keyCapacity fits it.
     */
    stateOnDevice: z.boolean().optional(),
    /**
     * Events in flight between the consumer and the moment their outputs are durable (acknowledged;
     * exactly once: committed). Unset: QUEUE_CAPACITY[guarantee].
     */
    queueCapacity: z.int().positive().optional(),
    keyCapacity: z.int().positive().default(DEFAULT_KEY_CAPACITY),
    /**
     * The out-of-scope threshold, in place of the one stored in the model file (0: no rule): a
     * prediction whose top probability is under it is the pipeline's out-of-scope class, and the
     * raw class goes in `topClass` (pipeline/out-of-scope.ts). Unset: the model's.
     */
    outOfScopeThreshold: z.number().min(0).max(1).optional(),
    idleTtlMs: z.number().positive().optional(),
    maxMessageBytes: z.int().positive().default(DEFAULT_MAX_MESSAGE_BYTES),
    /** Events whose key is longer (UTF-8 bytes) are dead-lettered. */
    maxKeyBytes: z.int().positive().default(DEFAULT_MAX_KEY_BYTES),
    /** Bytes of a bad input a dead letter keeps (the rest is named by its size and SHA-256). */
    deadLetterRawBytes: z.int().nonnegative().default(DEAD_LETTER_RAW_BYTES),
    /**
     * Most records per produce request: outputs are posted as they are stepped, and those that
     * queue while a request is in flight are merged into the next one, up to this many.
     */
    produceBatchSize: z.int().positive().default(5000),
    /**
     * Most bytes of records per produce request (a larger one is split, in order). A broker
     * refuses a record batch above the topic's max.message.bytes (1048588 by default) outright,
     * so keep this below it.
     */
    produceBatchBytes: z.int().positive().default(1_000_000),
    /**
     * Delivery: `at-least-once` (outputs first, then the changelog, then the offsets; a crash
     * redelivers what was not committed, and outputs may repeat) or `exactly-once` (per input
     * partition and commit interval, one Kafka transaction holds the outputs, dead letters,
     * changelog records and offsets: a read_committed reader sees each output once).
     */
    guarantee: z.enum(GUARANTEES).default('at-least-once'),
    /**
     * How often state and offsets are committed: at least once, the least time between changelog
     * writes and offset commits (longer: fewer changelog records, more events redelivered after a
     * crash); exactly once, how often each partition commits a transaction (longer: larger
     * transactions, outputs visible later). Unset: COMMIT_INTERVAL_MS[guarantee].
     */
    commitIntervalMs: z.int().nonnegative().optional(),
    /** Exactly once: the broker aborts a transaction left open longer (a stalled member's), which fences its producer. */
    transactionTimeoutMs: z.int().min(1000).default(10_000),
    /**
     * Encode and send produce requests on a worker thread (kafkajs's encoding is JavaScript, about
     * 10 µs a record); false keeps the producer on the service's thread.
     */
    producerThread: z.boolean().default(true),
    fromBeginning: z.boolean().default(true),
    /**
     * Standby replicas (Kafka Streams' num.standby.replicas): each input partition's state is
     * kept warm by this many other members, which tail its changelog; when its owner dies, the
     * member that takes it over reads only the changelog's tail. Each copy costs the memory of
     * the keys it holds. 0: none (a new owner reads the whole changelog partition).
     */
    standbyReplicas: z.int().min(0).max(8).default(0),
    /**
     * Hot swap: serve a new model without a restart when the --model file changes (one
     * instance, or instances that share the file). Each new model is checked before it serves.
     */
    watchModel: z.boolean().default(false),
    /**
     * Hot swap: a compacted control topic whose records name the model each pipeline serves
     * (key: the pipeline; value: {pipeline, path, sha256}); every instance reads it and swaps.
     * Created (compacted, one partition) if missing.
     */
    modelsTopic: z.string().min(1).optional(),
    /**
     * Hot swap's shadow runs: where a shadow model's predictions go (a models-topic record with
     * role "shadow"). Default with --models-topic: `<outputTopic>.shadow`.
     */
    shadowTopic: z.string().min(1).optional(),
    /**
     * What a swapped-in model does with keys' state: `reset` (start from zero), `keep` (same
     * cells only) or `warm` (each key keeps its last `warmHistory` events' features, in its state
     * and changelog, and its state is rebuilt from them under the new model before its next step).
     */
    swapPolicy: z.enum(['reset', 'keep', 'warm']).default('reset'),
    /** With swapPolicy `warm`: events kept per key to warm a new model on (each costs the pipeline's features in float64). */
    warmHistory: z.int().min(1).max(1024).default(16),
    /** Consumer-group session timeout: how long a crashed member keeps its partitions. */
    sessionTimeoutMs: z.int().min(3000).default(30_000),
    /** How often the service checks the cluster for /healthz (brokers gone, partitions offline or under-replicated). */
    healthCheckIntervalMs: z.int().min(100).default(2000),
    /**
     * Sends failing, the consumer not fetching, or the brokers not answering a health check for
     * this long: /healthz says degraded and /readyz not ready, with the reason.
     */
    stallTimeoutMs: z.int().min(100).default(30_000),
    /**
     * Exactly once, a partition whose producer was fenced is lost: the service drains what is in
     * flight and rejoins the group. A drain that takes longer (outputs that cannot be made
     * durable) stops the service with the reason (exit 1): a restart resumes from what is
     * committed, where staying paused would hold partitions and serve none.
     */
    rejoinDrainTimeoutMs: z.int().min(1000).default(120_000),
    /**
     * The most a stop (SIGTERM) takes, outage or not: it flushes and commits what it can in that
     * time; the process then exits 0 if everything was flushed, 1 if not.
     */
    shutdownTimeoutMs: z.int().min(100).default(30_000),
    http: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.int().min(0).max(65535).default(9464),
        /**
         * The URL the other members of the group send a /keys query to when this member owns
         * the key (Kafka Streams' application.server). Unset: the address bound.
         */
        advertised: z.url().optional(),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 9464 }),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /**
     * TLS to the brokers. One shape, so that layers merge field by field (a CA from the file and
     * --ssl from the command line both hold). `true`/`false` are short for `{ enabled }`; an
     * object without `enabled` means TLS on (giving a CA implies TLS).
     */
    ssl: z
      .preprocess(
        (v) => (typeof v === 'boolean' ? { enabled: v } : v),
        z
          .object({
            enabled: z.boolean().default(true),
            ca: z.string().min(1).optional(),
            cert: z.string().min(1).optional(),
            key: z.string().min(1).optional(),
            rejectUnauthorized: z.boolean().default(true),
          })
          .strict(),
      )
      .default({ enabled: false, rejectUnauthorized: true }),
    sasl: z
      .object({
        mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
        username: z.string().min(1),
        /** A file holding the password (first line); or set RNNSTREAM_SASL_PASSWORD. */
        passwordFile: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type ServiceConfig = z.output<typeof serviceConfigSchema>;
export type ServiceConfigInput = z.input<typeof serviceConfigSchema>;

/** The resolved configuration plus the secret, kept apart so logging the config cannot leak it. */
export interface ResolvedConfig {
  readonly config: Readonly<ServiceConfig> & {
    readonly group: string;
    readonly inputTopic: string;
    readonly outputTopic: string;
    readonly dlqTopic: string;
    readonly changelogTopic: string;
    readonly commitIntervalMs: number;
    readonly queueCapacity: number;
  };
  readonly saslPassword: string | undefined;
}

/** Default topic names for a pipeline: `<pipeline>.input`, `.predictions`, `.dead-letters`, `.changelog`. */
export const defaultTopics = (pipeline: string) => ({
  inputTopic: `${pipeline}.input`,
  outputTopic: `${pipeline}.predictions`,
  dlqTopic: `${pipeline}.dead-letters`,
  changelogTopic: `${pipeline}.changelog`,
});

/** A number from an environment variable; text that is not one stays text, which zod reports as the wrong type. */
const envNumber = (v: string): number | string => {
  const n = parseNumberText(v, true);
  return Number.isNaN(n) ? v : n;
};

const ENV: Record<string, (v: string) => Record<string, unknown>> = {
  RNNSTREAM_PIPELINE: (v) => ({ pipeline: v }),
  RNNSTREAM_BROKERS: (v) => ({ brokers: v.split(',').map((s) => s.trim()).filter(Boolean) }),
  RNNSTREAM_GROUP: (v) => ({ group: v }),
  RNNSTREAM_INPUT_TOPIC: (v) => ({ inputTopic: v }),
  RNNSTREAM_OUTPUT_TOPIC: (v) => ({ outputTopic: v }),
  RNNSTREAM_DLQ_TOPIC: (v) => ({ dlqTopic: v }),
  RNNSTREAM_CHANGELOG_TOPIC: (v) => ({ changelogTopic: v }),
  RNNSTREAM_REPLICATION_FACTOR: (v) => ({ replicationFactor: Number(v) }),
  RNNSTREAM_BACKEND: (v) => ({ backend: v }),
  RNNSTREAM_KEY_CAPACITY: (v) => ({ keyCapacity: Number(v) }),
  RNNSTREAM_STANDBY_REPLICAS: (v) => ({ standbyReplicas: envNumber(v) }),
  RNNSTREAM_WATCH_MODEL: (v) => ({ watchModel: v === 'true' || v === '1' }),
  RNNSTREAM_MODELS_TOPIC: (v) => ({ modelsTopic: v }),
  RNNSTREAM_SWAP_POLICY: (v) => ({ swapPolicy: v }),
  RNNSTREAM_SHADOW_TOPIC: (v) => ({ shadowTopic: v }),
  RNNSTREAM_WARM_HISTORY: (v) => ({ warmHistory: envNumber(v) }),
  RNNSTREAM_OOS_THRESHOLD: (v) => ({ outOfScopeThreshold: envNumber(v) }),
  RNNSTREAM_IDLE_TTL_MS: (v) => ({ idleTtlMs: Number(v) }),
  RNNSTREAM_MODEL: (v) => ({ model: v }),
  RNNSTREAM_HTTP_HOST: (v) => ({ http: { host: v } }),
  RNNSTREAM_HTTP_PORT: (v) => ({ http: { port: envNumber(v) } }),
  RNNSTREAM_HTTP_ADVERTISED: (v) => ({ http: { advertised: v } }),
  RNNSTREAM_LOG_LEVEL: (v) => ({ logLevel: v }),
  RNNSTREAM_SSL: (v) => ({ ssl: { enabled: v === 'true' || v === '1' } }),
  RNNSTREAM_SSL_CA: (v) => ({ ssl: { ca: v } }),
  RNNSTREAM_GUARANTEE: (v) => ({ guarantee: v }),
  RNNSTREAM_COMMIT_INTERVAL_MS: (v) => ({ commitIntervalMs: Number(v) }),
  RNNSTREAM_PRODUCER_THREAD: (v) => ({ producerThread: !(v === 'false' || v === '0') }),
  RNNSTREAM_MICRO_BATCH: (v) => ({ microBatch: !(v === 'false' || v === '0') }),
  RNNSTREAM_STATE_ON_DEVICE: (v) => ({ stateOnDevice: !(v === 'false' || v === '0') }),
  RNNSTREAM_SASL_MECHANISM: (v) => ({ sasl: { mechanism: v } }),
  RNNSTREAM_SASL_USERNAME: (v) => ({ sasl: { username: v } }),
  RNNSTREAM_SASL_PASSWORD_FILE: (v) => ({ sasl: { passwordFile: v } }),
};

/** The RNNSTREAM_* environment variables the service reads (besides RNNSTREAM_SASL_PASSWORD). */
export const SERVICE_ENVIRONMENT_VARIABLES: readonly string[] = Object.freeze(Object.keys(ENV));

type Layer = { readonly source: string; readonly values: Record<string, unknown> };

function merge(target: Record<string, unknown>, source: Record<string, unknown>): Record<string, unknown> {
  for (const [k, v] of Object.entries(source)) {
    if (v === undefined) continue;
    const existing = target[k];
    target[k] =
      v && typeof v === 'object' && !Array.isArray(v) && existing && typeof existing === 'object' && !Array.isArray(existing)
        ? merge({ ...(existing as Record<string, unknown>) }, v as Record<string, unknown>)
        : v;
  }
  return target;
}

/** Which layer set a top-level field last, for error messages. */
function sourceOf(layers: readonly Layer[], path: readonly PropertyKey[]): string {
  for (let i = layers.length - 1; i >= 0; i--) {
    let v: unknown = layers[i]!.values;
    for (const p of path) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
    if (v !== undefined) return layers[i]!.source;
  }
  return 'defaults';
}

export interface ConfigSources {
  /** Path of a JSON config file. */
  readonly file?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Options given on the command line (undefined entries are ignored). */
  readonly flags?: Record<string, unknown>;
}

/** What a JSON value is, in the words of the JSON grammar. */
const jsonKind = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'string' ? 'a string' : typeof v === 'number' ? 'a number' : typeof v === 'boolean' ? `${v}` : typeof v);

export function resolveServiceConfig(sources: ConfigSources): ResolvedConfig {
  const layers: Layer[] = [];
  if (sources.file) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read config file ${sources.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let values: unknown;
    try {
      values = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`config file ${sources.file} is not valid JSON: ${describeJsonError(text, err)}`);
    }
    if (typeof values !== 'object' || values === null || Array.isArray(values)) {
      throw new UsageError(`config file ${sources.file}: expected a JSON object of settings (e.g. {"pipeline": "ball-direction", "brokers": ["host:9092"]}), got ${jsonKind(values)}`);
    }
    layers.push({ source: `config file ${sources.file}`, values: values as Record<string, unknown> });
  }
  const env = sources.env ?? process.env;
  const fromEnv: Record<string, unknown> = {};
  for (const [name, map] of Object.entries(ENV)) if (env[name] !== undefined && env[name] !== '') merge(fromEnv, map(env[name]!));
  layers.push({ source: 'environment (RNNSTREAM_*)', values: fromEnv });
  layers.push({ source: 'command line', values: sources.flags ?? {} });
  const merged = layers.reduce((acc, l) => merge(acc, l.values), {} as Record<string, unknown>);
  const parsed = serviceConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      // An unknown key is reported at its parent's path; its source is where the key itself is.
      const keyPath = i.code === 'unrecognized_keys' && i.keys.length > 0 ? [...i.path, i.keys[0]!] : i.path;
      return `${formatPath(i.path) || '(root)'} (from ${sourceOf(layers, keyPath)}): ${i.message}`;
    });
    throw new UsageError(`invalid service configuration:\n  - ${lines.join('\n  - ')}`);
  }
  const c = parsed.data;
  let saslPassword: string | undefined;
  if (c.sasl) {
    if (c.sasl.passwordFile) {
      try {
        saslPassword = readFileSync(c.sasl.passwordFile, 'utf8').split('\n')[0]!.trim();
      } catch (err) {
        throw new UsageError(`cannot read sasl.passwordFile ${c.sasl.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
      }
    } else {
      saslPassword = env.RNNSTREAM_SASL_PASSWORD;
    }
    if (!saslPassword) throw new UsageError('sasl: a password is required: set RNNSTREAM_SASL_PASSWORD or sasl.passwordFile (--sasl-password-file)');
  }
  const topics = defaultTopics(c.pipeline);
  return {
    config: Object.freeze({
      ...c,
      group: c.group ?? `rnnstream-${c.pipeline}`,
      inputTopic: c.inputTopic ?? topics.inputTopic,
      outputTopic: c.outputTopic ?? topics.outputTopic,
      dlqTopic: c.dlqTopic ?? topics.dlqTopic,
      changelogTopic: c.changelogTopic ?? topics.changelogTopic,
      shadowTopic: c.shadowTopic ?? (c.modelsTopic !== undefined ? `${c.outputTopic ?? topics.outputTopic}.shadow` : undefined),
      commitIntervalMs: c.commitIntervalMs ?? COMMIT_INTERVAL_MS[c.guarantee],
      queueCapacity: c.queueCapacity ?? QUEUE_CAPACITY[c.guarantee],
    }),
    saslPassword,
  };
}
