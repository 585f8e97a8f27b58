/**
 * ball-direction: which way is a tracked ball moving, from its position frames alone?
 *
 * The model sees only the current (x, y) of a frame: one snapshot says nothing about motion,
 * so the direction has to come from the hidden state, i.e. from the key's past frames.
 */
import { z } from 'zod';
import { COMPASS, compassOf } from '../../src/fixtures/compass.js';
import { definePipeline } from '../../src/pipeline/define.js';
import { projectPath } from '../../src/paths.js';

export const ballEventSchema = z.object({
  ballId: z.string().min(1),
  frame: z.int().nonnegative(),
  t: z.number(),
  x: z.number(),
  y: z.number(),
  direction: z.enum(COMPASS).optional(),
});

export default definePipeline({
  name: 'ball-direction',
  description: 'compass direction (8 classes) of a ball from its (x, y) position frames',
  schema: ballEventSchema,
  keyField: 'ballId',
  key: (e) => e.ballId,
  eventTime: (e) => e.t * 1000,
  // Frames count up by one per ball: a repeated or older frame is a dead letter, a skipped one a gap.
  sequence: { field: 'frame', of: (e) => e.frame, consecutive: true },
  // The position of the last frame: the outcome (where the ball went) is the step from it.
  carry: { x: (e) => e.x, y: (e) => e.y },
  featureNames: ['x', 'y'],
  features: (e, _prev, out) => {
    out[0] = e.x;
    out[1] = e.y;
  },
  label: (e) => e.direction,
  // Where the ball was seen next: the observed (noisy) displacement's direction.
  outcome: (prev, next) => compassOf(next.x - prev.x, next.y - prev.y),
  baselines: {
    'last displacement': (h) => (h.length >= 2 ? compassOf(h.at(-1)!.x - h.at(-2)!.x, h.at(-1)!.y - h.at(-2)!.y) : undefined),
    'mean of last three displacements': (h) => {
      if (h.length < 2) return undefined;
      const back = h.at(-1 - Math.min(3, h.length - 1))!;
      return compassOf(h.at(-1)!.x - back.x, h.at(-1)!.y - back.y);
    },
  },
  plot: { kind: 'path', point: (e) => [e.x, e.y] },
  trainingFixtures: {
    train: projectPath('fixtures', 'ball-train.jsonl.gz'),
    validation: projectPath('fixtures', 'ball-validation.jsonl.gz'),
    test: projectPath('fixtures', 'ball-test.jsonl.gz'),
  },
  modelFile: projectPath('pipelines', 'ball-direction', 'model.json'),
  defaultFixture: projectPath('fixtures', 'ball.jsonl.gz'),
  randomModel: {
    name: 'ball-direction',
    // Two layers: measured on the validation set, one LSTM layer of 32 or 64 units plateaus
    // near the "mean of the last three displacements" baseline; two layers of 32 pass it.
    layers: [
      { cell: 'lstm', hiddenSize: 32 },
      { cell: 'lstm', hiddenSize: 32 },
    ],
    head: { kind: 'softmax', labels: [...COMPASS] },
    seed: 2,
  },
  training: { epochs: 30, learningRate: 0.003 },
});
