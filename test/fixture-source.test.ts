import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { lastValueFrom, map, tap, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { delayedReference } from './support/backends.js';
import { randomModel } from '../src/core/random-model.js';
import { readFixture } from '../src/adapters/fixture-source.js';
import { BoundedQueue } from '../src/operators/bounded-queue.js';
import { rnnByKey } from '../src/operators/rnn-by-key.js';
import type { RawRecord } from '../src/operators/records.js';
import { KeyStateStore } from '../src/state/key-state-store.js';

const dir = mkdtempSync(join(tmpdir(), 'rnnstream-fixture-'));

interface Ev {
  readonly k: string;
  readonly v: number;
}

describe('readFixture', () => {
  it('reads plain and gzip JSON Lines as bytes with 1-based line numbers, skipping and counting blank lines', async () => {
    const text = '{"a":1}\n\n{"a":2}\n \t\r\n{"a":3}';
    writeFileSync(join(dir, 'x.jsonl'), text);
    writeFileSync(join(dir, 'x.jsonl.gz'), gzipSync(text));
    for (const f of ['x.jsonl', 'x.jsonl.gz']) {
      let blank = 0;
      const records = await lastValueFrom(readFixture(join(dir, f), { chunkBytes: 5, onBlankLine: () => blank++ }).pipe(toArray()));
      expect(records.map((r) => [Buffer.from(r.value as Uint8Array).toString(), r.source.kind === 'file' && r.source.line])).toEqual([
        ['{"a":1}', 1],
        ['{"a":2}', 3],
        ['{"a":3}', 5],
      ]);
      expect(blank).toBe(2);
    }
  });

  it('skips a UTF-8 byte-order mark at the start of the file, and passes bytes that are not UTF-8 through as they are', async () => {
    const file = join(dir, 'bom.jsonl');
    writeFileSync(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}\n'), Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a]), Buffer.from('\ufeff{"a":2}\n')]));
    const records = await lastValueFrom(readFixture(file, { chunkBytes: 3 }).pipe(toArray()));
    expect(records.map((r) => Buffer.from(r.value as Uint8Array))).toEqual([
      Buffer.from('{"a":1}'),
      Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
      // Only at the start of the file: elsewhere it is the line's content (and not JSON).
      Buffer.from('\ufeff{"a":2}'),
    ]);
  });

  it('waits on a full queue instead of overflowing it, when the backend is slow', async () => {
    const lines = Array.from({ length: 2000 }, (_, i) => JSON.stringify({ k: `k${i % 50}`, v: i % 7 }));
    const file = join(dir, 'many.jsonl');
    writeFileSync(file, lines.join('\n') + '\n');
    const model = randomModel({ features: 1, layers: [{ cell: 'rnn', hiddenSize: 3 }], head: { kind: 'linear', outputs: ['y'] }, seed: 1 });
    const slow = delayedReference(model);
    const queue = new BoundedQueue(64);
    let peak = 0;
    const results = await lastValueFrom(
      readFixture(file, { queue, chunkBytes: 4096 }).pipe(
        map((r: RawRecord) => JSON.parse(String(r.value)) as Ev),
        rnnByKey<Ev, Ev>({
          backend: slow,
          store: new KeyStateStore(model),
          keyOf: (e) => e.k,
          eventOf: (e) => e,
          features: (e, _p, out) => {
            out[0] = e.v;
          },
          queue,
          maxBatchSize: 32,
          maxWaitMs: 1,
        }),
        tap(() => (peak = Math.max(peak, queue.size))),
        toArray(),
      ),
    );
    expect(results).toHaveLength(2000);
    expect(peak).toBeLessThanOrEqual(64);
    expect(queue.size).toBe(0);
  });

  it('paces events by their event time in realtime mode', async () => {
    const file = join(dir, 'paced.jsonl');
    writeFileSync(file, [0, 0.1, 0.2].map((t) => JSON.stringify({ t })).join('\n'));
    const started = performance.now();
    const records = await lastValueFrom(
      readFixture(file, { pace: 'realtime', timeOf: (line) => (JSON.parse(line) as { t: number }).t * 1000 }).pipe(toArray()),
    );
    expect(records).toHaveLength(3);
    // The last event is 200 ms of event time after the first; it cannot arrive sooner.
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
  });

  it('reports a missing file as a usage error naming it', async () => {
    await expect(lastValueFrom(readFixture(join(dir, 'nope.jsonl')))).rejects.toThrow(/cannot read input file .*nope\.jsonl: ENOENT/);
  });
});
