/**
 * The Kafka records a sink writes besides predictions (which are packed as JSON bytes as they
 * arrive) and changelog records (output-batch.ts): dead letters, and the minimal dead letter of a
 * record the broker refused. One definition for both commit strategies.
 */
import { createHash } from 'node:crypto';
import type { Message, TopicMessages } from 'kafkajs';
import { utf8LengthOver } from '../../../core/validation.js';
import type { DeadLetter } from '../../../operators/records.js';
import { deadLetterJson, type DeadLetterLimits } from '../../../pipeline/serialize.js';

/** A dead letter's record key: the input's message key, unless too long to be one (its source position still finds the input). */
const MAX_DEAD_LETTER_KEY_BYTES = 1024;
const deadLetterKey = (key: string | undefined): string | null => (key === undefined || utf8LengthOver(key, MAX_DEAD_LETTER_KEY_BYTES) !== undefined ? null : key);

/**
 * A dead letter as its record: keyed like the input, the reason also in a header (for consumers
 * that filter without parsing), in the dead-letter partition of its input partition. The
 * partition is explicit because many dead letters have no key, and kafkajs spreads unkeyed
 * records round-robin afresh on every retry of a request: a record whose first partition's
 * broker had already acknowledged it was sent again to another (a duplicate), and one whose
 * broker had not could land on one that had (lost). The exactly-once tests found both.
 */
export function deadLetterMessage(r: DeadLetter, limits: DeadLetterLimits | undefined, partitions: number): Message {
  const message: Message = { key: deadLetterKey(r.messageKey), value: deadLetterJson(r, limits), headers: { 'rnnstream-reason': r.reason.slice(0, 200) } };
  if (r.source.kind === 'kafka') message.partition = r.source.partition % partitions;
  return message;
}

/** The topics a refused record may come from, and where its minimal dead letter goes. */
export interface RefusalTopics {
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly dlqPartitions: number;
}

/**
 * The minimal dead letter written in place of a prediction or a dead letter that the broker
 * refused by itself (too large for a topic whose max.message.bytes was lowered after the service
 * read it, a timestamp outside the topic's bounds): the refused record's source position, key and
 * size, and, of a dead letter, its reason, input size and input hash; never the refused bytes.
 * A changelog record has no replacement (undefined): a key's state cannot be skipped, so the
 * service stops rather than commit past it.
 */
export function refusedRecordDeadLetter(topics: RefusalTopics, topic: string, message: Message, refusal: string): TopicMessages | undefined {
  if (topic !== topics.outputTopic && topic !== topics.dlqTopic) return undefined;
  const value = message.value == null ? Buffer.alloc(0) : Buffer.from(message.value);
  const refused = (topic === topics.outputTopic ? 'prediction' : 'dead letter') + ' refused by the broker';
  const original = parsedObject(value);
  const fields: Record<string, unknown> = {
    reason: typeof original.reason === 'string' ? `${original.reason} (its ${refused}: ${refusal})` : `${refused}: ${refusal}`,
    source: original.source ?? null,
  };
  if (typeof original.rawBytes === 'number') Object.assign(fields, { rawBytes: original.rawBytes, rawSha256: original.rawSha256, rawTruncated: true });
  fields.refused = { topic, bytes: value.length, sha256: createHash('sha256').update(value).digest('hex') };
  const source = original.source as { partition?: unknown } | undefined;
  const replacement: Message = { key: message.key ?? null, value: JSON.stringify(fields), headers: { 'rnnstream-reason': String(fields.reason).slice(0, 200) } };
  if (typeof source?.partition === 'number') replacement.partition = source.partition % topics.dlqPartitions;
  return { topic: topics.dlqTopic, messages: [replacement] };
}

/** The record's JSON object, or {} when it is not one (nothing of it is echoed). */
function parsedObject(value: Buffer): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(value.toString('utf8'));
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
