/**
 * Prequential (live) accuracy: each prediction is scored when its key's next event arrives and
 * reveals what actually happened (pipeline.outcome). Needs no labels in the data, so it runs
 * the same in replay and in the Kafka service, and is identical for the same events.
 */
import type { RnnModel } from '../core/model.js';
import { DEFAULT_KEY_CAPACITY } from '../state/key-state-store.js';

export interface PrequentialScore {
  /** What the key's previous event predicted. */
  readonly predicted: string;
  /** What this event revealed about it. */
  readonly outcome: string;
  readonly hit: boolean;
}

/** A tracker when the pipeline can reveal outcomes and the model classifies; else undefined. */
export function prequentialFor(pipeline: { readonly outcome?: unknown }, model: RnnModel, capacity: number): PrequentialTracker | undefined {
  return pipeline.outcome && model.head.kind === 'softmax' ? new PrequentialTracker(capacity) : undefined;
}

export class PrequentialTracker {
  private readonly last = new Map<string, string>();
  private scoredCount = 0;
  private correctCount = 0;

  /** @param capacity most keys remembered (the earliest remembered forgotten first). */
  constructor(private readonly capacity = DEFAULT_KEY_CAPACITY) {}

  get scored(): number {
    return this.scoredCount;
  }

  get correct(): number {
    return this.correctCount;
  }

  get accuracy(): number {
    return this.scoredCount > 0 ? this.correctCount / this.scoredCount : 0;
  }

  /**
   * Scores the key's previous prediction against `outcome` (undefined when this event reveals
   * nothing, e.g. the key's first event), then remembers `prediction` for the next one.
   */
  observe(key: string, outcome: string | undefined, prediction: string): PrequentialScore | undefined {
    const predicted = this.last.get(key);
    // Bounded: a new key beyond capacity displaces the oldest remembered one. (No reordering
    // on every event: that would cost a Map delete per event on the hot path.)
    if (predicted === undefined && this.last.size >= this.capacity) this.last.delete(this.last.keys().next().value!);
    this.last.set(key, prediction);
    if (predicted === undefined || outcome === undefined) return undefined;
    const hit = predicted === outcome;
    this.scoredCount++;
    if (hit) this.correctCount++;
    return { predicted, outcome, hit };
  }
}
