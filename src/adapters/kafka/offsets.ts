import type { SourcePosition } from '../../operators/records.js';

/**
 * a >= b for Kafka offsets as kafkajs gives them: decimal strings without leading zeros, so a
 * longer string is the larger number and equal lengths compare as text. It runs per event, where
 * parsing both to BigInt was a measurable cost.
 */
export const offsetAtLeast = (a: string, b: string): boolean => (a.length !== b.length ? a.length > b.length : a >= b);

/**
 * Whether position `a` is at or after `b` in the same topic partition; undefined when the two are
 * not comparable (either is not a Kafka position, or they name different partitions).
 */
export function positionAtLeast(a: SourcePosition | undefined, b: SourcePosition | undefined): boolean | undefined {
  if (a?.kind !== 'kafka' || b?.kind !== 'kafka' || a.topic !== b.topic || a.partition !== b.partition) return undefined;
  return offsetAtLeast(a.offset, b.offset);
}
