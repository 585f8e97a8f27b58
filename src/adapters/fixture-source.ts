/**
 * Reads a JSON Lines fixture (plain, or gzip-compressed when the name ends in .gz) as raw
 * records with their file and line number. Reads in chunks and
 * waits on the bounded queue between chunks, so a slow pipeline slows the reader instead of the
 * whole file piling up in memory. Blank lines are skipped (but counted in line numbers).
 *
 * Pacing: `max` emits as fast as the pipeline admits; `realtime` spaces events by their event
 * time (`timeOf`), as a live source would deliver them.
 */
import { createReadStream, statSync, type ReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Observable } from 'rxjs';
import { UsageError } from '../core/errors.js';
import type { BoundedQueue } from '../operators/bounded-queue.js';
import type { RawRecord } from '../operators/records.js';

export interface FixtureSourceOptions {
  readonly queue?: BoundedQueue;
  readonly pace?: 'max' | 'realtime';
  /** Event time in ms of a raw line, for realtime pacing; undefined when it has none. */
  readonly timeOf?: (line: string) => number | undefined;
  /** Called with bytes read so far, for a progress bar. */
  readonly onProgress?: (bytesRead: number) => void;
  /** Read size (default 1 MiB). */
  readonly chunkBytes?: number;
}

export function fixtureSize(file: string): number {
  try {
    return statSync(file).size;
  } catch (err) {
    throw new UsageError(`cannot read input file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Opens a fixture for reading: the file stream (whose bytesRead measures progress) and the
 * stream of its text, inflated when the name ends in .gz. zlib inflates on libuv's thread pool,
 * off the event loop that runs the pipeline.
 */
function openFixture(file: string, chunkBytes = 1 << 20): { file: ReadStream; text: Readable } {
  const fileStream = createReadStream(file, { highWaterMark: chunkBytes });
  const text = file.endsWith('.gz') ? fileStream.pipe(createGunzip({ chunkSize: Math.max(64, chunkBytes) })) : fileStream;
  text.setEncoding('utf8');
  return { file: fileStream, text };
}

/**
 * The non-blank lines of a fixture with their 1-based line numbers, one at a time: for the
 * tools that read a whole file at their own pace (training, evaluation, produce), where
 * readFixture's chunked, back-pressured Observable is not needed.
 */
export async function* readJsonLines(file: string): AsyncGenerator<{ readonly line: number; readonly text: string }> {
  fixtureSize(file);
  const { file: fileStream, text: input } = openFixture(file);
  const lines = createInterface({ input, crlfDelay: Infinity });
  let line = 0;
  try {
    for await (const text of lines) {
      line++;
      if (text.trim() !== '') yield { line, text };
    }
  } finally {
    fileStream.destroy();
  }
}

export function readFixture(file: string, options: FixtureSourceOptions = {}): Observable<RawRecord> {
  return new Observable<RawRecord>((subscriber) => {
    fixtureSize(file);
    let stopped = false;
    const { file: fileStream, text: stream } = openFixture(file, options.chunkBytes);
    const run = async (): Promise<void> => {
      let line = 0;
      let carry = '';
      let bytes = 0;
      let firstEventTime: number | undefined;
      const wallStart = performance.now();
      const emit = async (text: string): Promise<void> => {
        line++;
        if (text.trim() === '') return;
        if (options.pace === 'realtime' && options.timeOf) {
          const t = options.timeOf(text);
          if (t !== undefined) {
            firstEventTime ??= t;
            const due = t - firstEventTime - (performance.now() - wallStart);
            if (due > 1) await sleep(due);
          }
        }
        if (options.queue && !options.queue.hasRoom()) await options.queue.whenReady();
        if (stopped) return;
        subscriber.next({ value: text, source: { kind: 'file', file, line } });
      };
      for await (const chunk of stream as AsyncIterable<string>) {
        if (stopped) return;
        // Progress counts bytes of the file as stored (compressed for .gz), as the total does.
        bytes = fileStream.bytesRead;
        const parts = (carry + chunk).split('\n');
        carry = parts.pop()!;
        for (const p of parts) {
          if (options.pace === 'realtime' || (options.queue && !options.queue.hasRoom())) await emit(p);
          else emitSync(p);
          if (stopped) return;
        }
        options.onProgress?.(bytes);
      }
      if (carry !== '') await emit(carry);
      if (!stopped) subscriber.complete();

      // The common case, with room in the queue and no pacing: no await per line.
      function emitSync(text: string): void {
        line++;
        if (text.trim() === '') return;
        subscriber.next({ value: text, source: { kind: 'file', file, line } });
      }
    };
    run().catch((err: unknown) => subscriber.error(err));
    return () => {
      stopped = true;
      stream.destroy();
      fileStream.destroy();
    };
  });
}
