/**
 * The records that flow between rnnstream's operators.
 */

/** Where a record came from, so a dead letter or a prediction can be traced to its source. */
export type SourcePosition =
  | { readonly kind: 'file'; readonly file: string; readonly line: number }
  | {
      readonly kind: 'kafka';
      readonly topic: string;
      readonly partition: number;
      readonly offset: string;
      /** The record's timestamp (ms since the epoch; CreateTime or LogAppendTime, as the topic keeps it), for end-to-end latency. */
      readonly timestamp?: number;
    }
  | { readonly kind: 'memory'; readonly index: number };

export function describePosition(p: SourcePosition): string {
  switch (p.kind) {
    case 'file':
      return `${p.file}:${p.line}`;
    case 'kafka':
      return `${p.topic}[${p.partition}]@${p.offset}`;
    case 'memory':
      return `#${p.index}`;
  }
}

/** Undecoded input: a line of a fixture or the value of a Kafka message. */
export interface RawRecord {
  readonly value: string | Uint8Array;
  readonly source: SourcePosition;
  /** The Kafka message key, if any (dead letters keep it). */
  readonly messageKey?: string;
}

/** A valid, typed event with its source. */
export interface EventRecord<E> {
  readonly kind: 'event';
  readonly event: E;
  readonly source: SourcePosition;
  /** The original input, kept so a later rejection can still dead-letter the exact bytes. */
  readonly raw: string | Uint8Array;
  /** The Kafka message key, kept for the same reason (the dead letter is keyed by it). */
  readonly messageKey?: string;
}

/** An input that could not be used, with the reason and the original bytes; the stream goes on. */
export interface DeadLetter {
  readonly kind: 'dead-letter';
  readonly reason: string;
  readonly source: SourcePosition;
  /** The original input, as received. */
  readonly raw: string | Uint8Array;
  readonly messageKey?: string;
}

export type Decoded<E> = EventRecord<E> | DeadLetter;

