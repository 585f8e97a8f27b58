/**
 * Evaluation of a transcribing pipeline (speech-digits) on a fixture whose streams end with
 * their text: word error rate, character error rate and exact-string accuracy of the final
 * transcripts, and how late each word appears in the partial transcript after it was spoken.
 * Predictions come from the very replay path users run.
 *
 * The delay of a word: the frames (10 ms) from the sample at which the word ends in the audio
 * (`wordEnds`, from the fixture generator's alignments) to the end of the first chunk after
 * which the partial transcript holds the word, in place (its k-th word is the reference's k-th
 * word). Words the final transcript gets wrong have no delay. It includes the wait for the
 * chunk itself to end, as a live caller would see it.
 */
import { readJsonLines } from '../adapters/fixture-source.js';
import { RnnStreamError } from '../core/errors.js';
import { replay, type ReplayOptions, type ReplaySummary } from '../replay/replay.js';

/** A stream's partial transcripts, event by event, with where in its audio each event ended. */
export interface StreamTranscript {
  readonly key: string;
  readonly reference: string;
  readonly final: string;
  /** Samples of the stream's audio when each partial transcript was made, and the transcript. */
  readonly partials: readonly { readonly samples: number; readonly text: string }[];
  readonly wordEnds: readonly number[] | undefined;
}

export interface TranscriptReport {
  readonly pipeline: string;
  readonly input: string;
  readonly model: ReplaySummary['model'];
  readonly backend: ReplaySummary['backend'];
  readonly events: number;
  readonly streams: number;
  readonly deadLettered: number;
  readonly wer: number;
  readonly cer: number;
  readonly exact: number;
  readonly referenceWords: number;
  /** Delay of each correctly transcribed word, in 10 ms frames; undefined without alignments. */
  readonly delay: { readonly words: number; readonly medianFrames: number; readonly p90Frames: number; readonly meanFrames: number } | undefined;
  readonly audioSeconds: number;
  readonly seconds: number;
  /** Audio seconds transcribed per second of replay. */
  readonly realTimeFactor: number;
  readonly examples: readonly StreamTranscript[];
}

/** Levenshtein distance between two sequences. */
export function editDistance<T>(a: readonly T[], b: readonly T[]): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let previous = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return d[b.length]!;
}

const words = (s: string): string[] => s.split(' ').filter((w) => w.length > 0);

/** The frames after its end at which each word of `reference` first stood in place in a partial transcript. */
export function wordDelays(t: Pick<StreamTranscript, 'reference' | 'final' | 'partials' | 'wordEnds'>, samplesPerFrame: number): number[] {
  if (!t.wordEnds) return [];
  const ref = words(t.reference);
  const fin = words(t.final);
  const delays: number[] = [];
  ref.forEach((word, k) => {
    if (fin[k] !== word || t.wordEnds![k] === undefined) return;
    const at = t.partials.find((p) => words(p.text)[k] === word);
    if (at) delays.push((at.samples - t.wordEnds![k]!) / samplesPerFrame);
  });
  return delays;
}

const quantile = (sorted: readonly number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;

/** Per stream: each event's line, its key, and how many samples it carried (re-read from the fixture). */
async function eventsOf(input: string, key: (e: unknown) => string): Promise<Map<number, { key: string; samples: number; text?: string; wordEnds?: number[] }>> {
  const out = new Map<number, { key: string; samples: number; text?: string; wordEnds?: number[] }>();
  for await (const { line, text } of readJsonLines(input)) {
    try {
      const e = JSON.parse(text) as { pcm?: unknown; text?: string; wordEnds?: number[] };
      const samples = typeof e.pcm === 'string' ? Buffer.byteLength(e.pcm, 'base64') / 2 : 0;
      out.set(line, { key: key(e), samples, ...(e.text !== undefined ? { text: e.text } : {}), ...(e.wordEnds ? { wordEnds: e.wordEnds } : {}) });
    } catch {
      // a dead letter: replay reports it
    }
  }
  return out;
}

export async function evaluateTranscripts(options: Pick<ReplayOptions, 'pipeline' | 'input' | 'model' | 'backend'>, examples = 6): Promise<TranscriptReport> {
  const byKey = new Map<string, { partials: { samples: number; text: string }[]; samples: number; final?: string; reference?: string; wordEnds?: number[] }>();
  const finished: StreamTranscript[] = [];
  const pending: { line: number; key: string; text: string; final: boolean }[] = [];
  const summary = await replay(options, {
    onPrediction: (p) => {
      if (p.head !== 'ctc') throw new RnnStreamError(`eval of transcripts: pipeline "${options.pipeline}" does not transcribe (its predictions are classes)`);
      if (p.source.kind === 'file') pending.push({ line: p.source.line, key: p.key, text: String(p.prediction), final: p.final === true });
    },
  });
  const lines = await eventsOf(summary.input, (e) => String((e as { streamId?: unknown }).streamId));
  let audioSamples = 0;
  for (const p of pending) {
    const e = lines.get(p.line)!;
    const s = byKey.get(p.key) ?? { partials: [], samples: 0 };
    byKey.set(p.key, s);
    s.samples += e.samples;
    audioSamples += e.samples;
    s.partials.push({ samples: s.samples, text: p.text });
    if (!p.final) continue;
    if (e.text !== undefined) finished.push({ key: p.key, reference: e.text, final: p.text, partials: s.partials, wordEnds: e.wordEnds });
    byKey.delete(p.key);
  }
  if (finished.length === 0) throw new RnnStreamError(`eval of transcripts: no stream of ${summary.input} ended with its text (the last event's "text")`);
  let wordErrors = 0;
  let referenceWords = 0;
  let charErrors = 0;
  let referenceChars = 0;
  let exact = 0;
  const delays: number[] = [];
  for (const t of finished) {
    wordErrors += editDistance(words(t.final), words(t.reference));
    referenceWords += words(t.reference).length;
    charErrors += editDistance([...t.final], [...t.reference]);
    referenceChars += t.reference.length;
    if (t.final === t.reference) exact++;
    delays.push(...wordDelays(t, 160));
  }
  const sorted = delays.sort((a, b) => a - b);
  const audioSeconds = audioSamples / 16_000;
  return {
    pipeline: summary.pipeline,
    input: summary.input,
    model: summary.model,
    backend: summary.backend,
    events: summary.events,
    streams: finished.length,
    deadLettered: summary.deadLettered,
    wer: wordErrors / referenceWords,
    cer: charErrors / referenceChars,
    exact: exact / finished.length,
    referenceWords,
    delay: sorted.length ? { words: sorted.length, medianFrames: quantile(sorted, 0.5), p90Frames: quantile(sorted, 0.9), meanFrames: sorted.reduce((a, b) => a + b, 0) / sorted.length } : undefined,
    audioSeconds,
    seconds: summary.seconds,
    realTimeFactor: audioSeconds / summary.seconds,
    examples: finished.filter((t) => t.wordEnds).slice(0, examples),
  };
}
