import { map, type OperatorFunction } from 'rxjs';
import type { z } from 'zod';
import { formatZodIssues, utf8LengthOver } from '../core/validation.js';
import type { Decoded, RawRecord } from './records.js';

/** Inputs longer than this many bytes are dead-lettered unparsed, by default. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1 << 20;

export interface DecodeOptions {
  /** Inputs longer than this many bytes are dead-lettered unparsed (default DEFAULT_MAX_MESSAGE_BYTES). */
  readonly maxBytes?: number;
}

// ignoreBOM keeps a leading U+FEFF in the text (then JSON.parse refuses it), as a fixture line
// decoded by its chunk would: only the start of a file may carry a byte-order mark.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Parses each raw record as JSON and validates it with a zod schema. A record that is not
 * UTF-8, not JSON, too large, or fails the schema becomes a dead letter carrying the reason, its
 * source position and the original bytes; the stream goes on. Order is preserved.
 *
 * ```
 * raw:     --a--b--c--|        (b is `{"x":"oops"}`)
 * decode:  --A--X--C--|        (X: dead letter "x: Invalid input: expected number, received string")
 * ```
 *
 * @example
 * ```ts
 * from([{ value: '{"id":"k","v":1}', source: { kind: 'memory', index: 0 } }])
 *   .pipe(decodeEvents(z.object({ id: z.string(), v: z.number() })))
 *   .subscribe((r) => console.log(r.kind)); // 'event'
 * ```
 */
export function decodeEvents<S extends z.ZodType>(
  schema: S,
  options: DecodeOptions = {},
  /** A last check of a valid event (e.g. its key's length): a reason to dead-letter it, or undefined. */
  refine?: (event: z.output<S>) => string | undefined,
): OperatorFunction<RawRecord, Decoded<z.output<S>>> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  return map((raw): Decoded<z.output<S>> => {
    const v = raw.value;
    const size = typeof v === 'string' ? utf8LengthOver(v, maxBytes) : v.byteLength > maxBytes ? v.byteLength : undefined;
    if (size !== undefined) return rejected(raw, `message too large: ${size} bytes, the limit is ${maxBytes}`);
    let text: string;
    if (typeof v === 'string') {
      text = v;
    } else {
      try {
        text = decoder.decode(v);
      } catch {
        return rejected(raw, 'not valid UTF-8');
      }
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      return rejected(raw, `not JSON: ${(err as Error).message}`);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) return rejected(raw, formatZodIssues(parsed.error).join('; '));
    const refused = refine?.(parsed.data);
    if (refused !== undefined) return rejected(raw, refused);
    return { kind: 'event', event: parsed.data, source: raw.source, raw: v, messageKey: raw.messageKey };
  });
}

/**
 * A record's dead letter. One shape for every record (messageKey possibly undefined), for the hot
 * code downstream; a function of its own, not a closure made per record.
 */
function rejected<E>(raw: RawRecord, reason: string): Decoded<E> {
  return { kind: 'dead-letter', reason, source: raw.source, raw: raw.value, messageKey: raw.messageKey };
}
