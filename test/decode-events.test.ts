import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import ball from '../pipelines/ball-direction/index.js';
import { decodeEvents } from '../src/operators/decode-events.js';
import type { RawRecord } from '../src/operators/records.js';

const raw = (value: string | Uint8Array, line: number): RawRecord => ({ value, source: { kind: 'file', file: 'f.jsonl', line } });

describe('decodeEvents', () => {
  it('turns every kind of bad input into a dead letter with reason and position, and goes on', async () => {
    const inputs = [
      raw('{"ballId":"b-1","frame":0,"t":0,"x":0.1,"y":0.2}', 1),
      raw('not json', 2),
      raw('{"ballId":"b-1","frame":1,"t":0.03,"x":"0.1","y":0.2}', 3),
      raw('{"frame":2,"t":0.06,"x":0.1,"y":0.2}', 4),
      raw('{"ballId":"b-1","frame":3,"t":0.1,"x":1e999,"y":0.2}', 5),
      raw(new Uint8Array([0xff, 0xfe]), 6),
      raw(`{"ballId":"${'x'.repeat(2000)}","frame":0,"t":0,"x":0,"y":0}`, 7),
      raw('{"ballId":"b-2","frame":0,"t":0,"x":0.5,"y":0.5,"direction":"NE"}', 8),
    ];
    const out = await lastValueFrom(from(inputs).pipe(decodeEvents(ball.schema, { maxBytes: 1000 }), toArray()));
    expect(out.map((r) => r.kind)).toEqual(['event', 'dead-letter', 'dead-letter', 'dead-letter', 'dead-letter', 'dead-letter', 'dead-letter', 'event']);
    const reasons = out.map((r) => (r.kind === 'dead-letter' ? r.reason : ''));
    expect(reasons[1]).toMatch(/^not JSON: /);
    expect(reasons[2]).toBe('x: Invalid input: expected number, received string');
    expect(reasons[3]).toBe('ballId: Invalid input: expected string, received undefined');
    expect(reasons[4]).toMatch(/^x: .*Infinity/);
    expect(reasons[5]).toBe('not valid UTF-8');
    expect(reasons[6]).toMatch(/message too large: \d+ bytes, the limit is 1000/);
    for (const r of out) expect(r.source).toEqual(inputs[out.indexOf(r)]!.source);
    const dead = out[1]!;
    expect(dead.kind === 'dead-letter' && dead.raw).toBe('not json');
  });
});
