/**
 * Training data: a fixture turned into one sequence per key, with the pipeline's own features
 * (so training sees exactly what inference computes) and class indices for the labels.
 */
import { readJsonLines } from '../adapters/fixture-source.js';
import { RnnStreamError } from '../core/errors.js';
import { carriedOf, type Carried, type PipelineDefinition } from '../pipeline/define.js';

export interface Sequence {
  readonly key: string;
  readonly length: number;
  /** [length, inputSize] raw (unnormalized) features; empty for a pipeline of words. */
  readonly features: Float64Array;
  /** A pipeline of words: each step's word as written. */
  readonly words?: readonly string[];
  /** [length] class index, or -1 where the event has no label. */
  readonly labels: Int32Array;
}

export interface Dataset {
  readonly sequences: readonly Sequence[];
  readonly inputSize: number;
  readonly classes: readonly string[];
  readonly events: number;
  /** Lines the pipeline schema rejected (training skips them, as inference dead-letters them). */
  readonly rejected: number;
}

export async function loadDataset(pipeline: PipelineDefinition, file: string, classes: readonly string[]): Promise<Dataset> {
  if (!pipeline.label) throw new RnnStreamError(`pipeline "${pipeline.name}" declares no label; it cannot be trained`);
  const I = pipeline.word ? 0 : pipeline.featureNames.length;
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const byKey = new Map<string, { prev: Carried | undefined; features: number[]; words: string[]; labels: number[] }>();
  const raw = new Float64Array(I);
  let events = 0;
  let rejected = 0;
  for await (const { text } of readJsonLines(file)) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      rejected++;
      continue;
    }
    const parsed = pipeline.schema.safeParse(json);
    if (!parsed.success) {
      rejected++;
      continue;
    }
    const event = parsed.data;
    const key = pipeline.key(event);
    let seq = byKey.get(key);
    if (!seq) byKey.set(key, (seq = { prev: undefined, features: [], words: [], labels: [] }));
    if (pipeline.word) {
      seq.words.push(pipeline.word(event));
    } else {
      raw.fill(Number.NaN);
      pipeline.features!(event, seq.prev, raw);
      if (raw.some((v) => !Number.isFinite(v))) {
        rejected++;
        continue;
      }
      seq.features.push(...raw);
    }
    const label = pipeline.label(event);
    seq.labels.push(label === undefined ? -1 : (classIndex.get(label) ?? -1));
    seq.prev = carriedOf(pipeline, event);
    events++;
  }
  const sequences = [...byKey.entries()].map(([key, s]) => ({
    key,
    length: s.labels.length,
    features: Float64Array.from(s.features),
    ...(pipeline.word ? { words: s.words } : {}),
    labels: Int32Array.from(s.labels),
  }));
  return { sequences, inputSize: I, classes, events, rejected };
}

/** Per-feature mean and standard deviation over every step of every sequence. */
export function featureStats(data: Dataset): { mean: number[]; std: number[] } {
  const I = data.inputSize;
  const sum = new Float64Array(I);
  const sq = new Float64Array(I);
  let n = 0;
  for (const s of data.sequences) {
    for (let t = 0; t < s.length; t++) {
      for (let i = 0; i < I; i++) {
        const v = s.features[t * I + i]!;
        sum[i]! += v;
        sq[i]! += v * v;
      }
      n++;
    }
  }
  const mean = Array.from(sum, (v) => v / Math.max(1, n));
  const std = Array.from(sq, (v, i) => Math.sqrt(Math.max(v / Math.max(1, n) - mean[i]! ** 2, 0)) || 1);
  return { mean, std };
}
