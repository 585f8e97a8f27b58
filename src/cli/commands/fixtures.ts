/** `rnnstream fixtures`: generated ball and stock fixtures, and word events from utterances. */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { Command } from 'commander';
import { ballEvents } from '../../fixtures/ball.js';
import { stockEvents } from '../../fixtures/stock.js';
import { wordEventStream, parseUtteranceLine, type Utterance } from '../../fixtures/words.js';
import { writeJsonLines } from '../../fixtures/write-json-lines.js';
import { UsageError } from '../../core/errors.js';
import { positiveInt, nonNegativeInt, rangeOf } from '../options.js';
import { SPEECH_DEFAULTS, speechEvents, TRAINING_VOICES, type Range, type SpeechFixtureOptions } from '../../fixtures/speech.js';

export function registerFixtures(program: Command): void {
  program
    .command('fixtures')
    .description('generate a seeded synthetic fixture (ball trajectories, stock ticks, spoken digit strings), or word events from utterances, as JSON Lines')
    .addArgument(
      new Command()
        .createArgument('<kind>', 'ball, stock, speech (spoken digits by espeak-ng, as 16 kHz audio chunks), or words (one event per word of --input\'s {"text","intent"} lines)')
        .choices(['ball', 'stock', 'speech', 'words']),
    )
    .option('--keys <n>', 'balls or symbols', positiveInt('--keys'))
    .option('--count <n>', 'speech: streams (digit strings)', positiveInt('--count'))
    .option('--voices <list>', `speech: espeak-ng voices, comma-separated (default: the ${TRAINING_VOICES.length} training voices, ${TRAINING_VOICES[0]} ... ${TRAINING_VOICES.at(-1)})`)
    .option('--speed <A:B>', `speech: words per minute (default ${SPEECH_DEFAULTS.speed.min}:${SPEECH_DEFAULTS.speed.max})`, rangeOf('--speed', 80, 450))
    .option('--pitch <A:B>', `speech: espeak-ng pitch (default ${SPEECH_DEFAULTS.pitch.min}:${SPEECH_DEFAULTS.pitch.max})`, rangeOf('--pitch', 0, 99))
    .option('--noisy <share>', `speech: share of streams with white noise (default ${SPEECH_DEFAULTS.noise.share})`, rangeOf('--noisy', 0, 1))
    .option('--snr <A:B>', `speech: the noise's signal-to-noise ratio in dB (default ${SPEECH_DEFAULTS.noise.snrDb.min}:${SPEECH_DEFAULTS.noise.snrDb.max})`, rangeOf('--snr', -20, 80))
    .option('--gain <A:B>', `speech: linear gain on the speech (default ${SPEECH_DEFAULTS.gain.min}:${SPEECH_DEFAULTS.gain.max})`, rangeOf('--gain', 0.001, 4))
    .option('--chunk <A:B>', `speech: samples per chunk, log-uniform (default ${SPEECH_DEFAULTS.chunk.min}:${SPEECH_DEFAULTS.chunk.max}; at most 16000)`, rangeOf('--chunk', 1, 16000))
    .option('--digits <A:B>', 'speech: digits per string (default 1:8)', rangeOf('--digits', 1, 32))
    .option('--alignments', "speech: put each word's end sample on the stream's last event (wordEnds), for the delay of partial words")
    .option('--seed <n>', 'random seed', nonNegativeInt('--seed'), 1)
    .option('--ticks <n>', 'stock: ticks per symbol', positiveInt('--ticks'))
    .option('--input <file.jsonl>', 'words: utterances, one {"text","intent"} JSON object per line (.gz allowed)')
    .option('--concurrent <n>', `words, speech: utterances under way at once, interleaved (default 1 for words, ${SPEECH_DEFAULTS.concurrent} for speech)`, positiveInt('--concurrent'))
    .option('--out <file.jsonl>', 'output file, gzip-compressed when it ends in .gz (default: stdout)')
    .action(async (kind: 'ball' | 'stock' | 'speech' | 'words', opts) => {
      // Generated as they are written: a fixture of millions of events is never held whole.
      const events =
        kind === 'words'
          ? wordEventStream(utterancesFromFile(opts.input), opts.concurrent ?? 1)
          : kind === 'ball'
            ? ballEvents({ keys: opts.keys ?? 2000, seed: opts.seed })
            : kind === 'speech'
              ? speechEvents(speechOptions(opts))
              : stockEvents({ keys: opts.keys ?? 40, seed: opts.seed, ...(opts.ticks ? { ticks: opts.ticks } : {}) });
      const written = await writeJsonLines(events, opts.out);
      if (opts.out) process.stderr.write(`wrote ${written} ${kind === 'words' ? 'word' : kind === 'speech' ? 'audio chunk' : kind} events to ${opts.out}\n`);
    });
}

/** The speech generator's options from the flags (each default in SPEECH_DEFAULTS). */
function speechOptions(opts: Record<string, unknown>): SpeechFixtureOptions {
  const noise = SPEECH_DEFAULTS.noise;
  const voices = typeof opts.voices === 'string' ? opts.voices.split(',').map((v) => v.trim()).filter(Boolean) : undefined;
  if (voices?.length === 0) throw new UsageError('fixtures speech: --voices lists no voice');
  return {
    count: (opts.count as number | undefined) ?? 100,
    seed: opts.seed as number,
    ...(voices ? { voices } : {}),
    ...(opts.speed ? { speed: opts.speed as Range } : {}),
    ...(opts.pitch ? { pitch: opts.pitch as Range } : {}),
    noise: { share: (opts.noisy as Range | undefined)?.min ?? noise.share, snrDb: (opts.snr as Range | undefined) ?? noise.snrDb },
    ...(opts.gain ? { gain: opts.gain as Range } : {}),
    ...(opts.chunk ? { chunk: opts.chunk as Range } : {}),
    ...(opts.digits ? { digits: opts.digits as Range } : {}),
    ...(opts.concurrent ? { concurrent: opts.concurrent as number } : {}),
    alignments: opts.alignments === true,
  };
}

/** The utterances in `file`; a bad line is a usage error naming it. */
function utterancesFromFile(file: string | undefined): Utterance[] {
  if (!file) throw new UsageError('fixtures words: --input <file.jsonl> is required (utterances, one {"text","intent"} per line)');
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new UsageError(`fixtures words: cannot read --input ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const text = (file.endsWith('.gz') ? gunzipSync(bytes) : bytes).toString('utf8');
  const utterances: Utterance[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim().length === 0) return;
    try {
      utterances.push(parseUtteranceLine(line, `${file}:${i + 1}`));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  });
  return utterances;
}
