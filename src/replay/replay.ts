/**
 * Fixture replay: a recorded JSON Lines file through the very operators the Kafka service runs
 * (pipeline/predict.ts), predictions out as JSON Lines, and a summary with throughput and, when
 * the fixture carries labels, accuracy overall and by step index.
 */
import { z } from 'zod';
import { resolveBackend, type SkippedBackend } from '../backends/registry.js';
import { BACKEND_NAMES, type TransferCounts } from '../backends/types.js';
import { UsageError } from '../core/errors.js';
import { describeModel } from '../core/model.js';
import { loadModelFile } from '../adapters/model-file.js';
import { formatZodIssues } from '../core/validation.js';
import { FixtureSource, fixtureSize } from '../adapters/fixture-source.js';
import { BoundedQueue } from '../operators/bounded-queue.js';
import { microBatchPath, stateResidence } from '../state/keyed-stepper.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../operators/decode-events.js';
import type { DeadLetter } from '../operators/records.js';
import { silentLogger, type Logger } from '../observability/logger.js';
import { stateStoreFor, type PredictionRecord } from '../pipeline/predict.js';
import { runPipeline } from '../runner/run-pipeline.js';
import { ReplaySink } from './replay-sink.js';
import { eventOfLine } from '../pipeline/define.js';
import { loadPipeline } from '../pipeline/registry.js';
import { DEFAULT_KEY_CAPACITY } from '../state/key-state-store.js';
import { AccuracyTracker, type AccuracyReport } from './accuracy.js';
import { outOfScopeRule } from '../pipeline/out-of-scope.js';
import { prequentialFor } from '../pipeline/prequential.js';

export const replayOptionsSchema = z
  .object({
    pipeline: z.string().min(1),
    input: z.string().min(1).optional(),
    model: z.string().min(1).optional(),
    backend: z.enum(['auto', ...BACKEND_NAMES]).default('auto'),
    out: z.string().min(1).optional(),
    deadLetters: z.string().min(1).optional(),
    pace: z.enum(['max', 'realtime']).default('max'),
    maxBatchSize: z.int().positive().default(4096),
    maxWaitMs: z.number().nonnegative().default(2),
    keyCapacity: z.int().positive().default(DEFAULT_KEY_CAPACITY),
    idleTtlMs: z.number().positive().optional(),
    threads: z.int().positive().optional(),
    /** Whole micro-batches per backend call (default: on for device backends, see rnnByKey). */
    microBatch: z.boolean().optional(),
    /** Keys' state in the device backend's slot table (default: on where the backend has one and the store fits). */
    stateOnDevice: z.boolean().optional(),
    /** Inputs longer than this are dead-lettered unparsed, as in the service. */
    maxMessageBytes: z.int().positive().default(DEFAULT_MAX_MESSAGE_BYTES),
    /** The out-of-scope threshold, in place of the model's (0: no rule; see out-of-scope.ts). */
    outOfScopeThreshold: z.number().min(0).max(1).optional(),
  })
  .strict();
export type ReplayOptions = z.input<typeof replayOptionsSchema>;

export interface ReplaySummary {
  readonly pipeline: string;
  readonly input: string;
  readonly model: { readonly name: string; readonly hash: string; readonly architecture: string; readonly trained: boolean };
  readonly backend: { readonly name: string; readonly detail: string; readonly requested: string; readonly skipped: readonly SkippedBackend[] };
  readonly events: number;
  /** Key states created: the distinct keys, unless a key was evicted (or ended) and came back, which counts again. */
  readonly keys: number;
  /** Keys holding state at the end (a pipeline whose keys end, as utterances do, frees them). */
  readonly keysHeld: number;
  readonly predictions: number;
  readonly deadLettered: number;
  /** Blank lines skipped (not events: neither predicted nor dead-lettered). */
  readonly blankLines: number;
  /** Events missing by the pipeline's sequence (a consecutive one: ball frames), summed over keys. */
  readonly sequenceGaps: number;
  readonly evictions: number;
  readonly seconds: number;
  readonly eventsPerSecond: number;
  /**
   * CPU time (user + system, every thread) over the same span as `seconds`: on a shared machine
   * it moves less with the neighbours' load than the wall clock does.
   */
  readonly cpuSeconds: number;
  readonly setupSeconds: number;
  /** The process's peak resident memory so far (bytes). */
  readonly maxRssBytes: number;
  readonly accuracy?: AccuracyReport;
  /** Device backends: host↔device traffic counted by the backend, in all and per micro-batch. */
  readonly transfers?: TransferCounts & {
    readonly microBatches: number;
    readonly waves: number;
    /** Whether each micro-batch went to the backend whole (one call) or wave by wave. */
    readonly microBatchPath: boolean;
    /** Whether keys' state stayed on the device (its slot table) between micro-batches, and why. */
    readonly stateOnDevice: { readonly on: boolean; readonly why: string };
    readonly perMicroBatch: { readonly bytesUp: number; readonly bytesDown: number; readonly kernelCalls: number; readonly readBacks: number };
  };
  /** The out-of-scope rule predictions were served with, where there was one. */
  readonly outOfScope?: { readonly label: string; readonly threshold: number; readonly from: 'model' | 'flag' };
  /** Each prediction scored when its key's next event arrived: running (live) accuracy. */
  readonly prequential?: {
    readonly scored: number;
    readonly correct: number;
    readonly accuracy: number;
    /** What scored each prediction: its key's next event, or (keys that end) the key's last event, its final prediction. */
    readonly scoredBy: 'next event' | 'last event';
  };
}

export interface ReplayIo {
  readonly logger?: Logger;
  /** Where dead letters go when no --dead-letters file is given. */
  readonly onDeadLetter?: (deadLetter: DeadLetter) => void;
  /** Every prediction, in output order (evaluation joins them with the events). */
  readonly onPrediction?: (prediction: PredictionRecord) => void;
  /** Progress over bytes of the input file. */
  readonly progress?: { start(totalBytes: number): void; update(bytes: number): void; stop(): void };
}

export async function replay(options: ReplayOptions, io: ReplayIo = {}): Promise<ReplaySummary> {
  const parsedOptions = replayOptionsSchema.safeParse(options);
  if (!parsedOptions.success) throw new UsageError(`replay options: ${formatZodIssues(parsedOptions.error).join('; ')}`);
  const opts = parsedOptions.data;
  const logger = io.logger ?? silentLogger;
  const setupStart = performance.now();

  const pipeline = await loadPipeline(opts.pipeline);
  const input = opts.input ?? pipeline.defaultFixture;
  const totalBytes = fixtureSize(input);
  const model = loadModelFile(opts.model ?? pipeline.modelFile);
  const resolution = await resolveBackend(opts.backend, model, { logger, ...(opts.threads ? { threads: opts.threads } : {}) });
  const { backend } = resolution;
  const store = stateStoreFor(pipeline, model, { capacity: opts.keyCapacity, idleTtlMs: opts.idleTtlMs });
  const queue = new BoundedQueue(opts.maxBatchSize * 4);
  const accuracy = pipeline.label ? new AccuracyTracker() : undefined;
  const prequential = prequentialFor(pipeline, model);
  const outOfScope = outOfScopeRule(pipeline, model, opts.outOfScopeThreshold);
  let blankLines = 0;
  const batches = { microBatches: 0, waves: 0 };
  // Counted from here: the backend's own set-up (weights, a probe step) is not the stream's.
  const transfersAtStart = backend.transfers;
  const setupSeconds = (performance.now() - setupStart) / 1000;

  // Only realtime pacing calls this: parsing a line twice costs nothing at event-time speed.
  const timeOf = (line: string): number | undefined => {
    const event = eventOfLine(pipeline, line);
    return event === undefined ? undefined : pipeline.eventTime?.(event);
  };

  io.progress?.start(totalBytes);
  const started = performance.now();
  const cpuAtStart = process.cpuUsage();
  const source = new FixtureSource(input, { queue, pace: opts.pace, timeOf, onProgress: (b) => io.progress?.update(b), onBlankLine: () => blankLines++ });
  const sink = new ReplaySink({ out: opts.out, deadLetters: opts.deadLetters, accuracy, onPrediction: io.onPrediction, onDeadLetter: io.onDeadLetter });
  try {
    await runPipeline({
      source,
      sink,
      pipeline,
      model,
      store,
      predict: {
        backend,
        queue,
        prequential,
        outOfScope,
        maxBatchSize: opts.maxBatchSize,
        maxWaitMs: opts.maxWaitMs,
        maxBytes: opts.maxMessageBytes,
        microBatch: opts.microBatch,
        stateOnDevice: opts.stateOnDevice,
        onBatch: (_events, waves) => {
          batches.microBatches++;
          batches.waves += waves;
        },
      },
      logger,
    }).done;
  } finally {
    io.progress?.stop();
    backend.dispose();
    await sink.flush();
  }
  const { predictions, deadLettered, sequenceGaps } = sink;
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuAtStart);
  const events = predictions + deadLettered;
  const stats = store.stats;
  const residence = stateResidence(backend, store, { ...opts, frames: pipeline.frames });
  const transfers = transfersSince(transfersAtStart, backend.transfers, batches, microBatchPath(backend, { microBatch: opts.microBatch, frames: pipeline.frames }), { on: residence.table !== undefined, why: residence.why });
  return {
    pipeline: pipeline.name,
    input,
    model: {
      name: model.name,
      hash: model.hash,
      architecture: describeModel(model),
      trained: (model.file.training as { kind?: unknown } | undefined)?.kind !== 'random',
    },
    backend: { name: backend.name, detail: backend.detail, requested: resolution.requested, skipped: resolution.skipped },
    events,
    keys: stats.created,
    keysHeld: store.size,
    predictions,
    deadLettered,
    blankLines,
    sequenceGaps,
    evictions: stats.evictedByCapacity + stats.evictedByTtl,
    seconds,
    eventsPerSecond: seconds > 0 ? events / seconds : 0,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    setupSeconds,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
    ...(accuracy && accuracy.labelled > 0 ? { accuracy: accuracy.report() } : {}),
    ...(transfers ? { transfers } : {}),
    ...(outOfScope ? { outOfScope: { label: outOfScope.label, threshold: outOfScope.threshold, from: outOfScope.from } } : {}),
    ...(prequential ? { prequential: { scored: prequential.scored, correct: prequential.correct, accuracy: prequential.accuracy, scoredBy: pipeline.outcome ? ('next event' as const) : ('last event' as const) } } : {}),
  };
}

/** A device backend's traffic during the stream (end minus start), in all and per micro-batch. */
function transfersSince(start: TransferCounts | undefined, end: TransferCounts | undefined, batches: { microBatches: number; waves: number }, microBatchPath: boolean, stateOnDevice: { on: boolean; why: string }): ReplaySummary['transfers'] {
  if (!start || !end) return undefined;
  const d = { bytesUp: end.bytesUp - start.bytesUp, bytesDown: end.bytesDown - start.bytesDown, kernelCalls: end.kernelCalls - start.kernelCalls, readBacks: end.readBacks - start.readBacks, calls: end.calls - start.calls };
  const per = (n: number): number => (batches.microBatches > 0 ? Math.round(n / batches.microBatches) : 0);
  return { ...d, ...batches, microBatchPath, stateOnDevice, perMicroBatch: { bytesUp: per(d.bytesUp), bytesDown: per(d.bytesDown), kernelCalls: per(d.kernelCalls), readBacks: per(d.readBacks) } };
}
