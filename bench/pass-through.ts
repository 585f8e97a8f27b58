/**
 * The bare pass-through replay is measured against (`npm run bench`, issue 23): what any Node
 * program must do to turn the fixture into one prediction-shaped JSON line per event, and no
 * more. gunzip, a line split, JSON.parse, one JSON.stringify of a prediction-shaped object per
 * event (8 probabilities, a label, a source), written to a file. No model, no state, no checks.
 *
 *   node dist/bench/pass-through.js [--input fixtures/ball.jsonl.gz] [--out /tmp/pass.jsonl]
 *
 * Prints {"events","seconds","eventsPerSecond","cpuSeconds"} as JSON: the time from the first
 * read to the last line written, as replay's summary counts it, and the CPU time over it.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createGunzip } from 'node:zlib';
import { projectPath } from '../src/paths.js';

const { values: o } = parseArgs({ options: { input: { type: 'string', default: projectPath('fixtures', 'ball.jsonl.gz') }, out: { type: 'string', default: join(tmpdir(), 'rnnstream-pass-through.jsonl') } } });
const LABELS = ['E', 'NE', 'N', 'NW', 'W', 'SW', 'S', 'SE'];
const UNIFORM = 1 / LABELS.length;

const started = performance.now();
const cpuAtStart = process.cpuUsage();
const input = createReadStream(o.input!);
const lines = o.input!.endsWith('.gz') ? input.pipe(createGunzip()) : input;
const out = createWriteStream(o.out!);
let rest = '';
let events = 0;
let buffered = '';
const seqs = new Map<string, number>();
for await (const chunk of lines) {
  const text = rest + (chunk as Buffer).toString('utf8');
  const parts = text.split('\n');
  rest = parts.pop()!;
  for (const line of parts) {
    if (line.length === 0) continue;
    const e = JSON.parse(line) as { ballId: string; direction?: string };
    const seq = (seqs.get(e.ballId) ?? 0) + 1;
    seqs.set(e.ballId, seq);
    events++;
    const probabilities: Record<string, number> = {};
    for (const l of LABELS) probabilities[l] = UNIFORM;
    buffered += `${JSON.stringify({ key: e.ballId, seq, prediction: LABELS[0], probabilities, label: e.direction, source: `${o.input}:${events}` })}\n`;
  }
  if (buffered.length > 1 << 16) {
    if (!out.write(buffered)) await once(out, 'drain');
    buffered = '';
  }
}
out.end(buffered);
await once(out, 'finish');
const seconds = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuAtStart);
process.stdout.write(`${JSON.stringify({ events, seconds, eventsPerSecond: events / seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);
