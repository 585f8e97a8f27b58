/**
 * Seeded bad input for the ball pipeline, of every kind the service must survive, mixed with
 * good events: each record says whether it must end as a prediction or as a dead letter, so a
 * test can check that every input ends as exactly one of the two, and the right one.
 *
 * Records never contain a newline byte and never are blank, so the same list is a fixture file
 * (one line each) and a list of Kafka records.
 */
import { createRng, type Rng } from '../../src/core/prng.js';

export interface FuzzRecord {
  readonly key: string | null;
  readonly value: Buffer;
  /** What it must become. */
  readonly expect: 'prediction' | 'dead-letter';
  readonly kind: string;
}

/** maxMessageBytes the fuzz runs use, so that "too large" records stay small. */
export const FUZZ_MAX_MESSAGE_BYTES = 4096;

const frame = (ballId: string, n: number, rng: Rng) =>
  JSON.stringify({ ballId, frame: n, t: n / 30, x: rng.uniform(0, 1), y: rng.uniform(0, 1) });

/** Bytes that are never a newline (0x0a), and a first byte that is not blank. */
function noNewline(bytes: Buffer): Buffer {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0x0a) bytes[i] = 0x23;
  if (bytes.length === 0 || bytes[0] === 0x20 || bytes[0] === 0x09 || bytes[0] === 0x0d) return Buffer.concat([Buffer.from('#'), bytes]);
  return bytes;
}

type Bad = (rng: Rng, i: number) => { key: string | null; value: Buffer };

/** One generator per kind of bad input; each yields a record that must be dead-lettered. */
const BAD: Record<string, Bad> = {
  'random bytes': (rng) => ({ key: null, value: Buffer.from(Array.from({ length: rng.int(1, 200) }, () => rng.int(0, 255))) }),
  'not UTF-8 inside a valid-looking event': (rng, i) => ({
    key: `f-${i}`,
    value: Buffer.concat([Buffer.from('{"ballId":"f-'), Buffer.from([[0xc3, 0x28], [0xff], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]][rng.int(0, 3)]!), Buffer.from(`${i}","frame":0,"t":0,"x":0.1,"y":0.2}`)]),
  }),
  'truncated JSON': (rng, i) => {
    const text = frame(`f-${i}`, 0, rng);
    return { key: `f-${i}`, value: Buffer.from(text.slice(0, rng.int(1, text.length - 1))) };
  },
  'NaN or Infinity literal': (rng, i) => ({ key: `f-${i}`, value: Buffer.from(`{"ballId":"f-${i}","frame":0,"t":0,"x":${['NaN', 'Infinity', '-Infinity'][rng.int(0, 2)]},"y":0.5}`) }),
  'a number too large for a double': (_rng, i) => ({ key: `f-${i}`, value: Buffer.from(`{"ballId":"f-${i}","frame":0,"t":0,"x":1e999,"y":0.5}`) }),
  'wrong type': (rng, i) => {
    const e: Record<string, unknown> = { ballId: `f-${i}`, frame: 0, t: 0, x: 0.1, y: 0.2 };
    const field = ['ballId', 'frame', 't', 'x', 'y'][rng.int(0, 4)]!;
    e[field] = [null, true, 'left', [], {}][rng.int(0, 4)];
    if (field === 'ballId' && typeof e[field] === 'string') e[field] = 7;
    return { key: `f-${i}`, value: Buffer.from(JSON.stringify(e)) };
  },
  'missing field': (rng, i) => {
    const e: Record<string, unknown> = { ballId: `f-${i}`, frame: 0, t: 0, x: 0.1, y: 0.2 };
    delete e[['ballId', 'frame', 't', 'x', 'y'][rng.int(0, 4)]!];
    return { key: `f-${i}`, value: Buffer.from(JSON.stringify(e)) };
  },
  'negative or fractional frame': (rng, i) => ({ key: `f-${i}`, value: Buffer.from(JSON.stringify({ ballId: `f-${i}`, frame: rng.next() < 0.5 ? -1 - rng.int(0, 9) : 0.5, t: 0, x: 0.1, y: 0.2 })) }),
  'empty ballId': () => ({ key: null, value: Buffer.from('{"ballId":"","frame":0,"t":0,"x":0.1,"y":0.2}') }),
  'not an object': (rng) => ({ key: null, value: Buffer.from(['[]', '42', '"ball"', 'null', 'true', '[{"ballId":"b"}]'][rng.int(0, 5)]!) }),
  'too large': (rng, i) => ({ key: `f-${i}`, value: Buffer.from(JSON.stringify({ ballId: `f-${i}`, frame: 0, t: 0, x: 0.1, y: 0.2, pad: 'p'.repeat(FUZZ_MAX_MESSAGE_BYTES + rng.int(1, 500)) })) }),
  'key too long': (rng, i) => {
    const ballId = `f-${i}-${'k'.repeat(257 + rng.int(0, 500))}`;
    return { key: null, value: Buffer.from(frame(ballId, 0, rng)) };
  },
  'deeply nested': (rng) => {
    const depth = rng.int(1000, 3000);
    return { key: null, value: Buffer.from('['.repeat(depth) + ']'.repeat(depth)) };
  },
  'a byte-order mark inside the file': (rng, i) => ({ key: `f-${i}`, value: Buffer.from(`\ufeff${frame(`f-${i}`, 0, rng)}`) }),
  'control characters': (rng, i) => ({ key: `f-${i}`, value: Buffer.from(`{"ballId":"f-${i}\u0001\u0007","frame":0,"t":0,"x":0.1,"y":0.2}`) }),
};

export const BAD_KINDS = Object.keys(BAD).concat(['duplicate frame', 'older frame']);

/**
 * `bad` bad records (every kind, round robin, at random places) among good ones: `keys` balls
 * whose frames count up, some of them repeated or sent late (duplicates, out of order), which
 * must be dead letters too.
 */
export function fuzzRecords(seed: number, bad: number, keys = 40): FuzzRecord[] {
  const rng = createRng(seed);
  const out: FuzzRecord[] = [];
  const nextFrame = new Array<number>(keys).fill(0);
  const kinds = Object.entries(BAD);
  // A good record first: a byte-order mark on the file's first line would be skipped, not refused.
  out.push({ key: 'ball-0', value: Buffer.from(frame('ball-0', nextFrame[0]!++, rng)), expect: 'prediction', kind: 'good' });
  let made = 0;
  while (made < bad) {
    const r = rng.next();
    if (r < 0.2) {
      // A good frame of a ball, in order.
      const k = rng.int(0, keys - 1);
      out.push({ key: `ball-${k}`, value: Buffer.from(frame(`ball-${k}`, nextFrame[k]!++, rng)), expect: 'prediction', kind: 'good' });
    } else if (r < 0.3) {
      // A frame of a ball that has had some: the last one again, or an older one.
      const k = rng.int(0, keys - 1);
      if (nextFrame[k]! === 0) continue;
      const duplicate = rng.next() < 0.5 || nextFrame[k]! === 1;
      const n = duplicate ? nextFrame[k]! - 1 : rng.int(0, nextFrame[k]! - 2);
      out.push({ key: `ball-${k}`, value: Buffer.from(frame(`ball-${k}`, n, rng)), expect: 'dead-letter', kind: duplicate ? 'duplicate frame' : 'older frame' });
      made++;
    } else {
      const [kind, generate] = kinds[made % kinds.length]!;
      const { key, value } = generate(rng, made);
      out.push({ key, value: noNewline(value), expect: 'dead-letter', kind });
      made++;
    }
  }
  return out;
}
