/**
 * Outputs gathered for one produce request (at least once) or one transaction (exactly once):
 * predictions packed as JSON bytes as they arrive, dead letters as records, the changelog
 * captures of the keys they touched (the state engine's ChangelogBatch), and their counts. Both
 * commit strategies add outputs here the same way; they differ only in when a batch is sent and
 * committed.
 */
import type { Message } from 'kafkajs';
import type { PipelineOutput } from '../../../pipeline/predict.js';
import { writePredictionJson, type DeadLetterLimits } from '../../../pipeline/serialize.js';
import type { WrittenCounts } from '../../../runner/types.js';
import type { ChangelogBatch, ChangelogRecord } from '../../../state/changelog-batch.js';
import { packMessages, RecordPacker, type WireTopicMessages } from '../producer/record-packer.js';
import { InputTimes } from './input-times.js';
import { deadLetterMessage } from './output-records.js';

export interface SinkTopics {
  readonly outputTopic: string;
  readonly dlqTopic: string;
  readonly changelogTopic: string;
}

/** How dead letters are written: their size limits, and the dead-letter topic's partitions. */
export interface DeadLetterSettings {
  /** The size of a dead letter (below the DLQ topic's max.message.bytes) and of its kept input. */
  readonly limits?: DeadLetterLimits;
  /** The dead-letter topic's partitions (dead letters of input partition p go to p modulo this). */
  readonly partitions: number;
}

export class OutputBatch {
  private deadLetters: Message[] = [];
  predictions = 0;
  sequenceGaps = 0;
  deadLetterCount = 0;
  skipped = 0;
  readonly inputTimes = new InputTimes();
  /** Model markers (model-marks.ts) that go to the changelog with this batch's state. */
  readonly markers: ChangelogRecord[] = [];

  constructor(
    /** The latest captured state per key of the predictions added. */
    readonly changelog: ChangelogBatch,
    private readonly deadLetterSettings: DeadLetterSettings,
    /**
     * Predictions added since the last pack, as record bytes. A packer is emptied by each pack,
     * so batches that are filled one after another may share one (and its buffer).
     */
    readonly packer = new RecordPacker(),
  ) {}

  get events(): number {
    return this.predictions + this.deadLetterCount + this.skipped;
  }

  /** One output: a prediction (its record and its key's state), a dead letter, or a skipped event (counted). */
  add(r: PipelineOutput): void {
    if (r.source.kind === 'kafka') this.inputTimes.add(r.source.timestamp);
    if (r.kind === 'prediction') {
      const { packer } = this;
      packer.key(r.key);
      writePredictionJson(r, packer.writer);
      packer.end();
      this.predictions++;
      if (r.sequenceGap) this.sequenceGaps += r.sequenceGap;
      this.changelog.add(r.key, r.state, r.ended);
    } else if (r.kind === 'dead-letter') {
      this.deadLetters.push(deadLetterMessage(r, this.deadLetterSettings.limits, this.deadLetterSettings.partitions));
      this.deadLetterCount++;
    } else {
      this.skipped++;
    }
  }

  /** What was added since the last pack: the predictions' records, then the dead letters' (none: empty). */
  pack(topics: SinkTopics): WireTopicMessages[] {
    const records: WireTopicMessages[] = [];
    if (this.packer.count > 0) records.push(this.packer.finish(topics.outputTopic));
    if (this.deadLetters.length > 0) records.push(packMessages(topics.dlqTopic, this.deadLetters));
    this.deadLetters = [];
    return records;
  }

  counts(): WrittenCounts {
    return { predictions: this.predictions, sequenceGaps: this.sequenceGaps, deadLetters: this.deadLetterCount, skipped: this.skipped, inputTimes: this.inputTimes.view() };
  }
}

/** Changelog records as the changelog topic's records, each in its input partition. */
export function changelogMessages(topics: SinkTopics, records: readonly ChangelogRecord[]): WireTopicMessages[] {
  if (records.length === 0) return [];
  const messages: Message[] = records.map(({ key, value, partition }) => {
    const bytes = value === null ? null : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return partition === undefined ? { key, value: bytes } : { key, value: bytes, partition };
  });
  return [packMessages(topics.changelogTopic, messages)];
}
