/**
 * `npm run bench` (part 2): events per second of a full replay of a pipeline's default fixture
 * (the ball fixture unless --pipeline says otherwise), per backend that works here. Each run is a
 * fresh `rnnstream replay` process, as a user runs it; the figure is the median of the runs (time
 * from first read to last prediction, setup excluded).
 *
 *   node dist/bench/replay.js [--runs N] [--backends webgpu,onnx,...] [--pipeline NAME] [--json]
 *
 * For the ball pipeline it also runs `replay --out` on onnx alternately with the bare
 * pass-through (bench/pass-through.ts: gunzip, split, JSON.parse, one prediction-shaped
 * JSON.stringify per event, to a file), and prints the ratio: rnnstream's own decoding, state
 * and encoding against plain JSON (issue 23's bar: 0.7x).
 */
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectPath } from '../src/paths.js';
import type { ReplaySummary } from '../src/replay/replay.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 3;
const pipeline = args.includes('--pipeline') ? args[args.indexOf('--pipeline') + 1]! : 'ball-direction';
const BACKENDS = args.includes('--backends') ? args[args.indexOf('--backends') + 1]!.split(',') : ['webgpu', 'onnx', 'gpu', 'webasm', 'cpu', 'reference'];


interface Result {
  backend: string;
  detail?: string;
  eventsPerSecond?: number[];
  median?: number;
  events?: number;
  unavailable?: string;
}

const results: Result[] = [];
for (const backend of BACKENDS) {
  const rates: number[] = [];
  let last: ReplaySummary | undefined;
  let unavailable: string | undefined;
  for (let i = 0; i < runs; i++) {
    const r = spawnSync(process.execPath, ['--max-semi-space-size=64', projectPath('dist', 'src', 'cli', 'main.js'), 'replay', '--pipeline', pipeline, '--backend', backend, '--json'], {
      encoding: 'utf8',
    });
    if (r.status !== 0) {
      unavailable = (r.stderr.trim().split('\n').pop() ?? 'failed').replace(/^rnnstream: /, '');
      break;
    }
    last = JSON.parse(r.stdout) as ReplaySummary;
    rates.push(last.eventsPerSecond);
  }
  results.push(unavailable ? { backend, unavailable } : { backend, detail: last!.backend.detail, eventsPerSecond: rates, median: median(rates), events: last!.events });
  if (!json) process.stderr.write(`  replay ${backend} done\n`);
}

/** replay --out on onnx and the pass-through, alternating, `runs` each (at least 5): medians and their ratio. */
interface Rates {
  /** Events per wall-clock second. */
  readonly wall: number[];
  /** Events per CPU second (all threads), steadier on a shared machine. */
  readonly cpu: number[];
}

function passThroughRatio(): { replay: Rates; passThrough: Rates; ratio: number; cpuRatio: number } | undefined {
  if (pipeline !== 'ball-direction' || !BACKENDS.includes('onnx')) return undefined;
  const replay: Rates = { wall: [], cpu: [] };
  const passThrough: Rates = { wall: [], cpu: [] };
  const measure = (into: Rates, args: string[]): void => {
    const r = spawnSync(process.execPath, ['--max-semi-space-size=64', ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr}`);
    const s = JSON.parse(r.stdout) as { events: number; eventsPerSecond: number; cpuSeconds: number };
    into.wall.push(s.eventsPerSecond);
    into.cpu.push(s.events / s.cpuSeconds);
  };
  const out = join(tmpdir(), `rnnstream-bench-replay-${process.pid}.jsonl`);
  for (let i = 0; i < Math.max(5, runs); i++) {
    measure(passThrough, [projectPath('dist', 'bench', 'pass-through.js')]);
    measure(replay, [projectPath('dist', 'src', 'cli', 'main.js'), 'replay', '--pipeline', pipeline, '--backend', 'onnx', '--out', out, '--json']);
  }
  return { replay, passThrough, ratio: median(replay.wall) / median(passThrough.wall), cpuRatio: median(replay.cpu) / median(passThrough.cpu) };
}

const ratio = passThroughRatio();

if (json) {
  process.stdout.write(JSON.stringify({ results, passThrough: ratio }) + '\n');
} else {
  const lines = [`Full replay of ${pipeline}'s default fixture, events/s, median of ${runs} fresh processes:`, '', '| backend | events | events/s (median) | runs | what ran |', '|---|---|---|---|---|'];
  for (const r of results) {
    lines.push(
      r.unavailable
        ? `| ${r.backend} | n/a | n/a | | unavailable: ${r.unavailable} |`
        : `| ${r.backend} | ${r.events} | ${Math.round(r.median!)} | ${r.eventsPerSecond!.map((v) => Math.round(v)).join(', ')} | ${r.detail} |`,
    );
  }
  if (ratio) {
    const k = (v: number): string => Math.round(v).toLocaleString('en-US');
    lines.push(
      '',
      `replay --out on onnx against the bare pass-through (JSON.parse and JSON.stringify per event), alternating, ${ratio.replay.wall.length} runs each:`,
      `  replay --out  median ${k(median(ratio.replay.wall))} events/s (${ratio.replay.wall.map(k).join(', ')}); per CPU second ${k(median(ratio.replay.cpu))}`,
      `  pass-through  median ${k(median(ratio.passThrough.wall))} events/s (${ratio.passThrough.wall.map(k).join(', ')}); per CPU second ${k(median(ratio.passThrough.cpu))}`,
      `  ratio ${ratio.ratio.toFixed(2)}x by the wall clock, ${ratio.cpuRatio.toFixed(2)}x by CPU time`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
}
