/** The core's SHA-256 against node:crypto, at every length around the block boundaries and on a model-sized input. */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../src/core/sha256.js';
import { createRng } from '../src/core/prng.js';

const reference = (data: Uint8Array | string): string => createHash('sha256').update(data).digest('hex');

describe('sha256Hex', () => {
  it('equals node:crypto for every length from 0 to 300 bytes, for UTF-8 text, and for 7 MB', () => {
    const rng = createRng(256);
    const bytes = Uint8Array.from({ length: 300 }, () => Math.floor(rng.next() * 256));
    for (let n = 0; n <= 300; n++) expect(sha256Hex(bytes.subarray(0, n)), `${n} bytes`).toBe(reference(bytes.subarray(0, n)));
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    const text = '{"name":"ball","labels":["N","NE","über","北"]}';
    expect(sha256Hex(text)).toBe(reference(text));
    const big = new Uint8Array(7_000_000).map((_, i) => (i * 2654435761) >>> 24);
    expect(sha256Hex(big)).toBe(reference(big));
  });
});
