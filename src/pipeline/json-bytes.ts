/**
 * JSON written straight into UTF-8 bytes, for outputs that leave as bytes anyway (Kafka records).
 * Building a prediction's JSON as a string and then encoding it cost about 2 KB of garbage and
 * ~2 µs per event on the service's thread (concatenated strings, their flattening, the copy into
 * the produce buffer); writing the bytes in place costs neither. The text is byte for byte the
 * text of serialize.ts's string writers (a test holds the two to it).
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** A growable byte buffer with the few writes JSON needs. Reused: `reset` keeps the memory. */
export class ByteWriter {
  private buf: Uint8Array;
  /** Bytes written so far. */
  length = 0;

  constructor(initialBytes = 1 << 16) {
    // Slow (unpooled) allocation: the buffer lives long and grows rarely.
    this.buf = Buffer.allocUnsafeSlow(initialBytes);
  }

  reset(): void {
    this.length = 0;
  }

  /** The bytes written, as a view (valid until the next write or reset). */
  view(start = 0, end = this.length): Uint8Array {
    return this.buf.subarray(start, end);
  }

  /** A copy of [start, end) that owns its ArrayBuffer exactly (transferable whole). */
  copy(start = 0, end = this.length): Uint8Array {
    const out = new Uint8Array(new ArrayBuffer(end - start));
    out.set(this.buf.subarray(start, end));
    return out;
  }

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.allocUnsafeSlow(Math.max(this.length + n, 2 * this.buf.length));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    const { buf } = this;
    let at = this.length;
    // Short fragments (field names) copy faster in a loop than through TypedArray.set.
    if (b.length <= 32) for (let i = 0; i < b.length; i++) buf[at++] = b[i]!;
    else {
      buf.set(b, at);
      at += b.length;
    }
    this.length = at;
  }

  /** Any string, as UTF-8. */
  utf8(s: string): void {
    const n = s.length;
    this.reserve(3 * n);
    const { buf } = this;
    let at = this.length;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.length = at;
        this.utf8Slow(s, i);
        return;
      }
      buf[at++] = c;
    }
    this.length = at;
  }

  private utf8Slow(s: string, from: number): void {
    // reserve(3 * length) above covers any UTF-8 encoding of the rest.
    this.length += (this.buf as Buffer).write(s.slice(from), this.length, 'utf8');
  }

  /** A string as a JSON string literal (quotes and escapes exactly as JSON.stringify writes them). */
  jsonString(s: string): void {
    const n = s.length;
    this.reserve(n + 2);
    const { buf } = this;
    const start = this.length;
    let at = start;
    buf[at++] = QUOTE;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c >= 0x7f || c === QUOTE || c === BACKSLASH) {
        // Escapes and non-ASCII: JSON.stringify decides, then UTF-8.
        this.length = start;
        this.utf8(JSON.stringify(s));
        return;
      }
      buf[at++] = c;
    }
    buf[at++] = QUOTE;
    this.length = at;
  }

  /** A non-negative integer below 2^53, in decimal. */
  uint(v: number): void {
    const digits = digitsOf(v);
    this.reserve(digits);
    const { buf } = this;
    let at = this.length + digits;
    this.length = at;
    if (v < 0x80000000) {
      // Integer division by |0: Math.floor on a double costs more, once per digit of every seq.
      do {
        const q = (v / 10) | 0;
        buf[--at] = 0x30 + (v - q * 10);
        v = q;
      } while (v > 0);
      return;
    }
    do {
      const q = Math.floor(v / 10);
      buf[--at] = 0x30 + (v - q * 10);
      v = q;
    } while (v > 0);
  }

  /**
   * A float32 output value, as serialize.ts's formatFloat32 writes it. A probability is "0." and
   * its 7 decimals from the integer v * 1e7, trailing zeros dropped: written right to left into
   * place (eight of them per prediction made this a third of a replay's output time).
   */
  float32(v: number): void {
    if (v >= 0 && v <= 1) {
      let n = Math.round(v * 1e7);
      if (n === 0 || n === 1e7) {
        this.reserve(1);
        this.buf[this.length++] = n === 0 ? 0x30 : 0x31;
        return;
      }
      this.reserve(9);
      const { buf } = this;
      const start = this.length;
      buf[start] = 0x30;
      buf[start + 1] = 0x2e;
      let at = start + 9;
      for (let d = 0; d < 7; d++) {
        const q = (n / 10) | 0;
        buf[--at] = 0x30 + (n - q * 10);
        n = q;
      }
      // n was not 0, so a digit other than 0 ends the decimals.
      let end = start + 9;
      while (buf[end - 1] === 0x30) end--;
      this.length = end;
      return;
    }
    this.utf8(String(Number(v.toPrecision(7))));
  }
}

function digitsOf(n: number): number {
  let digits = 1;
  for (let p = 10; p <= n; p *= 10) digits++;
  return digits;
}

/** A string's UTF-8 bytes, for fragments written many times. */
export const utf8Bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));
