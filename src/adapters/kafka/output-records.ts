/**
 * The Kafka records a sink writes besides predictions (which are packed as JSON bytes as they
 * arrive): dead letters and changelog records. One definition for the at-least-once and the
 * exactly-once sink.
 */
import type { Message } from 'kafkajs';
import { utf8LengthOver } from '../../core/validation.js';
import type { DeadLetter } from '../../operators/records.js';
import { deadLetterJson, type DeadLetterLimits } from '../../pipeline/serialize.js';
import type { KeySnapshot, KeyStateStore } from '../../state/key-state-store.js';

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

/**
 * A key's state as a changelog record, in the changelog partition of its input partition (the
 * changelog is partitioned like the input). A key that ended is forgotten: a tombstone, which
 * log compaction then removes altogether.
 */
export function changelogMessage(store: KeyStateStore, key: string, state: KeySnapshot, ended: boolean): Message {
  const value = ended ? null : Buffer.from(store.encode([state]));
  const partition = state.position?.partition;
  return partition === undefined ? { key, value } : { key, value, partition };
}
