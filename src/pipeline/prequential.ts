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
  /**
   * Each key's last prediction, in two generations: new keys go to `recent`; when it holds
   * `capacity` keys, it becomes `older` and the old `older` is dropped whole. At least the
   * `capacity` most recent keys are remembered (at most twice that), the earliest forgotten
   * first, with no Map deletes: deleting a Map's first entry over and over leaves deleted slots
   * that each later `keys().next()` walks over.
   */
  private recent = new Map<string, string>();
  private older = new Map<string, string>();
  private scoredCount = 0;
  private correctCount = 0;

  /** @param capacity keys remembered at least (the earliest remembered forgotten first). */
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
    let predicted = this.recent.get(key);
    if (predicted === undefined) {
      predicted = this.older.get(key);
      if (this.recent.size >= this.capacity) {
        this.older = this.recent;
        this.recent = new Map();
      }
    }
    this.recent.set(key, prediction);
    if (predicted === undefined || outcome === undefined) return undefined;
    const hit = predicted === outcome;
    this.scoredCount++;
    if (hit) this.correctCount++;
    return { predicted, outcome, hit };
  }
}
