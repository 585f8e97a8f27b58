/**
 * `node dist/bench/warm-up.js` (issue 25 item 4): what policy `warm` costs at scale, in process
 * (no broker): K ball keys (default 100,000) have a full history of N events (default 16) under
 * the committed model; then every key's next event is stepped in micro-batches of 1,024 keys,
 * once after a swap to the retrained model with policy warm (every key cold: each micro-batch
 * first warms its 1,024 keys on their histories, 16 waves of 1,024, then steps them) and once
 * with no swap (every key warm). Reported: the warm-up's history events per second, and events
 * per second of the first pass after the swap against the same pass with no swap. Alternating,
 * medians.
 *
 *   node dist/bench/warm-up.js [--keys 100000] [--history 16] [--runs 3] [--backend onnx]
 */
import { loadModelFile } from '../src/adapters/model-file.js';
import { resolveBackend } from '../src/backends/registry.js';
import { SwappableBackend } from '../src/backends/swappable.js';
import type { BackendChoice } from '../src/backends/types.js';
import { createRng } from '../src/core/prng.js';
import { projectPath } from '../src/paths.js';
import { loadPipeline } from '../src/pipeline/registry.js';
import { stateStoreFor, warmHistoryFor } from '../src/pipeline/predict.js';
import { KeyedStepper } from '../src/state/keyed-stepper.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const keys = opt('--keys', 100_000);
const historyLength = opt('--history', 16);
const runs = opt('--runs', 3);
const backendName = (args.includes('--backend') ? args[args.indexOf('--backend') + 1] : 'onnx') as BackendChoice;
const BATCH = 1024;

interface Ball {
  readonly ballId: string;
  readonly frame: number;
  readonly t: number;
  readonly x: number;
  readonly y: number;
}

async function once(swap: boolean): Promise<{ perSecond: number; warmUpPerSecond: number }> {
  const pipeline = await loadPipeline('ball-direction');
  const served = loadModelFile(projectPath('pipelines', 'ball-direction', 'model.json'));
  const retrained = loadModelFile(projectPath('fixtures', 'models', 'ball-direction-retrained.json'));
  const history = warmHistoryFor(pipeline, historyLength);
  const store = stateStoreFor(pipeline, served, { capacity: keys, history });
  const backend = new SwappableBackend((await resolveBackend(backendName, served)).backend);
  let warmUp = { events: 0, ms: 0 };
  const stepper = new KeyedStepper<Ball, Ball>(
    { backend, store, keyOf: (e) => e.ballId, eventOf: (e) => e, features: pipeline.features!, carry: pipeline.carry!, history, onWarmUp: (_k, events, ms) => (warmUp = { events: warmUp.events + events, ms: warmUp.ms + ms }) },
    BATCH,
    () => 0,
  );
  const rng = createRng(7);
  const frame = (k: number, f: number): Ball => ({ ballId: `b-${k}`, frame: f, t: f / 30, x: rng.uniform(0, 1), y: rng.uniform(0, 1) });
  for (let f = 0; f < historyLength; f++) for (let k = 0; k < keys; k += BATCH) await stepper.run(Array.from({ length: Math.min(BATCH, keys - k) }, (_, i) => frame(k + i, f)));
  if (swap) {
    backend.replace((await resolveBackend(backendName, retrained)).backend).dispose();
    store.serve(retrained, 'warm');
  }
  const next = Array.from({ length: keys }, (_, k) => frame(k, historyLength));
  const started = performance.now();
  for (let k = 0; k < keys; k += BATCH) await stepper.run(next.slice(k, k + BATCH));
  const seconds = (performance.now() - started) / 1000;
  backend.dispose();
  return { perSecond: keys / seconds, warmUpPerSecond: warmUp.events / (warmUp.ms / 1000) };
}

const plain: number[] = [];
const swapped: number[] = [];
const warmUps: number[] = [];
for (let r = 0; r < runs; r++) {
  plain.push((await once(false)).perSecond);
  const s = await once(true);
  swapped.push(s.perSecond);
  warmUps.push(s.warmUpPerSecond);
}
process.stdout.write(
  `${keys} ball keys, history ${historyLength}, ${backendName}, micro-batches of ${BATCH}, medians of ${runs} alternating runs:\n` +
    `  every key's next event with no swap: ${Math.round(median(plain))} events/s\n` +
    `  the same right after a swap, every key cold: ${Math.round(median(swapped))} events/s (${(median(swapped) / median(plain)).toFixed(3)}x), ` +
    `the warm-up stepping ${Math.round(median(warmUps))} history events/s\n`,
);
