/**
 * The fuzz suite, replay side (the service side is kafka-fuzz.integration.test.ts): 10,000
 * seeded bad records of every kind among good ones, as a fixture file. Every line ends as
 * exactly one prediction or exactly one dead letter, and the right one; nothing else comes out.
 */
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { BAD_KINDS, FUZZ_MAX_MESSAGE_BYTES, fuzzRecords } from './support/fuzz.js';

const SEED = Number(process.env.RNNSTREAM_FUZZ_SEED ?? 20261202);
const BAD = 10_000;

describe('fuzz: replay', () => {
  it(`${BAD} bad records of ${BAD_KINDS.length} kinds (seed ${SEED}): every line is exactly one prediction or one dead letter, the right one`, () => {
    const records = fuzzRecords(SEED, BAD);
    const dir = mkdtempSync(join(tmpdir(), 'rnnstream-fuzz-'));
    const file = join(dir, 'fuzz.jsonl');
    writeFileSync(file, Buffer.concat(records.flatMap((r) => [r.value, Buffer.from('\n')])));
    const out = join(dir, 'predictions.jsonl');
    const dead = join(dir, 'dead.jsonl');
    const r = cli(['replay', '--pipeline', 'ball-direction', '--backend', 'onnx', '--input', file, '--out', out, '--dead-letters', dead, '--max-message-bytes', String(FUZZ_MAX_MESSAGE_BYTES), '--json']);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const lineOf = (source: unknown): number => Number(/:(\d+)$/.exec(String(source))![1]);
    const outcome = new Map<number, string[]>();
    for (const [f, kind] of [[out, 'prediction'], [dead, 'dead-letter']] as const) {
      for (const l of readFileSync(f, 'utf8').split('\n')) {
        if (!l) continue;
        const line = lineOf((JSON.parse(l) as { source: unknown }).source);
        outcome.set(line, [...(outcome.get(line) ?? []), kind]);
      }
    }
    const wrong: string[] = [];
    records.forEach((rec, i) => {
      const got = outcome.get(i + 1) ?? [];
      if (got.length !== 1 || got[0] !== rec.expect) wrong.push(`line ${i + 1} (${rec.kind}): ${JSON.stringify(got)}, expected ${rec.expect}`);
    });
    expect(wrong.slice(0, 10)).toEqual([]);
    expect(outcome.size).toBe(records.length);
    const kinds = new Set(records.filter((x) => x.expect === 'dead-letter').map((x) => x.kind));
    expect([...kinds].sort()).toEqual([...BAD_KINDS].sort());
    const summary = JSON.parse(r.stdout) as { predictions: number; deadLettered: number };
    process.stderr.write(`fuzz replay: ${records.length} lines, ${summary.predictions} predictions, ${summary.deadLettered} dead letters, seed ${SEED}\n`);
  }, 120_000);
});
