/**
 * Model markers waiting for their partition's next output (hot swap, state/model-marker.ts): a
 * swap, or a partition taken over by an instance serving another model than its last marker
 * names, asks for one; the first output of that partition taken after it fixes the marker's
 * offset (the first input offset the model served there) and goes into that output's batch,
 * whose changelog then carries the marker: in the same transaction under exactly once, right
 * after the output is acknowledged under at least once.
 */
import type { ChangelogRecord } from '../../../state/changelog-batch.js';
import { encodeModelMarker, MODEL_MARKER_KEY, type ModelMarker } from '../../../state/model-marker.js';

/** A marker asked for; its offset is the first one taken after it. */
export type MarkerRequest = Omit<ModelMarker, 'offset'>;

export class ModelMarks {
  private readonly waiting = new Map<number, MarkerRequest>();

  /** Marks `partition` at its next output (replacing a request not yet taken). */
  request(partition: number, marker: MarkerRequest): void {
    this.waiting.set(partition, marker);
  }

  /** The marker record for an output at `offset` of `partition`, if one waits for it (per output: a size check first). */
  take(partition: number, offset: string): ChangelogRecord | undefined {
    if (this.waiting.size === 0) return undefined;
    const marker = this.waiting.get(partition);
    if (!marker) return undefined;
    this.waiting.delete(partition);
    return { key: MODEL_MARKER_KEY, value: encodeModelMarker({ ...marker, offset: Number(offset) }), partition };
  }

  /** Forgets the requests of partitions this member no longer owns. */
  retain(owns: (partition: number) => boolean): void {
    for (const p of [...this.waiting.keys()]) if (!owns(p)) this.waiting.delete(p);
  }
}
