/** RepeatLimiter: one line per kind per window; the next one says how many were held back. */
import { describe, expect, it } from 'vitest';
import { RepeatLimiter } from '../src/observability/repeat-limiter.js';

describe('RepeatLimiter', () => {
  it('writes the first, holds back repeats within the window, and counts them on the next one written', () => {
    let now = 0;
    const r = new RepeatLimiter(10_000, () => now);
    expect(r.admit('ECONNREFUSED b1')).toBe(0);
    expect(r.admit('ECONNREFUSED b2')).toBe(0); // another line: its own window
    for (let i = 0; i < 340; i++) {
      now += 20;
      expect(r.admit('ECONNREFUSED b1')).toBeUndefined();
    }
    now = 10_001;
    expect(r.admit('ECONNREFUSED b1')).toBe(340);
    expect(r.admit('ECONNREFUSED b1')).toBeUndefined();
  });
});
