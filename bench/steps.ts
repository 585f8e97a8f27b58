/**
 * `npm run bench` (part 1): key-steps per second of one LSTM and one GRU step (input 8,
 * H = 32 and 128) at B = 1, 64, 1024, 8192 keys, for every backend that works on this host,
 * beside a plain Float32Array loop and onnxruntime-node's own LSTM/GRU operator, all in one run.
 * Each figure is the median of repeats; ratios are to onnxruntime-node's bare operator.
 *
 * Device backends with a micro-batch path are also timed through it: `--waves W` waves of B keys
 * per call (W x B key-steps, one upload and one read-back), the way rnnByKey steps a micro-batch:
 * "micro-batch" with the keys' state going up and down each call, "slot table" with it staying
 * in the device's slot table (only slot numbers, inputs and outputs cross the bus).
 *
 *   node dist/bench/steps.js [--json] [--quick] [--backends onnx,webasm,...] [--cells lstm,gru]
 *     [--hidden 32,128] [--batches 1,64,1024,8192] [--rounds N] [--chunk SECONDS] [--waves W] [--no-loop]
 */
import { availableParallelism, cpus } from 'node:os';
import { createRequire } from 'node:module';
import { repeatedMicroBatch, repeatedSlotMicroBatch, resolveBackend } from '../src/backends/registry.js';
import { loadOnnxRuntime, openSession } from '../src/backends/onnx.js';
import { buildStepGraph } from '../src/backends/onnx-graph.js';
import { BACKEND_NAMES, type BackendName, type StepBackend } from '../src/backends/types.js';
import { BackendUnavailableError } from '../src/core/errors.js';
import type { CellKind, RnnModel } from '../src/core/model.js';
import { randomModel } from '../src/core/random-model.js';
import { Float32LoopCell } from './float32-loop.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const json = args.includes('--json');
const valueOf = (flag: string): string | undefined => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
const listOf = (flag: string): string[] | undefined => valueOf(flag)?.split(',');
const only = listOf('--backends');

const CELLS = (listOf('--cells') ?? ['lstm', 'gru']) as CellKind[];
const HIDDEN = (listOf('--hidden') ?? ['32', '128']).map(Number);
const BATCHES = listOf('--batches')?.map(Number) ?? (quick ? [1, 1024] : [1, 64, 1024, 8192]);
/** Waves per micro-batch call for backends with stepMicroBatch (0: not timed). */
const WAVES = Number(valueOf('--waves') ?? 8);
/** The plain Float32Array loop is single-threaded JavaScript: minutes per call at H=512, B=32768. */
const LOOP = !args.includes('--no-loop');
const INPUT = 8;
/**
 * Side by side: contenders are timed in alternating rounds, so a noisy neighbour on this
 * shared machine slows them alike; a round gives each at least CHUNK_SECONDS of calls.
 * Rates are medians over rounds; a ratio is the median of per-round ratios.
 */
const ROUNDS = Number(valueOf('--rounds') ?? (quick ? 3 : 11));
const CHUNK_SECONDS = Number(valueOf('--chunk') ?? (quick ? 0.03 : 0.08));


type Contender = () => void | Promise<void>;

/** Seconds per call, per contender per round. */
async function sideBySide(contenders: Contender[]): Promise<number[][]> {
  const perCall: number[][] = contenders.map(() => []);
  for (const fn of contenders) await fn(); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate the order each round, so no contender always follows the same neighbour
    // (onnxruntime's worker threads spin for a while after a run and slow whoever comes next).
    const order = contenders.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      let calls = 0;
      const t0 = performance.now();
      do {
        await contenders[i]!();
        calls++;
      } while (performance.now() - t0 < CHUNK_SECONDS * 1000);
      perCall[i]!.push((performance.now() - t0) / 1000 / calls);
    }
  }
  return perCall;
}

interface Row {
  cell: CellKind;
  hidden: number;
  batch: number;
  name: string;
  keyStepsPerSecond: number | null;
  ratioToOrt: number | null;
  note?: string;
}

function benchModel(cell: CellKind, hidden: number): RnnModel {
  return randomModel({ features: INPUT, layers: [{ cell, hiddenSize: hidden }], head: { kind: 'softmax', labels: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'] }, seed: 5 });
}

async function main(): Promise<void> {
  const ort = loadOnnxRuntime();
  const require = createRequire(import.meta.url);
  const ortVersion = require('onnxruntime-node/package.json').version as string;
  const threads = availableParallelism();
  const rows: Row[] = [];
  const unavailable = new Map<string, string>();
  const backendNames = (BACKEND_NAMES as readonly BackendName[]).filter((n) => !only || only.includes(n));

  for (const cell of CELLS) {
    for (const hidden of HIDDEN) {
      const model = benchModel(cell, hidden);
      const backends: StepBackend[] = [];
      for (const name of backendNames) {
        try {
          backends.push((await resolveBackend(name, model)).backend);
        } catch (err) {
          unavailable.set(name, err instanceof BackendUnavailableError ? err.reason : (err as Error).message);
        }
      }
      // onnxruntime's own operator, alone in a graph, with its default session options.
      const bare = buildStepGraph(model, { head: false });
      const session = await openSession(ort, bare.bytes, { intraOpNumThreads: threads, executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
      const loop = new Float32LoopCell(model.layers[0]!);

      for (const batch of BATCHES) {
        const input = new Float32Array(batch * INPUT).map((_, i) => Math.sin(i));
        const fetches = Object.fromEntries(bare.stateOutputs.map((n) => [n, null]));
        const feeds: Record<string, unknown> = { x: new ort.Tensor('float32', input, [1, batch, INPUT]) };
        bare.stateInputs.forEach((n) => (feeds[n] = new ort.Tensor('float32', new Float32Array(batch * hidden), [1, batch, hidden])));
        const h = new Float32Array(batch * hidden);
        const c = new Float32Array(batch * hidden);
        const names = [`onnxruntime ${cell.toUpperCase()} op`];
        /** Key-steps per call of each contender. */
        const keySteps = [batch];
        const contenders: Contender[] = [
          async () => {
            await session.run(feeds, fetches);
          },
        ];
        const add = (name: string, steps: number, fn: Contender): void => {
          names.push(name);
          keySteps.push(steps);
          contenders.push(fn);
        };
        if (LOOP) add('Float32Array loop', batch, () => loop.step(batch, input, h, c));
        for (const backend of backends) {
          let state = new Float32Array(batch * model.stateSize);
          let next = new Float32Array(batch * model.stateSize);
          const output = new Float32Array(batch * model.outputSize);
          add(backend.name, batch, async () => {
            await backend.step(batch, input, state, next, output);
            [state, next] = [next, state];
          });
          if (backend.stepMicroBatch && backend.device && WAVES > 0) add(`${backend.name} micro-batch`, WAVES * batch, repeatedMicroBatch(backend, model, batch, WAVES).call);
          if (backend.stateTable && backend.device && WAVES > 0) add(`${backend.name} slot table`, WAVES * batch, repeatedSlotMicroBatch(backend.stateTable, model, batch, WAVES).call);
        }
        // Each contender is paired with onnxruntime's operator and the two alternate, so the
        // ratio compares neighbours in time; the operator's own rate is the median of all pairs.
        const ortAll: number[] = [];
        for (let i = 1; i < names.length; i++) {
          const [ortRounds, rounds] = await sideBySide([contenders[0]!, contenders[i]!]);
          ortAll.push(...ortRounds!);
          rows.push({
            cell,
            hidden,
            batch,
            name: names[i]!,
            keyStepsPerSecond: keySteps[i]! / median(rounds!),
            // Per key-step: a micro-batch call does WAVES times the operator's work.
            ratioToOrt: median(rounds!.map((sec, r) => (ortRounds![r]! / sec) * (keySteps[i]! / batch))),
          });
        }
        rows.push({ cell, hidden, batch, name: names[0]!, keyStepsPerSecond: batch / median(ortAll), ratioToOrt: 1 });
        if (!json) process.stderr.write(`  ${cell} H=${hidden} B=${batch} done\n`);
      }
      session.release();
      for (const b of backends) b.dispose();
    }
  }

  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: threads,
    node: process.version,
    onnxruntime: ortVersion,
    date: new Date().toISOString(),
  };
  if (json) {
    process.stdout.write(JSON.stringify({ machine, rows, unavailable: Object.fromEntries(unavailable) }) + '\n');
    return;
  }
  const fmt = (v: number | null): string => (v === null ? 'n/a' : v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0));
  const names = [...new Set(rows.map((r) => r.name.replace(/ (LSTM|GRU) op$/, ' op')))];
  const lines = [
    `Key-steps per second (one model step for B keys; input ${INPUT}). ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, onnxruntime-node ${machine.onnxruntime}, ${machine.date}.`,
    `Each cell: key-steps/s, median of ${ROUNDS} rounds alternating with onnxruntime's bare operator (median per-round ratio to it).`,
    '',
    `| cell | H | B | ${names.join(' | ')} |`,
    `|---|---|---|${names.map(() => '---').join('|')}|`,
  ];
  for (const cell of CELLS) {
    for (const hidden of HIDDEN) {
      for (const batch of BATCHES) {
        const cells = names.map((n) => {
          const r = rows.find((x) => x.cell === cell && x.hidden === hidden && x.batch === batch && x.name.replace(/ (LSTM|GRU) op$/, ' op') === n);
          return r ? `${fmt(r.keyStepsPerSecond)} (${r.ratioToOrt!.toFixed(2)}x)` : 'n/a';
        });
        lines.push(`| ${cell} | ${hidden} | ${batch} | ${cells.join(' | ')} |`);
      }
    }
  }
  if (unavailable.size > 0) {
    lines.push('', 'Backends not measured here:');
    for (const [name, reason] of unavailable) lines.push(`- ${name}: ${reason}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    // As in the CLI: a native add-on's handle (Dawn's) must not hold a finished bench open.
    setTimeout(() => process.exit(), 5000).unref();
  });
