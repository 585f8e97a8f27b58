/**
 * Prequential (live) accuracy: each prediction is scored when its key's next event arrives and
 * reveals what actually happened (pipeline.outcome). Needs no labels in the data, so it runs
 * the same in replay and in the Kafka service, and is identical for the same events. A pipeline
 * whose keys end (an utterance) may instead score each key's final prediction against what its
 * last event reveals (pipeline.outcomeAtEnd: the intent, where the event carries it).
 */
import type { RnnModel } from '../core/model.js';

export interface PrequentialScore {
  /** What the key's previous event predicted. */
  readonly predicted: string;
  /** What this event revealed about it. */
  readonly outcome: string;
  readonly hit: boolean;
}

/** A tracker when the pipeline can reveal outcomes and the model classifies; else undefined. */
export function prequentialFor(pipeline: { readonly outcome?: unknown; readonly outcomeAtEnd?: unknown }, model: RnnModel): PrequentialTracker | undefined {
  return (pipeline.outcome || pipeline.outcomeAtEnd) && model.head.kind === 'softmax' ? new PrequentialTracker() : undefined;
}

/**
 * Counts prequential hits. What each key predicted last lives with its state (the store's
 * lastClass column, rnnByKey's `classify`): it is evicted, restored and dropped with the key,
 * and costs no map of its own.
 */
export class PrequentialTracker {
  private scoredCount = 0;
  private correctCount = 0;

  get scored(): number {
    return this.scoredCount;
  }

  get correct(): number {
    return this.correctCount;
  }

  get accuracy(): number {
    return this.scoredCount > 0 ? this.correctCount / this.scoredCount : 0;
  }

  /** Counts a score made elsewhere (a shadow run's view of the served model on the keys it shares). */
  add(score: PrequentialScore): void {
    this.scoredCount++;
    if (score.hit) this.correctCount++;
  }

  /**
   * Scores what the key's previous event predicted against what this event revealed; undefined
   * when either is unknown (the key's first event, an outcome the event cannot tell).
   */
  score(predicted: string | undefined, outcome: string | undefined): PrequentialScore | undefined {
    if (predicted === undefined || outcome === undefined) return undefined;
    const hit = predicted === outcome;
    this.scoredCount++;
    if (hit) this.correctCount++;
    return { predicted, outcome, hit };
  }
}
