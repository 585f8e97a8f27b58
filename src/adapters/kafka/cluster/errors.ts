/**
 * kafkajs's errors as one line a user can act on. kafkajs wraps the error that ended its retries
 * (KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded) around the one that says what went
 * wrong; the innermost one is the message, and the kind of failure says what to check. Messages
 * carry no credentials: kafkajs's own texts never include them, and none are added here.
 */
interface KafkaJsError extends Error {
  readonly cause?: unknown;
  readonly retriable?: boolean;
}

const isKafkaJsError = (err: unknown): err is KafkaJsError => err instanceof Error && err.name.startsWith('KafkaJS');

/** The chain of wrapped errors, outermost first. */
function chain(err: KafkaJsError): KafkaJsError[] {
  const out: KafkaJsError[] = [err];
  let at: unknown = err.cause;
  while (at instanceof Error && out.length < 10) {
    out.push(at as KafkaJsError);
    at = (at as KafkaJsError).cause;
  }
  return out;
}

/**
 * Whether a failed send may succeed if tried again. kafkajs marks every error it gives up on as
 * not retriable, so its wrapper says little: KafkaJSNumberOfRetriesExceeded means the cause was
 * retriable and lasted longer than kafkajs's retries (a broker outage: try again, later), while
 * KafkaJSNonRetriableError wraps a cause that no retry cures (MESSAGE_TOO_LARGE, an authorization
 * failure, an invalid record). Errors that are not kafkajs's (a bug) are not retriable.
 */
export function isRetriableSendError(err: unknown): boolean {
  if (!isKafkaJsError(err)) return false;
  const errors = chain(err);
  if (errors.some((e) => e.name === 'KafkaJSNumberOfRetriesExceeded')) return errors.at(-1)!.retriable !== false;
  return errors.at(-1)!.retriable === true;
}

/** One line for a kafkajs error (undefined for any other error). */
export function explainKafkaError(err: unknown): string | undefined {
  if (!isKafkaJsError(err)) return undefined;
  const errors = chain(err);
  const root = errors.at(-1)!;
  const names = new Set(errors.map((e) => e.name));
  if (names.has('KafkaJSSASLAuthenticationError')) {
    return `Kafka authentication failed: ${root.message} (check the SASL mechanism, user name and password: RNNSTREAM_SASL_PASSWORD or sasl.passwordFile)`;
  }
  if (names.has('KafkaJSConnectionError') || names.has('KafkaJSConnectionClosedError') || names.has('KafkaJSRequestTimeoutError')) {
    return `cannot reach the Kafka brokers: ${root.message} (check the broker list, that they are up, and TLS: --ssl, --ssl-ca)`;
  }
  return `Kafka error: ${root.name}: ${root.message}`;
}

/**
 * Broker answers that refuse the records themselves, not the producer, the topic or the cluster:
 * a record (or a partition's batch) over max.message.bytes, a record the topic's rules reject (a
 * compacted topic's record without a key, a timestamp outside message.timestamp.*.max.ms). No
 * retry cures them, but the other records of the request may be fine.
 */
const RECORD_REFUSALS: ReadonlySet<string> = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'INVALID_TIMESTAMP']);

/** The broker's error type when a send failed because of the records it held (else undefined). */
export function recordRefusal(err: unknown): string | undefined {
  if (!isKafkaJsError(err)) return undefined;
  const type = (chain(err).at(-1) as { type?: unknown }).type;
  return typeof type === 'string' && RECORD_REFUSALS.has(type) ? type : undefined;
}
