/**
 * stock-moves: will a symbol's next price be higher or lower, from its ticks?
 *
 * Features are the log return since the key's previous tick (0 on its first tick) and the log
 * of the volume; whether returns trend or revert is a hidden regime the state must track.
 */
import { z } from 'zod';
import { definePipeline } from '../../src/pipeline/define.js';
import { projectPath } from '../../src/paths.js';

export const stockEventSchema = z.object({
  symbol: z.string().min(1),
  t: z.iso.datetime(),
  price: z.number().positive(),
  volume: z.number().nonnegative(),
  move: z.enum(['up', 'down']).optional(),
});

export default definePipeline({
  name: 'stock-moves',
  description: 'next move (up/down) of a stock from its price and volume ticks',
  schema: stockEventSchema,
  keyField: 'symbol',
  key: (e) => e.symbol,
  eventTime: (e) => Date.parse(e.t),
  // Ticks of a symbol arrive in time order; gaps in time are normal (no trading), not missing ticks.
  sequence: { field: 't', of: (e) => Date.parse(e.t) },
  // The last price: the log return is measured from it, and so is the outcome (up or down).
  carry: { price: (e) => e.price },
  featureNames: ['logReturn', 'logVolume'],
  features: (e, prev, out) => {
    out[0] = prev ? Math.log(e.price / prev.price) : 0;
    out[1] = Math.log1p(e.volume);
  },
  label: (e) => e.move,
  outcome: (prev, next) => (next.price > prev.price ? 'up' : 'down'),
  baselines: {
    'same as the last move': (h) => (h.length >= 2 ? (h.at(-1)!.price > h.at(-2)!.price ? 'up' : 'down') : undefined),
  },
  plot: { kind: 'series', value: (e) => e.price },
  trainingFixtures: {
    train: projectPath('fixtures', 'stock-train.jsonl.gz'),
    validation: projectPath('fixtures', 'stock-validation.jsonl.gz'),
    test: projectPath('fixtures', 'stock-test.jsonl.gz'),
  },
  modelFile: projectPath('pipelines', 'stock-moves', 'model.json'),
  defaultFixture: projectPath('fixtures', 'stock.jsonl'),
  randomModel: {
    name: 'stock-moves',
    layers: [{ cell: 'gru', hiddenSize: 32 }],
    head: { kind: 'softmax', labels: ['up', 'down'] },
    seed: 3,
  },
});
