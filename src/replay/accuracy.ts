/** Accuracy overall and by step index (the key's 1st, 2nd, ... event), for labelled fixtures. */
export interface AccuracyReport {
  readonly labelled: number;
  readonly correct: number;
  readonly accuracy: number;
  /** accuracyByStep[k] is the accuracy on each key's (k+1)-th event. */
  readonly accuracyByStep: readonly number[];
  /** Labelled events at each step index, so a reader can judge each entry's noise. */
  readonly countByStep: readonly number[];
}

export class AccuracyTracker {
  private correct = 0;
  private total = 0;
  private readonly correctByStep: number[] = [];
  private readonly totalByStep: number[] = [];

  get labelled(): number {
    return this.total;
  }

  add(seq: number, hit: boolean): void {
    const k = seq - 1;
    this.total++;
    this.totalByStep[k] = (this.totalByStep[k] ?? 0) + 1;
    if (hit) {
      this.correct++;
      this.correctByStep[k] = (this.correctByStep[k] ?? 0) + 1;
    }
  }

  report(): AccuracyReport {
    const countByStep = Array.from(this.totalByStep, (n) => n ?? 0);
    return {
      labelled: this.total,
      correct: this.correct,
      accuracy: this.total > 0 ? this.correct / this.total : 0,
      accuracyByStep: countByStep.map((n, k) => (n > 0 ? (this.correctByStep[k] ?? 0) / n : 0)),
      countByStep,
    };
  }
}
