/**
 * The speech pipeline's parts without a trained model or espeak-ng: the streaming front end
 * gives the same rows however the audio is cut; transcripts and state do not depend on the
 * chunking or on how streams interleave; greedy CTC; bad chunks become dead letters with their
 * reason while the stream goes on; and a key's pipeline state (leftover samples, pending frames,
 * the partial transcript) survives a snapshot and restore exactly.
 */
import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import speech, { CTC_LABELS, MAX_CHUNK_SAMPLES } from '../pipelines/speech-digits/index.js';
import { resolveBackend } from '../src/backends/registry.js';
import { LogMelFrontEnd } from '../src/core/audio-features.js';
import { ctcGreedyStep, ctcStateSize, ctcTranscript, initCtcState } from '../src/core/ctc.js';
import { LexiconBeamDecoder } from '../src/core/ctc-lexicon.js';
import { DIGIT_WORDS } from '../src/fixtures/speech.js';
import type { RnnModel } from '../src/core/model.js';
import { createRng } from '../src/core/prng.js';
import { randomModel } from '../src/core/random-model.js';
import type { RawRecord } from '../src/operators/records.js';
import { predict, stateStoreFor, type PipelineOutput, type PredictionRecord } from '../src/pipeline/predict.js';
import type { KeyStateStore } from '../src/state/key-state-store.js';

/** A deterministic "voice": gliding harmonics and a little noise, as 16-bit samples. */
function audio(seed: number, samples: number): Int16Array {
  const rng = createRng(seed);
  const f0 = 100 + 150 * rng.next();
  const out = new Int16Array(samples);
  let phase = 0;
  for (let i = 0; i < samples; i++) {
    const f = f0 * (1 + 0.3 * Math.sin((2 * Math.PI * i) / 8000));
    phase += (2 * Math.PI * f) / 16000;
    const v = 3000 * (Math.sin(phase) + 0.5 * Math.sin(2 * phase) + 0.25 * Math.sin(3 * phase)) * (0.5 + 0.5 * Math.sin((2 * Math.PI * i) / 5000)) + 200 * rng.normal();
    out[i] = Math.max(-32768, Math.min(32767, Math.round(v)));
  }
  return out;
}

/** Cuts `pcm` into chunks of the given sizes (the last one takes the rest). */
function cut(pcm: Int16Array, sizes: (i: number) => number): Int16Array[] {
  const chunks: Int16Array[] = [];
  for (let at = 0, i = 0; at < pcm.length; i++) {
    const n = Math.min(Math.max(1, sizes(i)), MAX_CHUNK_SAMPLES, pcm.length - at);
    chunks.push(pcm.subarray(at, at + n));
    at += n;
  }
  return chunks;
}

const base64Of = (pcm: Int16Array): string => Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength).toString('base64');

interface Chunk {
  readonly streamId: string;
  readonly seq: number;
  readonly pcm: string;
  readonly last: boolean;
  readonly text?: string;
  readonly sampleRate?: number;
}

const eventsOf = (streamId: string, chunks: Int16Array[], text = 'one two'): Chunk[] =>
  chunks.map((c, seq) => ({ streamId, seq, pcm: base64Of(c), last: seq === chunks.length - 1, ...(seq === chunks.length - 1 ? { text } : {}) }));

/** Interleaves streams' chunks at random, each stream's in order. */
function interleave(streams: Chunk[][], seed: number): Chunk[] {
  const rng = createRng(seed);
  const at = streams.map(() => 0);
  const out: Chunk[] = [];
  while (out.length < streams.reduce((n, s) => n + s.length, 0)) {
    const s = rng.int(0, streams.length - 1);
    if (at[s]! < streams[s]!.length) out.push(streams[s]![at[s]!++]!);
  }
  return out;
}

const records = (events: readonly (Chunk | string)[]): RawRecord[] =>
  events.map((e, index) => ({ value: typeof e === 'string' ? e : JSON.stringify({ sampleRate: 16000, ...e }), source: { kind: 'memory', index } }));

const model: RnnModel = randomModel({ ...speech.randomModel, features: speech.featureNames });

async function run(events: readonly (Chunk | string)[], options: { backend?: 'reference' | 'onnx'; store?: KeyStateStore; maxBatchSize?: number } = {}): Promise<PipelineOutput[]> {
  const { backend } = await resolveBackend(options.backend ?? 'reference', model);
  try {
    const store = options.store ?? stateStoreFor(speech, model);
    return await lastValueFrom(from(records(events)).pipe(predict(speech, model, { backend, store, captureState: true, maxBatchSize: options.maxBatchSize ?? 64, maxWaitMs: 0 }), toArray()));
  } finally {
    backend.dispose();
  }
}

const finals = (out: PipelineOutput[]): Map<string, PredictionRecord> => new Map(out.filter((o): o is PredictionRecord => o.kind === 'prediction' && o.final === true).map((o) => [o.key, o]));

describe('the streaming log-mel front end', () => {
  it('gives the same rows, bit for bit, however the audio is cut (one chunk, random chunks, single samples)', () => {
    const pcm = audio(1, 12_345);
    const rowsOf = (chunks: Int16Array[]): { rows: Float64Array; state: Float64Array } => {
      const fe = new LogMelFrontEnd();
      const state = new Float64Array(fe.stateSize);
      fe.init(state);
      const all: number[] = [];
      const out = new Float64Array(fe.maxRows(MAX_CHUNK_SAMPLES) * fe.rowSize);
      for (const c of chunks) {
        const n = fe.advance(state, c, out);
        for (let i = 0; i < n * fe.rowSize; i++) all.push(out[i]!);
      }
      return { rows: Float64Array.from(all), state };
    };
    const rng = createRng(7);
    const whole = rowsOf([pcm]);
    const random = rowsOf(cut(pcm, () => rng.int(1, 900)));
    const singles = rowsOf([...cut(pcm.subarray(0, 2000), () => 1), pcm.subarray(2000)]);
    const fe = new LogMelFrontEnd();
    // 12,345 samples: 75 frames of 400 every 160, 25 rows of 3 frames; 345 - 160 + ... left over.
    expect(whole.rows.length).toBe(25 * fe.rowSize);
    expect(random.rows).toEqual(whole.rows);
    expect(singles.rows).toEqual(whole.rows);
    expect(random.state).toEqual(whole.state);
    expect(singles.state).toEqual(whole.state);
    expect(fe.maxRows(MAX_CHUNK_SAMPLES)).toBe(34);
  });
});

describe('greedy CTC, incrementally', () => {
  it('collapses repeats, drops blanks, keeps a repeat across a blank, and gives the same text however the frames are split', () => {
    const classes = CTC_LABELS.length;
    const symbol = (c: string): number => CTC_LABELS.indexOf(c as (typeof CTC_LABELS)[number]);
    // "t t _ w w o _ o" -> "two" then "o" again after the blank: "twoo"
    const path = ['t', 't', '_', 'w', 'w', 'o', '_', 'o', ' ', ' ', 'o', 'n', 'e', 'e'].map(symbol);
    const outputs = new Float32Array(path.length * classes);
    path.forEach((k, r) => (outputs[r * classes + k] = 1));
    const decode = (splits: number[]): string => {
      const state = new Float64Array(ctcStateSize(16));
      initCtcState(state);
      let r = 0;
      for (const n of splits) {
        ctcGreedyStep(outputs.subarray(r * classes, (r + n) * classes), n, classes, state);
        r += n;
      }
      return ctcTranscript(state, CTC_LABELS);
    };
    expect(decode([path.length])).toBe('twoo one');
    expect(decode([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])).toBe('twoo one');
    expect(decode([5, 0, 9])).toBe('twoo one');
  });
});

describe('the digit-lexicon beam search, incrementally', () => {
  const classes = CTC_LABELS.length;
  const symbol = (c: string): number => CTC_LABELS.indexOf(c as (typeof CTC_LABELS)[number]);
  /** Frames each certain of one symbol, but where `doubt` is given, split between two. */
  const frames = (path: (string | [string, number, string])[]): Float32Array => {
    const out = new Float32Array(path.length * classes);
    path.forEach((f, r) => {
      if (typeof f === 'string') out[r * classes + symbol(f)] = 1;
      else {
        out[r * classes + symbol(f[0])] = f[1];
        out[r * classes + symbol(f[2])] = 1 - f[1];
      }
    });
    return out;
  };
  const decode = (outputs: Float32Array, splits: number[], final = true): string => {
    const decoder = new LexiconBeamDecoder(CTC_LABELS, DIGIT_WORDS);
    const state = new Float64Array(decoder.stateSize);
    decoder.init(state);
    let r = 0;
    for (const n of splits) {
      decoder.step(outputs.subarray(r * classes, (r + n) * classes), n, state);
      r += n;
    }
    return decoder.transcript(state, final);
  };

  it('spells only digit words: where greedy reads "fivr", it reads "five"; "two" and "too" alike read "two"', () => {
    const five = frames(['f', 'i', 'v', ['r', 0.6, 'e'], '_', ' ', 't', 'w', 'o', 'o']);
    expect(decode(five, [10])).toBe('five two');
    const greedy = new Float64Array(ctcStateSize(16));
    initCtcState(greedy);
    ctcGreedyStep(five, 10, classes, greedy);
    expect(ctcTranscript(greedy, CTC_LABELS)).toBe('fivr two');
  });

  it('gives the same transcript however the frames are split, and a final one ends on a whole word', () => {
    const path = frames(['_', 's', 'e', 'e', 'v', 'e', 'n', '_', ' ', 'n', 'i', 'n', 'e', '_', ' ', 'o', 'n']);
    const whole = decode(path, [path.length / classes]);
    expect(whole).toBe('seven nine');
    expect(decode(path, [1, 2, 3, 4, 7])).toBe(whole);
    // Mid-word, the partial transcript shows the prefix; the final one only whole words.
    expect(decode(path, [path.length / classes], false)).toBe('seven nine on');
  });
});

describe('the speech-digits pipeline', () => {
  const streams = [audio(11, 18_000), audio(12, 9_001), audio(13, 25_000)];

  it('gives the same final transcripts and states whatever the chunking and interleaving of the streams', async () => {
    const whole = await run(streams.flatMap((pcm, s) => eventsOf(`s-${s}`, cut(pcm, () => MAX_CHUNK_SAMPLES))));
    const rng = createRng(3);
    const chopped = await run(interleave(streams.map((pcm, s) => eventsOf(`s-${s}`, cut(pcm, () => Math.round(Math.exp(rng.uniform(0, Math.log(4000))))))), 5));
    const a = finals(whole);
    const b = finals(chopped);
    expect([...a.keys()].sort()).toEqual(['s-0', 's-1', 's-2']);
    for (const [key, record] of a) {
      expect(b.get(key)!.prediction, key).toBe(record.prediction);
      expect(b.get(key)!.state!.state, key).toEqual(record.state!.state);
      expect(b.get(key)!.state!.carry, key).toEqual(record.state!.carry);
    }
    // One output per event, in order.
    expect(chopped.filter((o) => o.kind === 'prediction')).toHaveLength(chopped.length);
  });

  it('on onnx too, within float32 of the reference', async () => {
    const events = streams.flatMap((pcm, s) => eventsOf(`s-${s}`, cut(pcm, (i) => 500 + 97 * i)));
    const reference = finals(await run(events));
    const onnx = finals(await run(events, { backend: 'onnx' }));
    for (const [key, record] of reference) {
      const want = record.state!.state;
      const got = onnx.get(key)!.state!.state;
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-4);
    }
  });

  it('dead-letters bad chunks with their reason, and the streams go on', async () => {
    const good = cut(audio(21, 6000), () => 1500);
    const events: (Chunk | string)[] = [
      ...eventsOf('s-a', good.slice(0, 2)).map((e) => ({ ...e, last: false })),
      { streamId: 's-a', seq: 2, pcm: 'not base64!', last: false },
      { streamId: 's-a', seq: 2, pcm: Buffer.from([1, 2, 3]).toString('base64'), last: false },
      { streamId: 's-a', seq: 2, pcm: base64Of(good[2]!), last: false, sampleRate: 8000 },
      { streamId: 's-a', seq: 2, pcm: base64Of(new Int16Array(MAX_CHUNK_SAMPLES + 1)), last: false },
      { streamId: 's-a', seq: 2, pcm: '', last: false },
      { streamId: 's-a', seq: 1, pcm: base64Of(good[2]!), last: false },
      { streamId: 's-a', seq: 2, pcm: base64Of(good[2]!), last: false },
      { streamId: 's-a', seq: 3, pcm: base64Of(good[3]!), last: true, text: 'one' },
      { streamId: 's-a', seq: 4, pcm: base64Of(good[3]!), last: false },
      '{"streamId": "s-b", "seq": 0, "pcm": 7}',
    ];
    const out = await run(events);
    const summary = out.map((o) => (o.kind === 'prediction' ? `${o.key}#${o.seq}${o.final ? '.' : ''}` : o.kind === 'dead-letter' ? `dead: ${o.reason}` : o.kind));
    expect(summary).toEqual([
      's-a#1',
      's-a#2',
      'dead: pcm: expected base64 (A-Z, a-z, 0-9, +, /, padded with = to a multiple of 4 characters)',
      'dead: pcm: expected 16-bit samples (an even number of bytes), got 3 bytes',
      "dead: sampleRate: expected 16000 (the model's sample rate), got 8000",
      'dead: pcm: expected 1 to 16000 samples, got 16001',
      'dead: pcm: expected 1 to 16000 samples, got 0',
      "dead: duplicate: seq 1 is not after the key's last applied seq 1",
      's-a#3',
      's-a#4.',
      "dead: out of order: seq 4 but the key has no earlier events (its first must be 0; a key's events after its last one start nothing)",
      'dead: sampleRate: Invalid input: expected number, received undefined; pcm: Invalid input: expected string, received number; last: Invalid input: expected boolean, received undefined',
    ]);
  });

  it('restores a stream mid-utterance exactly: leftover samples, pending frames and the partial transcript are in its state', async () => {
    const rng = createRng(9);
    const events = streams.flatMap((pcm, s) => eventsOf(`s-${s}`, cut(pcm, () => rng.int(100, 3000))));
    const straight = finals(await run(events));
    const half = Math.floor(events.length / 2);
    const first = stateStoreFor(speech, model);
    await run(events.slice(0, half), { store: first });
    const restored = stateStoreFor(speech, model);
    restored.restore(first.snapshot());
    const resumed = finals(await run(events.slice(half), { store: restored }));
    // The streams that end in the second half, at least one of them mid-utterance at the cut.
    expect(resumed.size).toBeGreaterThan(0);
    for (const [key, after] of resumed) {
      const record = straight.get(key)!;
      expect(after.prediction, key).toBe(record.prediction);
      expect(after.state!.state, key).toEqual(record.state!.state);
      expect(after.seq, key).toBe(record.seq);
    }
  });
});
