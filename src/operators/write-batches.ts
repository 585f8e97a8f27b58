import { Observable, type OperatorFunction } from 'rxjs';

/**
 * Hands items to an asynchronous `write` in batches, one write at a time: while a write is in
 * flight, arriving items accumulate, and the next write takes all of them (up to `maxBatch`).
 * So batches grow exactly when the sink is the bottleneck, and a quiet stream is written at once.
 * Emits the size of each batch written; errors if `write` rejects; completes after the last write.
 *
 * ```
 * source:  -a-b-c-d-e-------|
 * write:    [a]  [b c d] [e]          (each write takes as long as the sink needs)
 * output:  ----1------3----1|
 * ```
 */
export function writeBatches<T>(write: (batch: T[]) => Promise<void>, maxBatch: number): OperatorFunction<T, number> {
  return (source) =>
    new Observable<number>((subscriber) => {
      let pending: T[] = [];
      let writing = false;
      let sourceDone = false;
      let closed = false;
      const pump = async (): Promise<void> => {
        writing = true;
        try {
          while (pending.length > 0 && !closed) {
            const batch = pending.length <= maxBatch ? pending : pending.slice(0, maxBatch);
            pending = pending.length <= maxBatch ? [] : pending.slice(maxBatch);
            await write(batch);
            subscriber.next(batch.length);
          }
        } catch (err) {
          closed = true;
          subscriber.error(err);
          return;
        } finally {
          writing = false;
        }
        if (sourceDone && !closed) subscriber.complete();
      };
      const sub = source.subscribe({
        next: (item) => {
          pending.push(item);
          if (!writing) void pump();
        },
        error: (err: unknown) => {
          closed = true;
          subscriber.error(err);
        },
        complete: () => {
          sourceDone = true;
          if (!writing && pending.length === 0) subscriber.complete();
          else if (!writing) void pump();
        },
      });
      return () => {
        closed = true;
        sub.unsubscribe();
      };
    });
}
