/**
 * Evaluation of a pipeline's model on a labelled fixture: accuracy overall and by step index,
 * the confusion matrix, and honest baselines measured on the same file (the majority class, and
 * the pipeline's own baselines, which fall back to the majority class where they cannot
 * predict). Predictions come from the very replay path users run; events are re-read to score.
 */
import { RnnStreamError } from '../core/errors.js';
import { loadModelFile } from '../adapters/model-file.js';
import { loadPipeline } from '../pipeline/registry.js';
import type { PredictionRecord } from '../pipeline/predict.js';
import { replay, type ReplayOptions, type ReplaySummary } from '../replay/replay.js';
import { readJsonLines } from '../adapters/fixture-source.js';
import { trackUtterance, utteranceReport, type FinishedKey, type OpenKeys, type UtteranceReport } from './utterances.js';

/** Accuracy from this step index on: a key's 4th event onwards (frame index >= 3). */
export const WARMED_UP_FROM_STEP = 4;

export interface Trajectory {
  readonly key: string;
  readonly points: readonly {
    readonly seq: number;
    /** Plot coordinates: (x, y) for paths, (seq, value) for series. */
    readonly x: number;
    readonly y: number;
    readonly label: string;
    readonly prediction: string;
  }[];
}

export interface EvalReport {
  readonly pipeline: string;
  readonly input: string;
  readonly model: ReplaySummary['model'];
  readonly backend: ReplaySummary['backend'];
  readonly events: number;
  readonly keys: number;
  readonly labelled: number;
  readonly accuracy: number;
  /** accuracyByStep[k]: accuracy on each key's (k+1)-th event. */
  readonly accuracyByStep: readonly number[];
  readonly countByStep: readonly number[];
  /** Accuracy on events that are at least the 4th of their key. */
  readonly accuracyWarmedUp: number;
  readonly warmedUpFromStep: number;
  /** confusion.matrix[true][predicted], in confusion.labels order. */
  readonly confusion: { readonly labels: readonly string[]; readonly matrix: readonly (readonly number[])[] };
  /** Baseline name to accuracy on the same events. */
  readonly baselines: Readonly<Record<string, number>>;
  readonly baselinesWarmedUp: Readonly<Record<string, number>>;
  readonly baselinesByStep: Readonly<Record<string, readonly number[]>>;
  readonly prequential?: ReplaySummary['prequential'];
  /** A pipeline whose keys end (utterances): final-word accuracy, out of scope, early intent. */
  readonly utterances?: UtteranceReport;
  readonly plot: 'path' | 'series' | undefined;
  readonly trajectories: readonly Trajectory[];
  readonly seconds: number;
}

interface Scored {
  readonly seq: number;
  readonly label: string;
  readonly predictions: string[];
}

function accuracyOf(rows: readonly Scored[], index: number, from = 1): number {
  let hit = 0;
  let n = 0;
  for (const r of rows) {
    if (r.seq < from) continue;
    n++;
    if (r.predictions[index] === r.label) hit++;
  }
  return n > 0 ? hit / n : 0;
}

function byStep(rows: readonly Scored[], index: number, steps: number): number[] {
  const hit = new Array<number>(steps).fill(0);
  const n = new Array<number>(steps).fill(0);
  for (const r of rows) {
    if (r.seq > steps) continue;
    n[r.seq - 1]!++;
    if (r.predictions[index] === r.label) hit[r.seq - 1]!++;
  }
  return hit.map((h, k) => (n[k]! > 0 ? h / n[k]! : 0));
}

/** The out-of-scope threshold `rnnstream train` chose on the validation set, if the model has one. */
function outOfScopeThreshold(modelFile: string): number | undefined {
  const outOfScope = loadModelFile(modelFile).file.training?.outOfScope as { threshold?: unknown } | undefined;
  return typeof outOfScope?.threshold === 'number' ? outOfScope.threshold : undefined;
}

export interface EvalOptions extends Omit<ReplayOptions, 'out' | 'input'> {
  readonly input?: string;
  /** Keys drawn in the report's trajectory plot. */
  readonly trajectories?: number;
}

export async function evaluate(options: EvalOptions): Promise<EvalReport> {
  const started = performance.now();
  const pipeline = await loadPipeline(options.pipeline);
  if (!pipeline.label) throw new RnnStreamError(`pipeline "${pipeline.name}" has no labels to evaluate against`);
  const input = options.input ?? pipeline.trainingFixtures?.test ?? pipeline.defaultFixture;
  const predictions = new Map<number, PredictionRecord>();
  const { trajectories: trajectoryCount = 6, ...replayOptions } = options;
  const summary = await replay(
    // The model's own answers (no out-of-scope rule): the report scores the rule separately,
    // beside the out-of-scope class as a class (utterances.ts).
    { ...replayOptions, input, deadLetters: undefined, outOfScopeThreshold: 0 },
    {
      onPrediction: (p) => {
        if (p.source.kind === 'file') predictions.set(p.source.line, p);
      },
      onDeadLetter: () => {},
    },
  );

  const baselineNames = Object.keys(pipeline.baselines ?? {});
  const history = new Map<string, unknown[]>();
  const rows: Scored[] = [];
  const labelCounts = new Map<string, number>();
  const pendingBaselines: (string | undefined)[][] = [];
  const plotted = new Map<string, Trajectory['points'][number][]>();
  const open: OpenKeys = new Map();
  const finished: FinishedKey[] = [];
  for await (const { line, text } of readJsonLines(input)) {
    const p = predictions.get(line);
    if (!p) continue; // dead-lettered
    const event = pipeline.schema.parse(JSON.parse(text));
    const key = pipeline.key(event);
    const label = pipeline.label(event);
    if (pipeline.ends) trackUtterance(open, finished, key, p, label);
    const h = history.get(key) ?? [];
    h.push(event);
    // A key that ended keeps no history: a million finished utterances cost nothing here.
    if (p.ended) history.delete(key);
    else history.set(key, h);
    if (label === undefined || typeof p.prediction !== 'string') continue;
    labelCounts.set(label, (labelCounts.get(label) ?? 0) + 1);
    pendingBaselines.push(baselineNames.map((n) => pipeline.baselines![n]!(h)));
    rows.push({ seq: p.seq, label, predictions: [p.prediction] });
    if (pipeline.plot && (plotted.has(key) || plotted.size < trajectoryCount)) {
      const points = plotted.get(key) ?? [];
      plotted.set(key, points);
      const [x, y] = pipeline.plot.kind === 'path' ? pipeline.plot.point(event) : [p.seq, pipeline.plot.value(event)];
      points.push({ seq: p.seq, x, y, label, prediction: p.prediction });
    }
  }
  // The model's classes in head order, then any label the data has that the model does not.
  const first = predictions.values().next().value;
  const labels = [...new Set([...(first?.names ?? []), ...labelCounts.keys()])];
  const majority = [...labelCounts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '';
  rows.forEach((r, i) => {
    r.predictions.push(majority);
    for (const b of pendingBaselines[i]!) r.predictions.push(b ?? majority);
  });
  const names = ['majority class', ...baselineNames];
  const steps = Math.max(0, ...rows.map((r) => r.seq));
  const index = new Map(labels.map((l, i) => [l, i]));
  const matrix = labels.map(() => labels.map(() => 0));
  for (const r of rows) matrix[index.get(r.label)!]![index.get(r.predictions[0]!)!]!++;
  const countByStep = new Array<number>(steps).fill(0);
  for (const r of rows) countByStep[r.seq - 1]!++;

  return {
    pipeline: pipeline.name,
    input,
    model: summary.model,
    backend: summary.backend,
    events: summary.events,
    keys: summary.keys,
    labelled: rows.length,
    accuracy: accuracyOf(rows, 0),
    accuracyByStep: byStep(rows, 0, steps),
    countByStep,
    accuracyWarmedUp: accuracyOf(rows, 0, WARMED_UP_FROM_STEP),
    warmedUpFromStep: WARMED_UP_FROM_STEP,
    confusion: { labels, matrix },
    baselines: Object.fromEntries(names.map((n, i) => [n, accuracyOf(rows, i + 1)])),
    baselinesWarmedUp: Object.fromEntries(names.map((n, i) => [n, accuracyOf(rows, i + 1, WARMED_UP_FROM_STEP)])),
    baselinesByStep: Object.fromEntries(names.map((n, i) => [n, byStep(rows, i + 1, steps)])),
    prequential: summary.prequential,
    ...(pipeline.ends ? { utterances: utteranceReport(finished, pipeline.outOfScope, outOfScopeThreshold(options.model ?? pipeline.modelFile)) } : {}),
    plot: pipeline.plot?.kind,
    trajectories: [...plotted.entries()].map(([key, points]) => ({ key, points })),
    seconds: (performance.now() - started) / 1000,
  };
}
