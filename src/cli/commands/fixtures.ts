/** `rnnstream fixtures`: generated ball and stock fixtures. */
import { writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { Command } from 'commander';
import { generateBallEvents } from '../../fixtures/ball.js';
import { generateStockEvents } from '../../fixtures/stock.js';
import { positiveInt, nonNegativeInt } from '../options.js';

export function registerFixtures(program: Command): void {
  program
    .command('fixtures')
    .description('generate a seeded synthetic fixture (ball trajectories or stock ticks) as JSON Lines')
    .addArgument(new Command().createArgument('<kind>', 'ball or stock').choices(['ball', 'stock']))
    .option('--keys <n>', 'balls or symbols', positiveInt('--keys'))
    .option('--seed <n>', 'random seed', nonNegativeInt('--seed'), 1)
    .option('--ticks <n>', 'stock: ticks per symbol', positiveInt('--ticks'))
    .option('--out <file.jsonl>', 'output file, gzip-compressed when it ends in .gz (default: stdout)')
    .action((kind: 'ball' | 'stock', opts) => {
      const events =
        kind === 'ball'
          ? generateBallEvents({ keys: opts.keys ?? 2000, seed: opts.seed })
          : generateStockEvents({ keys: opts.keys ?? 40, seed: opts.seed, ...(opts.ticks ? { ticks: opts.ticks } : {}) });
      const text = events.map((e) => JSON.stringify(e)).join('\n') + '\n';
      if (opts.out) {
        writeFileSync(opts.out, String(opts.out).endsWith('.gz') ? gzipSync(text, { level: 9 }) : text);
        process.stderr.write(`wrote ${events.length} ${kind} events to ${opts.out}\n`);
      } else {
        process.stdout.write(text);
      }
    });
}
