/**
 * a >= b for Kafka offsets as kafkajs gives them: decimal strings without leading zeros, so a
 * longer string is the larger number and equal lengths compare as text. It runs per event, where
 * parsing both to BigInt was a measurable cost.
 */
export const offsetAtLeast = (a: string, b: string): boolean => (a.length !== b.length ? a.length > b.length : a >= b);

