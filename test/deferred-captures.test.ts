/**
 * The capture ledger with a stand-in device: captures resolve in one read across blocks, a block
 * is freed when its last capture is resolved or dropped, a full budget reads the oldest block
 * back whole, and an asynchronous device is served by resolveCaptures and refused by a
 * synchronous read.
 */
import { describe, expect, it } from 'vitest';
import type { StateSegment } from '../src/core/model.js';
import { CaptureLedger, dropCapture, resolveCaptures, type KeptStatesHandle } from '../src/state/deferred-captures.js';

/** Two segments (h of 2, c of 1): a row's state is 3 floats. */
const segments: StateSegment[] = [
  { layer: 0, kind: 'h', offset: 0, size: 2 },
  { layer: 0, kind: 'c', offset: 2, size: 1 },
] as unknown as StateSegment[];
const S = 3;

/** A block's row r, segment s, float j is 100 * block + 10 * r + (s's offset + j). */
const valueOf = (block: number, row: number, i: number): number => 100 * block + 10 * row + i;

function device(options: { async?: boolean } = {}) {
  const released: number[] = [];
  const reads: { block: number; rows: number[] }[][] = [];
  const handle = (id: number, rows: number): KeptStatesHandle & { id: number } => ({ id, rows, bytes: rows * S * 4, release: () => released.push(id) });
  const reader = {
    readKept(parts: readonly { kept: KeptStatesHandle; rows: Int32Array }[], into: Float32Array): void | Promise<void> {
      reads.push(parts.map((p) => ({ block: (p.kept as KeptStatesHandle & { id: number }).id, rows: [...p.rows] })));
      const total = parts.reduce((n, p) => n + p.rows.length, 0);
      let at = 0;
      for (const p of parts) {
        if (released.includes((p.kept as KeptStatesHandle & { id: number }).id)) throw new Error('read of a released block');
        for (const r of p.rows) {
          for (const seg of segments) for (let j = 0; j < seg.size; j++) into[total * seg.offset + at * seg.size + j] = valueOf((p.kept as KeptStatesHandle & { id: number }).id, r, seg.offset + j);
          at++;
        }
      }
      return options.async ? new Promise((r) => setTimeout(r, 1)) : undefined;
    },
  };
  return { released, reads, handle, reader };
}

const meta = (key: string) => ({ key, steps: 1, lastSeen: 0, position: undefined, sequence: Number.NaN, carry: new Float64Array(0), lastClass: -1 });

describe('CaptureLedger', () => {
  it('resolves captures of several blocks in one read, and frees each block when its captures are resolved or dropped', async () => {
    const d = device();
    const ledger = new CaptureLedger(d.reader, segments, S);
    const b1 = ledger.block(d.handle(1, 4));
    const b2 = ledger.block(d.handle(2, 4));
    const a = ledger.capture(b1, 0, meta('a'));
    const b = ledger.capture(b1, 3, meta('b'));
    const c = ledger.capture(b2, 2, meta('c'));
    const stale = ledger.capture(b2, 1, meta('a'));
    dropCapture(stale);
    dropCapture(stale);
    await resolveCaptures([a, b, c, undefined]);
    expect(d.reads).toEqual([
      [
        { block: 1, rows: [0, 3] },
        { block: 2, rows: [2] },
      ],
    ]);
    expect([...b.state]).toEqual([valueOf(1, 3, 0), valueOf(1, 3, 1), valueOf(1, 3, 2)]);
    expect([...c.state]).toEqual([valueOf(2, 2, 0), valueOf(2, 2, 1), valueOf(2, 2, 2)]);
    expect(d.released.sort()).toEqual([1, 2]);
    expect(ledger.stats).toMatchObject({ blocks: 2, liveBytes: 0, reads: 1, rowsRead: 3, spilledBlocks: 0 });
    expect(() => stale.state).toThrow(/dropped unread/);
  });

  it('reads the oldest block back whole when the budget is full, and its captures then read from that copy', async () => {
    const d = device();
    // Room for two 4-row blocks.
    const ledger = new CaptureLedger(d.reader, segments, S, 2 * 4 * S * 4);
    const blocks = [1, 2, 3].map((id) => ledger.block(d.handle(id, 4)));
    expect(d.released).toEqual([1]);
    expect(d.reads).toEqual([[{ block: 1, rows: [0, 1, 2, 3] }]]);
    const old = ledger.capture(blocks[0]!, 2, meta('x'));
    await resolveCaptures([old]);
    expect([...old.state]).toEqual([valueOf(1, 2, 0), valueOf(1, 2, 1), valueOf(1, 2, 2)]);
    expect(d.reads).toHaveLength(1);
    expect(ledger.stats.spilledBlocks).toBe(1);
  });

  it('serves an asynchronous device through resolveCaptures and refuses a synchronous read before it', async () => {
    const d = device({ async: true });
    const ledger = new CaptureLedger(d.reader, segments, S);
    const capture = ledger.capture(ledger.block(d.handle(7, 2)), 1, meta('k'));
    expect(() => capture.state).toThrow(/await resolveCaptures\(\)/);
    // The refused read is under way; this waits for it rather than reading again.
    await resolveCaptures([capture]);
    expect(d.reads).toHaveLength(1);
    expect([...capture.state]).toEqual([valueOf(7, 1, 0), valueOf(7, 1, 1), valueOf(7, 1, 2)]);
    expect(d.released).toEqual([7]);
  });
});
