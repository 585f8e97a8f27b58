/** `rnnstream fixtures`: generated ball and stock fixtures, and word events from utterances. */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { Command } from 'commander';
import { ballEvents } from '../../fixtures/ball.js';
import { stockEvents } from '../../fixtures/stock.js';
import { wordEventStream, parseUtteranceLine, type Utterance } from '../../fixtures/words.js';
import { writeJsonLines } from '../../fixtures/write-json-lines.js';
import { UsageError } from '../../core/errors.js';
import { positiveInt, nonNegativeInt } from '../options.js';

export function registerFixtures(program: Command): void {
  program
    .command('fixtures')
    .description('generate a seeded synthetic fixture (ball trajectories or stock ticks), or word events from utterances, as JSON Lines')
    .addArgument(new Command().createArgument('<kind>', 'ball, stock, or words (one event per word of --input\'s {"text","intent"} lines)').choices(['ball', 'stock', 'words']))
    .option('--keys <n>', 'balls or symbols', positiveInt('--keys'))
    .option('--seed <n>', 'random seed', nonNegativeInt('--seed'), 1)
    .option('--ticks <n>', 'stock: ticks per symbol', positiveInt('--ticks'))
    .option('--input <file.jsonl>', 'words: utterances, one {"text","intent"} JSON object per line (.gz allowed)')
    .option('--concurrent <n>', 'words: utterances under way at once, their words interleaved (many users typing)', positiveInt('--concurrent'), 1)
    .option('--out <file.jsonl>', 'output file, gzip-compressed when it ends in .gz (default: stdout)')
    .action(async (kind: 'ball' | 'stock' | 'words', opts) => {
      // Generated as they are written: a fixture of millions of events is never held whole.
      const events =
        kind === 'words'
          ? wordEventStream(utterancesFromFile(opts.input), opts.concurrent)
          : kind === 'ball'
            ? ballEvents({ keys: opts.keys ?? 2000, seed: opts.seed })
            : stockEvents({ keys: opts.keys ?? 40, seed: opts.seed, ...(opts.ticks ? { ticks: opts.ticks } : {}) });
      const written = await writeJsonLines(events, opts.out);
      if (opts.out) process.stderr.write(`wrote ${written} ${kind === 'words' ? 'word' : kind} events to ${opts.out}\n`);
    });
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
