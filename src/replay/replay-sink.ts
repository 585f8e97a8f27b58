/**
 * Replay's Sink: predictions to a JSON Lines file (or a callback), dead letters to a file (or a
 * callback), and the counts and accuracy the summary reports. Durable means written and closed.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { UsageError } from '../core/errors.js';
import type { DeadLetter } from '../operators/records.js';
import type { PipelineOutput, PredictionRecord } from '../pipeline/predict.js';
import { ByteWriter, utf8Bytes } from '../pipeline/json-bytes.js';
import { deadLetterJson, writePredictionJson } from '../pipeline/serialize.js';
import type { Sink } from '../runner/types.js';
import type { AccuracyTracker } from './accuracy.js';

/**
 * Buffered JSON Lines writer: lines go into one byte buffer (predictions as UTF-8 straight from
 * writePredictionJson, as the Kafka sink packs them), and the buffer to the file every 256 KiB.
 * Strings per line, joined per flush, cost a replay more than its model step.
 */
export class JsonLinesWriter {
  private readonly buffer = new ByteWriter(1 << 19);
  private readonly stream: WriteStream;
  private failed: Error | undefined;

  constructor(readonly path: string) {
    this.stream = createWriteStream(path);
    this.stream.on('error', (err) => (this.failed = err));
  }

  write(line: string): void {
    this.buffer.utf8(line);
    this.buffer.bytes(NEWLINE);
    this.flushIfFull();
  }

  writePrediction(p: PredictionRecord): void {
    writePredictionJson(p, this.buffer);
    this.buffer.bytes(NEWLINE);
    this.flushIfFull();
  }

  private flushIfFull(): void {
    if (this.buffer.length > 1 << 18) this.flush();
  }

  private flush(): void {
    if (this.failed) throw new UsageError(`cannot write ${this.path}: ${this.failed.message}`);
    if (this.buffer.length === 0) return;
    // A copy: the stream holds the chunk until written, and the buffer is reused at once.
    this.stream.write(this.buffer.copy());
    this.buffer.reset();
  }

  async close(): Promise<void> {
    this.flush();
    await new Promise<void>((resolve, reject) => this.stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
    if (this.failed) throw new UsageError(`cannot write ${this.path}: ${this.failed.message}`);
  }
}

const NEWLINE = utf8Bytes('\n');

export interface ReplaySinkOptions {
  readonly out?: string;
  readonly deadLetters?: string;
  readonly accuracy?: AccuracyTracker;
  readonly onPrediction?: (prediction: PredictionRecord) => void;
  /** Where dead letters go when there is no dead-letter file. */
  readonly onDeadLetter?: (deadLetter: DeadLetter) => void;
}

export class ReplaySink implements Sink {
  readonly failure: Promise<never> = new Promise<never>(() => undefined);
  predictions = 0;
  deadLettered = 0;
  sequenceGaps = 0;
  private readonly out: JsonLinesWriter | undefined;
  private readonly dlq: JsonLinesWriter | undefined;
  private closed: Promise<void> | undefined;

  constructor(private readonly options: ReplaySinkOptions) {
    this.out = options.out ? new JsonLinesWriter(options.out) : undefined;
    this.dlq = options.deadLetters ? new JsonLinesWriter(options.deadLetters) : undefined;
  }

  write(record: PipelineOutput): void {
    if (record.kind === 'prediction') {
      this.predictions++;
      this.sequenceGaps += record.sequenceGap ?? 0;
      // A transcript is scored whole, by prequential accuracy (its final one) and by eval's WER, not event by event.
      if (record.label !== undefined && record.head !== 'ctc') this.options.accuracy?.add(record.seq, record.prediction === record.label);
      this.out?.writePrediction(record);
      this.options.onPrediction?.(record);
    } else if (record.kind === 'dead-letter') {
      this.deadLettered++;
      if (this.dlq) this.dlq.write(deadLetterJson(record));
      else this.options.onDeadLetter?.(record);
    }
  }

  /** Writes what is buffered and closes the files (once). */
  flush(): Promise<void> {
    return (this.closed ??= (async () => {
      await this.out?.close();
      await this.dlq?.close();
    })());
  }

  abort(): void {}
}
