/**
 * `npm run bench` (part 3): the speech pipeline with many concurrent streams, on onnx, in
 * process (the operators replay and the service run; no file or broker in the way):
 *
 * - **xRT**: audio seconds transcribed per wall-clock second, `--streams` streams under way at
 *   once, their 100 ms chunks interleaved as they would arrive live, fed as fast as they go;
 * - **the front end's share**: the log-mel front end alone over the same chunks, against the run;
 * - **live streams**: streams in real time (a 100 ms chunk from each every 100 ms, a stream that
 *   ends followed at once by another), `--live-seconds` long: it keeps up when the 99th
 *   percentile of a chunk's latency (from when it was due to its transcript) stays under
 *   `--max-p99-ms` (500). The largest count that keeps up, searched from the xRT.
 *
 * The audio is the committed validation fixture's 40 streams (synthetic espeak-ng voices),
 * reused round-robin.
 *
 *   node dist/bench/speech.js [--streams 1000] [--live-seconds 15] [--max-p99-ms 500] [--json]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { from, lastValueFrom, Observable, tap, toArray } from 'rxjs';
import speech from '../pipelines/speech-digits/index.js';
import { resolveBackend } from '../src/backends/registry.js';
import type { StepBackend } from '../src/backends/types.js';
import { LogMelFrontEnd } from '../src/core/audio-features.js';
import { type RnnModel } from '../src/core/model.js';
import { loadModelFile } from '../src/adapters/model-file.js';
import type { RawRecord } from '../src/operators/records.js';
import { projectPath } from '../src/paths.js';
import { predict, stateStoreFor, type PipelineOutput } from '../src/pipeline/predict.js';

const { values: args } = parseArgs({
  options: {
    streams: { type: 'string', default: '1000' },
    'live-seconds': { type: 'string', default: '15' },
    'max-p99-ms': { type: 'string', default: '500' },
    /** One live run at this many streams, nothing else (to profile it). */
    live: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const CHUNK = 1600;
const RATE = 16_000;

/** The fixture's streams as whole 16-bit audio. */
function voices(): Int16Array[] {
  const lines = gunzipSync(readFileSync(projectPath('fixtures', 'speech-validation.jsonl.gz'))).toString('utf8').trim().split('\n');
  const parts = new Map<string, Buffer[]>();
  for (const l of lines) {
    const e = JSON.parse(l) as { streamId: string; pcm: string };
    const list = parts.get(e.streamId) ?? [];
    parts.set(e.streamId, list);
    list.push(Buffer.from(e.pcm, 'base64'));
  }
  return [...parts.values()].map((bufs) => {
    const b = Buffer.concat(bufs);
    return Int16Array.from({ length: b.length / 2 }, (_, i) => b.readInt16LE(2 * i));
  });
}

interface Chunk {
  readonly due: number;
  readonly line: string;
  readonly samples: Int16Array;
}

/** `streams` streams (voice k for stream k mod voices), each starting within the first second, cut into 100 ms chunks, in order of when they are due. */
function chunks(audio: Int16Array[], streams: number): Chunk[] {
  const out: Chunk[] = [];
  for (let s = 0; s < streams; s++) {
    const pcm = audio[s % audio.length]!;
    const start = (s * 997) % RATE;
    for (let at = 0, seq = 0; at < pcm.length; at += CHUNK, seq++) {
      const samples = pcm.subarray(at, Math.min(pcm.length, at + CHUNK));
      const last = at + CHUNK >= pcm.length;
      const line = JSON.stringify({ streamId: `s-${s}`, seq, sampleRate: RATE, pcm: Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength).toString('base64'), last });
      out.push({ due: (start + at + samples.length) / RATE, line, samples });
    }
  }
  return out.sort((a, b) => a.due - b.due);
}

const records = (cs: readonly Chunk[]): RawRecord[] => cs.map((c, index) => ({ value: c.line, source: { kind: 'memory', index } }));

/** Every chunk as fast as it goes: wall seconds. */
async function maxPace(model: RnnModel, backend: StepBackend, cs: readonly Chunk[]): Promise<number> {
  const store = stateStoreFor(speech, model, { capacity: 100_000 });
  const input = records(cs);
  const started = performance.now();
  const out = await lastValueFrom(from(input).pipe(predict(speech, model, { backend, store, maxBatchSize: 1024, maxWaitMs: 0 }), toArray()));
  const seconds = (performance.now() - started) / 1000;
  if (out.filter((o) => o.kind === 'prediction').length !== cs.length) throw new Error('not every chunk was transcribed');
  return seconds;
}

/** The front end alone over the same chunks (per stream state), wall seconds. */
function frontEndOnly(cs: readonly Chunk[]): number {
  const fe = new LogMelFrontEnd();
  const states = new Map<number, Float64Array>();
  const out = new Float64Array(fe.maxRows(16_000) * fe.rowSize);
  const started = performance.now();
  cs.forEach((c) => {
    const key = c.samples.byteOffset ^ c.samples.buffer.byteLength;
    let state = states.get(key);
    if (!state) {
      state = new Float64Array(fe.stateSize);
      fe.init(state);
      states.set(key, state);
    }
    fe.advance(state, c.samples, out);
  });
  return (performance.now() - started) / 1000;
}

/**
 * `streams` live streams for `seconds`: each stream's chunks are released when due (a stream that
 * ends is followed by the next voice), and each chunk's latency is from then to its transcript.
 */
async function live(model: RnnModel, backend: StepBackend, audio: Int16Array[], streams: number, seconds: number): Promise<{ p50: number; p99: number; chunks: number }> {
  // Enough utterances per stream to fill the time: round-robin voices, back to back.
  const schedule: Chunk[] = [];
  for (let s = 0; s < streams; s++) {
    let t = ((s * 997) % RATE) / RATE;
    for (let u = 0; t < seconds; u++) {
      const pcm = audio[(s + u) % audio.length]!;
      for (let at = 0, seq = 0; at < pcm.length; at += CHUNK, seq++) {
        const samples = pcm.subarray(at, Math.min(pcm.length, at + CHUNK));
        const last = at + CHUNK >= pcm.length;
        t += samples.length / RATE;
        schedule.push({ due: t, line: JSON.stringify({ streamId: `s-${s}-${u}`, seq, sampleRate: RATE, pcm: Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength).toString('base64'), last }), samples });
      }
    }
  }
  schedule.sort((a, b) => a.due - b.due);
  const input = records(schedule);
  const dueAt = new Float64Array(schedule.length);
  const latencies: number[] = [];
  const store = stateStoreFor(speech, model, { capacity: 1_000_000 });
  const started = performance.now();
  const paced = new Observable<RawRecord>((subscriber) => {
    let next = 0;
    const tick = (): void => {
      const now = (performance.now() - started) / 1000;
      while (next < schedule.length && schedule[next]!.due <= now) {
        dueAt[next] = started + schedule[next]!.due * 1000;
        subscriber.next(input[next]!);
        next++;
      }
      if (next < schedule.length) setTimeout(tick, 5);
      else subscriber.complete();
    };
    tick();
  });
  await lastValueFrom(
    paced.pipe(
      predict(speech, model, { backend, store, maxBatchSize: 4096, maxWaitMs: 5 }),
      tap((o: PipelineOutput) => {
        if (o.kind === 'prediction' && o.source.kind === 'memory') latencies.push(performance.now() - dueAt[o.source.index]!);
      }),
    ),
    { defaultValue: undefined },
  );
  const s = latencies.sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
  return { p50: q(0.5), p99: q(0.99), chunks: schedule.length };
}

async function main(): Promise<void> {
  const model = loadModelFile(speech.modelFile);
  const { backend } = await resolveBackend('onnx', model);
  const audio = voices();
  if (args.live) {
    const r = await live(model, backend, audio, Number(args.live), Number(args['live-seconds']));
    process.stdout.write(`live: ${args.live} streams: chunk latency p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms\n`);
    backend.dispose();
    return;
  }
  const streams = Number(args.streams);
  const cs = chunks(audio, streams);
  const audioSeconds = cs.reduce((n, c) => n + c.samples.length, 0) / RATE;
  await maxPace(model, backend, cs.slice(0, Math.min(cs.length, 5000))); // warm-up
  const seconds = await maxPace(model, backend, cs);
  const frontEnd = frontEndOnly(cs);
  const xrt = audioSeconds / seconds;
  process.stderr.write(`max pace: ${streams} streams, ${audioSeconds.toFixed(0)} s of audio in ${seconds.toFixed(2)} s: ${xrt.toFixed(0)}x real time; front end alone ${frontEnd.toFixed(2)} s (${((100 * frontEnd) / seconds).toFixed(0)} %)\n`);
  // Live: from 80 % of the xRT, up by a quarter while it keeps up; then halfway between the
  // largest count that kept up and the smallest that did not, twice.
  const liveSeconds = Number(args['live-seconds']);
  const maxP99 = Number(args['max-p99-ms']);
  const tried: { streams: number; p50: number; p99: number; keepsUp: boolean }[] = [];
  const attempt = async (n: number): Promise<boolean> => {
    const r = await live(model, backend, audio, n, liveSeconds);
    const keepsUp = r.p99 <= maxP99;
    tried.push({ streams: n, p50: r.p50, p99: r.p99, keepsUp });
    process.stderr.write(`live: ${n} streams for ${liveSeconds} s: chunk latency p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms: ${keepsUp ? 'keeps up' : 'falls behind'}\n`);
    return keepsUp;
  };
  let low = 0;
  let high = Infinity;
  for (let n = Math.max(10, Math.round((0.8 * xrt) / 10) * 10); high === Infinity && tried.length < 8; n = Math.round((n * 1.25) / 10) * 10) {
    if (await attempt(n)) low = n;
    else high = n;
  }
  for (let i = 0; i < 2 && high !== Infinity && high - low > 20; i++) {
    const n = Math.round((low + high) / 20) * 10;
    if (await attempt(n)) low = n;
    else high = n;
  }
  const best = Math.max(0, ...tried.filter((t) => t.keepsUp).map((t) => t.streams));
  backend.dispose();
  const result = { streams, audioSeconds, seconds, xrt, frontEndSeconds: frontEnd, frontEndShare: frontEnd / seconds, live: tried, liveStreams: best };
  process.stdout.write(
    args.json
      ? `${JSON.stringify(result)}\n`
      : [
          `Speech (speech-digits on onnx, ${model.layers.map((l) => `${l.cell}(${l.hiddenSize})`).join(' > ')}), in process:`,
          `  ${streams} concurrent streams at full pace: ${audioSeconds.toFixed(0)} s of audio in ${seconds.toFixed(2)} s = ${xrt.toFixed(0)}x real time`,
          `  the front end alone: ${frontEnd.toFixed(2)} s, ${((100 * frontEnd) / seconds).toFixed(0)} % of that`,
          `  live streams this machine keeps up with (p99 chunk latency <= ${maxP99} ms): ${best} (${tried.map((t) => `${t.streams}: p99 ${t.p99.toFixed(0)} ms`).join('; ')})`,
          '',
        ].join('\n'),
  );
}

main().catch((err: Error) => {
  process.stderr.write(`bench speech: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
