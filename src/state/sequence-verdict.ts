/**
 * Per-key order as a contract (a pipeline's `sequence`): whether a key's next event may be
 * applied, given the sequence number of its last applied one. One definition for every way
 * rnnByKey steps events.
 */

export interface SequenceRule<E> {
  /** The field, for messages. */
  readonly field: string;
  readonly of: (event: E) => number;
  /** Numbers go up by one: a larger jump is a gap (counted, the event still applied). */
  readonly consecutive?: boolean;
  /** The number a key's first event must carry. */
  readonly first?: number;
}

/**
 * Why the key's sequence refuses `event`, if it does; else the gap before it (0 when none).
 * `last` is the key's last applied sequence number (NaN: none), `fresh` whether it has no state.
 */
export function sequenceVerdict<E>(sequence: SequenceRule<E> | undefined, event: E, last: number, fresh: boolean): string | number {
  if (!sequence) return 0;
  const seq = sequence.of(event);
  if (Number.isNaN(last)) {
    if (fresh && sequence.first !== undefined && seq !== sequence.first) {
      return `out of order: ${sequence.field} ${seq} but the key has no earlier events (its first must be ${sequence.first}; a key's events after its last one start nothing)`;
    }
    return 0;
  }
  if (!(seq > last)) {
    const what = seq === last ? 'duplicate' : 'out of order';
    return `${what}: ${sequence.field} ${seq} is not after the key's last applied ${sequence.field} ${last}`;
  }
  return sequence.consecutive && seq > last + 1 ? seq - last - 1 : 0;
}
