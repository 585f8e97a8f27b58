/**
 * The outputs' JSON: the byte writer the Kafka sink uses (writePredictionJson) writes exactly the
 * text of the string writer replay uses (predictionJson), so the two modes cannot drift apart.
 */
import { describe, expect, it } from 'vitest';
import { createRng } from '../src/core/prng.js';
import type { SourcePosition } from '../src/operators/records.js';
import { ByteWriter } from '../src/pipeline/json-bytes.js';
import { topIndices, type PredictionRecord } from '../src/pipeline/predict.js';
import { createHash } from 'node:crypto';
import { DEAD_LETTER_RAW_BYTES, deadLetterJson, formatFloat32, predictionJson, writePredictionJson } from '../src/pipeline/serialize.js';

const bytesOf = (write: (w: ByteWriter) => void): string => {
  const w = new ByteWriter(8); // small, so growing is exercised too
  write(w);
  return Buffer.from(w.view()).toString('utf8');
};

describe('JSON as bytes', () => {
  it('writes float32 values as formatFloat32 does, at the edges and on 200k random float32 values', () => {
    const f32 = (v: number): number => Math.fround(v);
    const edges = [0, -0, 1, f32(1e-8), f32(4.9e-8), f32(5e-8), f32(0.99999994), f32(0.1), f32(0.5), f32(1e-7), f32(0.0000001), -1, -0.5, 2, 1e10, -3.4e38, f32(1.0000001)];
    const rng = createRng(7);
    const random = Array.from({ length: 200_000 }, (_, i) => (i % 4 === 3 ? f32((rng.next() - 0.5) * 1e3) : f32(rng.next() ** (1 + (i % 9)))));
    const w = new ByteWriter(8);
    const wrong: string[] = [];
    for (const v of [...edges, ...random]) {
      w.reset();
      w.float32(v);
      const got = Buffer.from(w.view()).toString('utf8');
      if (got !== formatFloat32(v)) wrong.push(`${v}: ${got} != ${formatFloat32(v)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('writes integers and JSON strings as String and JSON.stringify do', () => {
    for (const n of [0, 7, 9, 10, 99, 100, 12345, 2 ** 31, 2 ** 53 - 1]) expect(bytesOf((w) => w.uint(n))).toBe(String(n));
    for (const s of ['', 'ball-0001', 'quote"d', 'back\\slash', 'tab\t', 'nl\n', '\u0000', 'ключ', '✓ 😀', 'del\u007f', '\ud800 lone'])
      expect(bytesOf((w) => w.jsonString(s)), s).toBe(JSON.stringify(s));
    expect(bytesOf((w) => w.utf8('ключ ✓ 😀 ascii'))).toBe('ключ ✓ 😀 ascii');
  });

  it('writes each prediction byte for byte as predictionJson', () => {
    const rng = createRng(11);
    const sources: SourcePosition[] = [
      { kind: 'kafka', topic: 'balls.input', partition: 3, offset: '1234567890123' },
      { kind: 'kafka', topic: 'tópico "x"', partition: 0, offset: '0' },
      { kind: 'file', file: 'fixtures/ball.jsonl', line: 42 },
      { kind: 'memory', index: 7 },
    ];
    const names = ['N', 'NE', 'E', 'SE', 'S', 'SW', 'W', 'NW'];
    const keys = ['ball-0001', 'k"1', 'ключ', '😀'];
    for (let i = 0; i < 2000; i++) {
      const softmax = i % 3 !== 0;
      const output = Float32Array.from({ length: softmax ? names.length : 2 }, () => (softmax ? rng.next() : (rng.next() - 0.5) * 100));
      const p: PredictionRecord = {
        kind: 'prediction',
        ended: false,
        key: keys[i % keys.length]!,
        seq: 1 + Math.floor(rng.next() * 1e6),
        prediction: softmax ? names[i % names.length]! : output[0]!,
        head: softmax ? 'softmax' : 'linear',
        names: softmax ? names : ['next', 'other'],
        output,
        ...(i % 2 === 0 ? { label: names[(i >> 1) % names.length]! } : {}),
        ...(softmax && i % 5 === 0 ? { top: topIndices(output, 1 + (i % 3)) } : {}),
        ...(softmax && i % 7 === 1 ? { topClass: keys[i % keys.length]! } : {}),
        ...(i % 4 === 1 ? { model: (i % 8 === 1 ? 'ab' : 'cd').repeat(32) } : {}),
        source: sources[i % sources.length]!,
      };
      expect(bytesOf((w) => writePredictionJson(p, w))).toBe(predictionJson(p));
    }
    // Where a hot swap may change the model (the service), a prediction names it by 16 hex digits.
    const named = JSON.parse(predictionJson({ kind: 'prediction', ended: false, key: 'k', seq: 1, prediction: 'N', head: 'softmax', names, output: new Float32Array(8), model: '0123456789abcdef'.repeat(4), source: sources[0]! })) as Record<string, unknown>;
    expect(Object.keys(named).slice(0, 4)).toEqual(['key', 'seq', 'model', 'prediction']);
    expect(named.model).toBe('0123456789abcdef');
  });

  it('writes only the top k classes, most probable first, where the pipeline asks for them', () => {
    const output = Float32Array.from([0.1, 0.5, 0.05, 0.3, 0.05]);
    expect(topIndices(output, 3)).toEqual([1, 3, 0]);
    expect(topIndices(Float32Array.from([0.2, 0.2, 0.6]), 2)).toEqual([2, 0]);
    const p: PredictionRecord = { kind: 'prediction', ended: true, key: 'u-1', seq: 4, prediction: 'b', head: 'softmax', names: ['a', 'b', 'c', 'd', 'e'], output, top: [1, 3, 0], source: { kind: 'memory', index: 3 } };
    const json = JSON.parse(predictionJson(p)) as { probabilities: Record<string, number> };
    expect(Object.entries(json.probabilities)).toEqual([['b', 0.5], ['d', 0.3], ['a', 0.1]]);
    expect(bytesOf((w) => writePredictionJson(p, w))).toBe(predictionJson(p));
  });
});

describe('dead letters, bounded', () => {
  const source: SourcePosition = { kind: 'kafka', topic: 'in', partition: 2, offset: '41' };
  const dead = (raw: string | Uint8Array) => ({ kind: 'dead-letter' as const, reason: 'not valid JSON', source, raw });
  const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

  it('keeps a small input whole, with its size and hash', () => {
    const d = JSON.parse(deadLetterJson(dead('{"x":'))) as Record<string, unknown>;
    expect(d).toEqual({ reason: 'not valid JSON', source: { topic: 'in', partition: 2, offset: '41' }, rawBytes: 5, rawSha256: sha('{"x":'), raw: '{"x":' });
  });

  it('cuts 700,000 bytes of \\x01 (6 bytes each when escaped) to the 64 KiB prefix: the size and hash name the rest', () => {
    const raw = new Uint8Array(700_000).fill(1);
    const json = deadLetterJson(dead(raw));
    expect(json.length).toBeLessThan(6 * DEAD_LETTER_RAW_BYTES + 400);
    const d = JSON.parse(json) as { raw: string; rawBytes: number; rawSha256: string; rawTruncated: boolean };
    expect(d.raw).toBe('\x01'.repeat(DEAD_LETTER_RAW_BYTES));
    expect([d.rawBytes, d.rawSha256, d.rawTruncated]).toEqual([700_000, sha(raw), true]);
  });

  it('keeps bytes that are not UTF-8 as base64, cut, and a UTF-8 prefix on a character boundary', () => {
    const bin = new Uint8Array(200_000).fill(0xff);
    const b = JSON.parse(deadLetterJson(dead(bin), { maxRawBytes: 1000 })) as { rawBase64: string; rawTruncated: boolean };
    expect(Buffer.from(b.rawBase64, 'base64')).toEqual(Buffer.alloc(1000, 0xff));
    expect(b.rawTruncated).toBe(true);
    const text = 'é'.repeat(10); // 2 bytes each: a 5-byte cut keeps 2 characters
    expect((JSON.parse(deadLetterJson(dead(text), { maxRawBytes: 5 })) as { raw: string }).raw).toBe('éé');
  });

  it('shrinks the prefix, to nothing if need be, to stay within maxBytes', () => {
    const raw = new Uint8Array(100_000).fill(1);
    for (const maxBytes of [50_000, 2_000, 300]) {
      const json = deadLetterJson(dead(raw), { maxBytes });
      expect(Buffer.byteLength(json)).toBeLessThanOrEqual(maxBytes);
      const d = JSON.parse(json) as { rawBytes: number; rawTruncated: boolean };
      expect([d.rawBytes, d.rawTruncated]).toEqual([100_000, true]);
    }
    // Too small for any of it: reason, source, size and hash only.
    const minimal = JSON.parse(deadLetterJson(dead(raw), { maxBytes: 0 })) as Record<string, unknown>;
    expect(Object.keys(minimal)).toEqual(['reason', 'source', 'rawBytes', 'rawSha256', 'rawTruncated']);
  });
});
