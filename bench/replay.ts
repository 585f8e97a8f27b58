/**
 * `npm run bench` (part 2): events per second of a full replay of a pipeline's default fixture
 * (the ball fixture unless --pipeline says otherwise), per backend that works here. Each run is a
 * fresh `rnnstream replay` process, as a user runs it; the figure is the median of the runs (time
 * from first read to last prediction, setup excluded).
 *
 *   node dist/bench/replay.js [--runs N] [--backends webgpu,onnx,...] [--pipeline NAME] [--json]
 */
import { spawnSync } from 'node:child_process';
import { projectPath } from '../src/paths.js';
import type { ReplaySummary } from '../src/replay/replay.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 3;
const pipeline = args.includes('--pipeline') ? args[args.indexOf('--pipeline') + 1]! : 'ball-direction';
const BACKENDS = args.includes('--backends') ? args[args.indexOf('--backends') + 1]!.split(',') : ['webgpu', 'onnx', 'gpu', 'webasm', 'cpu', 'reference'];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

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

if (json) {
  process.stdout.write(JSON.stringify(results) + '\n');
} else {
  const lines = [`Full replay of ${pipeline}'s default fixture, events/s, median of ${runs} fresh processes:`, '', '| backend | events | events/s (median) | runs | what ran |', '|---|---|---|---|---|'];
  for (const r of results) {
    lines.push(
      r.unavailable
        ? `| ${r.backend} | n/a | n/a | | unavailable: ${r.unavailable} |`
        : `| ${r.backend} | ${r.events} | ${Math.round(r.median!)} | ${r.eventsPerSecond!.map((v) => Math.round(v)).join(', ')} | ${r.detail} |`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
}
