/**
 * `npm run bench:memory`: memory per key and the cost of eviction, measured with replay in fresh
 * processes on generated ball fixtures (each key's frames 0 and 1, all keys' frame 0 first, so
 * a key's second event comes N events after its first).
 *
 * - bytes per key: (peak RSS with N keys x 2 events - peak RSS with N/100 keys x 200 events) /
 *   (N - N/100), capacity N: the same 2N events either way, so the difference is what the keys
 *   themselves cost (their state and bookkeeping), not what processing 2N events costs;
 * - eviction: the same N-key replay with keyCapacity at 10% of N (every key is evicted before
 *   its second event and restarts from zero state), as a ratio of the replay without eviction.
 *
 * - finished utterances (`--utterances N`): intent-from-words over N utterances of 2 words (64
 *   under way at a time) against N/100 utterances of 200 words, the same events: a key's state
 *   is freed at its last word, so what N finished utterances leave behind is the difference.
 *
 *   node dist/bench/memory.js [--keys 1000000] [--runs 3] [--json] [--dist DIR]
 *   node dist/bench/memory.js --utterances 1000000 [--runs 1] [--json]
 *
 * `--dist` runs the CLI of another build (a folder in the project holding src/cli/main.js), to
 * measure a change against the build before it on the same fixtures.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectPath } from '../src/paths.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const keys = opt('--keys', 1_000_000);
const runs = opt('--runs', 3);
const json = args.includes('--json');
const dist = args.includes('--dist') ? args[args.indexOf('--dist') + 1]! : 'dist';


async function writeFixture(file: string, n: number, frames = 2): Promise<void> {
  const out = createWriteStream(file);
  for (let frame = 0; frame < frames; frame++) {
    let chunk = '';
    for (let k = 0; k < n; k++) {
      chunk += `{"ballId":"ball-${k}","frame":${frame},"t":${frame / 30},"x":${((k % 1000) / 1000).toFixed(3)},"y":${(frame * 0.01 + 0.5).toFixed(3)}}\n`;
      if (chunk.length > 1 << 20) {
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        chunk = '';
      }
    }
    out.write(chunk);
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

interface Run {
  readonly maxRssBytes: number;
  readonly keysHeld: number;
  readonly eventsPerSecond: number;
  readonly evictions: number;
}

function replay(file: string, capacity: number, pipeline = 'ball-direction'): Run {
  const r = spawnSync(
    process.execPath,
    ['--max-semi-space-size=64', projectPath(dist, 'src', 'cli', 'main.js'), 'replay', '--pipeline', pipeline, '--backend', 'onnx', '--input', file, '--key-capacity', String(capacity), '--json'],
    { encoding: 'utf8', maxBuffer: 1 << 26 },
  );
  if (r.status !== 0) throw new Error(`replay failed: ${r.stderr.slice(-2000)}`);
  const s = JSON.parse(r.stdout) as Run;
  return { maxRssBytes: s.maxRssBytes, keysHeld: s.keysHeld, eventsPerSecond: s.eventsPerSecond, evictions: s.evictions };
}

const WORDS = ['what', 'is', 'my', 'balance', 'book', 'a', 'flight', 'to', 'paris', 'please'];

/** `count` utterances of `words` words each, 64 under way at a time. */
async function writeUtterances(file: string, count: number, words: number): Promise<void> {
  const out = createWriteStream(file);
  let chunk = '';
  for (let start = 0; start < count; start += 64) {
    const end = Math.min(count, start + 64);
    for (let index = 0; index < words; index++) {
      for (let u = start; u < end; u++) {
        chunk += `{"utteranceId":"u-${u}","index":${index},"word":"${WORDS[(u + index) % WORDS.length]}","last":${index === words - 1}}\n`;
      }
      if (chunk.length > 1 << 20) {
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        chunk = '';
      }
    }
  }
  out.write(chunk);
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

/** Peak RSS per finished utterance: N short utterances against N/100 long ones, the same events. */
async function finishedUtterances(count: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'rnnstream-bench-utterances-'));
  try {
    const many = join(dir, 'many.jsonl');
    const few = join(dir, 'few.jsonl');
    await writeUtterances(many, count, 2);
    await writeUtterances(few, Math.floor(count / 100), 200);
    const perUtterance: number[] = [];
    const rates: number[] = [];
    let peaks: number[] = [];
    for (let i = 0; i < runs; i++) {
      const a = replay(many, count, 'intent-from-words');
      const b = replay(few, count, 'intent-from-words');
      perUtterance.push((a.maxRssBytes - b.maxRssBytes) / (count - Math.floor(count / 100)));
      rates.push(a.eventsPerSecond);
      peaks = [a.maxRssBytes, b.maxRssBytes];
      if (!json) process.stderr.write(`  run ${i + 1}: peak RSS ${Math.round(a.maxRssBytes / 2 ** 20)} MiB for ${count} utterances, ${Math.round(b.maxRssBytes / 2 ** 20)} MiB for ${Math.floor(count / 100)}; keys holding state at the end: ${a.keysHeld}; ${Math.round(a.eventsPerSecond)} events/s\n`);
    }
    const result = { utterances: count, events: 2 * count, runs, bytesPerFinishedUtterance: median(perUtterance), peakRssBytes: peaks, eventsPerSecond: median(rates), perUtteranceRuns: perUtterance };
    process.stdout.write(json ? JSON.stringify(result) + '\n' : `intent-from-words, ${count} finished utterances of 2 words against ${Math.floor(count / 100)} of 200 (the same ${2 * count} events): ${Math.round(result.bytesPerFinishedUtterance)} bytes of peak RSS per finished utterance (median of ${runs}); ${Math.round(result.eventsPerSecond)} events/s\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (args.includes('--utterances')) return finishedUtterances(opt('--utterances', 1_000_000));
  const dir = mkdtempSync(join(tmpdir(), 'rnnstream-bench-memory-'));
  try {
    const small = Math.max(1000, Math.floor(keys / 100));
    const big = join(dir, 'big.jsonl');
    const little = join(dir, 'small.jsonl');
    await writeFixture(big, keys);
    // The same number of events on fewer keys: what grows with events rather than keys (V8's
    // young generation at its full size, compiled code, I/O buffers, garbage awaiting a major
    // GC) is then in both peaks and cancels out, and the difference is what the keys cost.
    await writeFixture(little, small, Math.round((2 * keys) / small));
    const perKey: number[] = [];
    const full: number[] = [];
    const evicting: number[] = [];
    let evictions = 0;
    for (let i = 0; i < runs; i++) {
      const a = replay(big, keys);
      const b = replay(little, keys);
      const c = replay(big, Math.floor(keys / 10));
      perKey.push((a.maxRssBytes - b.maxRssBytes) / (keys - small));
      full.push(a.eventsPerSecond);
      evicting.push(c.eventsPerSecond);
      evictions = c.evictions;
      if (!json) process.stderr.write(`  run ${i + 1}: ${Math.round(perKey.at(-1)!)} bytes/key; ${Math.round(a.eventsPerSecond)} events/s, with eviction ${Math.round(c.eventsPerSecond)} (${c.evictions} evictions)\n`);
    }
    const result = { keys, events: 2 * keys, runs, bytesPerKey: median(perKey), eventsPerSecond: median(full), evictingEventsPerSecond: median(evicting), evictionRatio: median(full) / median(evicting), evictions, perKeyRuns: perKey, fullRuns: full, evictingRuns: evicting };
    if (json) {
      process.stdout.write(JSON.stringify(result) + '\n');
      return;
    }
    process.stdout.write(
      [
        `Memory per key and eviction, ball-direction (2x32 LSTM, state 512 bytes as float32), ${keys} keys x 2 events, median of ${runs}:`,
        '',
        `| measure | median | runs |`,
        '|---|---|---|',
        `| peak RSS per key (capacity ${keys}) | ${Math.round(result.bytesPerKey)} bytes | ${perKey.map(Math.round).join(', ')} |`,
        `| replay, no eviction | ${Math.round(result.eventsPerSecond)} events/s | ${full.map(Math.round).join(', ')} |`,
        `| replay, capacity ${Math.floor(keys / 10)} (${evictions} evictions) | ${Math.round(result.evictingEventsPerSecond)} events/s | ${evicting.map(Math.round).join(', ')} |`,
        '',
        `no eviction / with eviction: ${result.evictionRatio.toFixed(2)}x (target at most 1.3x)`,
      ].join('\n') + '\n',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:memory failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
