/**
 * Reads a JSON Lines fixture (plain, or gzip-compressed when the name ends in .gz) as raw
 * records (each line's text, or its bytes where it is not UTF-8) with their file and line number. Reads in chunks and
 * waits on the bounded queue between chunks, so a slow pipeline slows the reader instead of the
 * whole file piling up in memory. Blank lines are skipped (but counted, and numbered).
 *
 * Pacing: `max` emits as fast as the pipeline admits; `realtime` spaces events by their event
 * time (`timeOf`), as a live source would deliver them.
 */
import { isUtf8 } from 'node:buffer';
import { createReadStream, statSync, type ReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Observable, type Subscription } from 'rxjs';
import { UsageError } from '../core/errors.js';
import type { BoundedQueue } from '../operators/bounded-queue.js';
import { sleep } from './sleep.js';
import type { RawRecord } from '../operators/records.js';
import type { PartitionHost, Source } from '../runner/types.js';

export interface FixtureSourceOptions {
  readonly queue?: BoundedQueue;
  readonly pace?: 'max' | 'realtime';
  /** Event time in ms of a raw line, for realtime pacing; undefined when it has none. */
  readonly timeOf?: (line: string) => number | undefined;
  /** Called with bytes read so far, for a progress bar. */
  readonly onProgress?: (bytesRead: number) => void;
  /** Read size (default 1 MiB). */
  readonly chunkBytes?: number;
  /** Called for each blank line skipped. */
  readonly onBlankLine?: () => void;
}

export function fixtureSize(file: string): number {
  try {
    return statSync(file).size;
  } catch (err) {
    throw new UsageError(`cannot read input file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}


/**
 * Bytes per read (and per inflated chunk). Each chunk runs through the whole pipeline at once, so
 * the first events wait for the first chunk: 1 MiB chunks left the event loop idle for the first
 * ~14 ms of a replay (the read and the first inflate) and made a replay of the ball fixture 5 %
 * slower than 64 KiB ones (alternating, 6 runs each); 32 KiB was slower again (more chunks).
 */
const DEFAULT_CHUNK_BYTES = 1 << 16;

/**
 * Opens a fixture for reading: the file stream (whose bytesRead measures progress) and the
 * stream of its text, inflated when the name ends in .gz. zlib inflates on libuv's thread pool,
 * off the event loop that runs the pipeline.
 */
function openFixture(file: string, chunkBytes = DEFAULT_CHUNK_BYTES, options: { bytes?: boolean } = {}): { file: ReadStream; text: Readable } {
  const fileStream = createReadStream(file, { highWaterMark: chunkBytes });
  const text = file.endsWith('.gz') ? fileStream.pipe(createGunzip({ chunkSize: Math.max(64, chunkBytes) })) : fileStream;
  if (!options.bytes) text.setEncoding('utf8');
  return { file: fileStream, text };
}

/** Whether bytes [start, end) are only spaces, tabs and carriage returns (a blank line). */
function isBlank(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  }
  return true;
}

/** The same for text [start, end). */
function isBlankText(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** A line's bytes, or its text when its chunk was valid UTF-8 (decoded the same way either way). */
export type LineValue = string | Buffer;
type OnLine = (value: LineValue, line: number) => boolean | void;

/**
 * Cuts a fixture's bytes into lines, one chunk at a time: each non-blank line is handed over
 * with its 1-based number; a UTF-8 byte-order mark at the start of the file is dropped; blank
 * lines (spaces, tabs, CR) are counted and numbered, not handed over. The complete lines of a
 * chunk that is valid UTF-8 (the rule) are decoded in one native call and handed over as text;
 * those of a chunk that is not are handed over as bytes, so that decodeEvents dead-letters the
 * bad ones exactly as the Kafka service does (a line's text is the same either way).
 */
class LineSplitter {
  private carry: Buffer | undefined;
  private line = 0;
  private atStart = true;

  constructor(private readonly onBlankLine: () => void = () => {}) {}

  /** Calls `onLine` for each complete line in `chunk` (after what was carried from the last one); true from it stops. */
  push(chunk: Buffer, onLine: OnLine): void {
    const buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    const lastNl = buf.lastIndexOf(0x0a);
    if (lastNl === -1) {
      this.carry = buf;
      return;
    }
    this.carry = lastNl + 1 < buf.length ? buf.subarray(lastNl + 1) : undefined;
    // The newline ends the last complete line; the lines are everything before it.
    this.lines(buf.subarray(0, lastNl + 1), onLine);
  }

  /** The last line, when the file does not end with a newline. */
  end(onLine: OnLine): void {
    if (this.carry) this.lines(Buffer.concat([this.carry, Buffer.from([0x0a])]), onLine);
    this.carry = undefined;
  }

  /** `complete` holds whole lines, each ended by a newline. */
  private lines(complete: Buffer, onLine: OnLine): void {
    if (isUtf8(complete)) {
      const text = complete.toString('utf8');
      let start = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        let from = start;
        start = nl + 1;
        this.line++;
        if (this.atStart) {
          this.atStart = false;
          if (text.charCodeAt(from) === 0xfeff) from++;
        }
        if (isBlankText(text, from, nl)) this.onBlankLine();
        else if (onLine(text.slice(from, nl), this.line) === true) return;
      }
      return;
    }
    let start = 0;
    for (let nl = complete.indexOf(0x0a); nl !== -1; nl = complete.indexOf(0x0a, start)) {
      let from = start;
      start = nl + 1;
      this.line++;
      if (this.atStart) {
        this.atStart = false;
        if (nl - from >= 3 && complete.subarray(from, from + 3).equals(BOM)) from += 3;
      }
      if (isBlank(complete, from, nl)) this.onBlankLine();
      else if (onLine(complete.subarray(from, nl), this.line) === true) return;
    }
  }
}

/**
 * The non-blank lines of a fixture with their 1-based line numbers, one at a time, as text and
 * as read (`value`: text, or bytes where not UTF-8, for produce to send as they are): for the
 * tools that read a whole file at their own pace (training, evaluation, produce), where
 * readFixture's chunked, back-pressured Observable is not needed.
 */
export async function* readJsonLines(file: string): AsyncGenerator<{ readonly line: number; readonly text: string; readonly value: LineValue }> {
  fixtureSize(file);
  const { file: fileStream, text: input } = openFixture(file, undefined, { bytes: true });
  const splitter = new LineSplitter();
  const lines: { line: number; text: string; value: LineValue }[] = [];
  const collect = (value: LineValue, line: number): void => void lines.push({ line, text: typeof value === 'string' ? value : value.toString('utf8'), value });
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      splitter.push(chunk, collect);
      yield* lines.splice(0);
    }
    splitter.end(collect);
    yield* lines.splice(0);
  } finally {
    fileStream.destroy();
  }
}

/**
 * The fixture's lines, decoded downstream exactly as the Kafka service decodes a record's value
 * (decodeEvents): a line that is not UTF-8 arrives as its bytes and becomes a dead letter with
 * them, not text with U+FFFD in it. A UTF-8 byte-order mark at the start of the file is skipped;
 * blank lines are skipped, counted (`onBlankLine`) and numbered.
 */
export function readFixture(file: string, options: FixtureSourceOptions = {}): Observable<RawRecord> {
  return new Observable<RawRecord>((subscriber) => {
    fixtureSize(file);
    let stopped = false;
    const { file: fileStream, text: stream } = openFixture(file, options.chunkBytes, { bytes: true });
    const run = async (): Promise<void> => {
      const splitter = new LineSplitter(options.onBlankLine);
      let firstEventTime: number | undefined;
      const wallStart = performance.now();
      const emitPaced = async (r: RawRecord): Promise<void> => {
        if (options.pace === 'realtime' && options.timeOf) {
          const t = options.timeOf(typeof r.value === 'string' ? r.value : Buffer.from(r.value).toString('utf8'));
          if (t !== undefined) {
            firstEventTime ??= t;
            const due = t - firstEventTime - (performance.now() - wallStart);
            if (due > 1) await sleep(due);
          }
        }
        if (options.queue && !options.queue.hasRoom()) await options.queue.whenReady();
        if (!stopped) subscriber.next(r);
      };
      // Lines that must wait (pacing, a full queue) are held here and emitted in order.
      const held: RawRecord[] = [];
      const onLine = (value: LineValue, line: number): boolean => {
        const r: RawRecord = { value, source: { kind: 'file', file, line } };
        // The common case, with room in the queue and no pacing: emitted at once, no await per line.
        if (held.length === 0 && options.pace !== 'realtime' && !(options.queue && !options.queue.hasRoom())) subscriber.next(r);
        else held.push(r);
        return stopped;
      };
      const drainHeld = async (): Promise<void> => {
        for (const r of held.splice(0)) {
          await emitPaced(r);
          if (stopped) return;
        }
      };
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        if (stopped) return;
        splitter.push(chunk, onLine);
        await drainHeld();
        if (stopped) return;
        // Progress counts bytes of the file as stored (compressed for .gz), as the total does.
        options.onProgress?.(fileStream.bytesRead);
      }
      splitter.end(onLine);
      await drainHeld();
      if (!stopped) subscriber.complete();
    };
    run().catch((err: unknown) => subscriber.error(err));
    return () => {
      stopped = true;
      stream.destroy();
      fileStream.destroy();
    };
  });
}

/**
 * A fixture file as the runner's Source: one partition (0), assigned once and prepared before
 * the first line, read by readFixture (chunked, back-pressured on the queue, paced).
 */
export class FixtureSource implements Source {
  readonly fixedAssignment = true;
  private stopReading: (() => void) | undefined;

  constructor(
    private readonly file: string,
    private readonly options: FixtureSourceOptions = {},
  ) {}

  get name(): string {
    return this.file;
  }

  start(host: PartitionHost): Observable<RawRecord> {
    // The file's lines go straight to the subscriber once partition 0 is prepared: no operator
    // between them (each would be one more call per line).
    return new Observable<RawRecord>((subscriber) => {
      let reading: Subscription | undefined;
      let stopped = false;
      this.stopReading = () => {
        stopped = true;
        reading?.unsubscribe();
        subscriber.complete();
      };
      host.assigned([0]);
      host.prepare(0).then(
        () => {
          if (!stopped) reading = readFixture(this.file, this.options).subscribe(subscriber);
        },
        (err: unknown) => subscriber.error(err),
      );
      return () => {
        stopped = true;
        reading?.unsubscribe();
      };
    });
  }

  async stop(): Promise<void> {
    this.stopReading?.();
  }
}
