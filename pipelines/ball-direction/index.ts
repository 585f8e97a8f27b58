/**
 * ball-direction: which way is a tracked ball moving, from its position frames alone?
 *
 * The model sees only the current (x, y) of a frame: one snapshot says nothing about motion,
 * so the direction has to come from the hidden state, i.e. from the key's past frames.
 */
import { z } from 'zod';
import { COMPASS } from '../../src/fixtures/compass.js';
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
  featureNames: ['x', 'y'],
  features: (e, _prev, out) => {
    out[0] = e.x;
    out[1] = e.y;
  },
  label: (e) => e.direction,
  modelFile: projectPath('pipelines', 'ball-direction', 'model.json'),
  defaultFixture: projectPath('fixtures', 'ball.jsonl.gz'),
  randomModel: {
    name: 'ball-direction',
    layers: [{ cell: 'lstm', hiddenSize: 32 }],
    head: { kind: 'softmax', labels: [...COMPASS] },
    seed: 2,
  },
});
