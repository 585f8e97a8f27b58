/**
 * intent-from-words: what does the user want, read word by word, with a prediction after every
 * word. One event per word, keyed by utterance; the hidden state is the sentence so far, and the
 * key's state is freed at its last word.
 *
 *   {"utteranceId":"u-17","index":0,"word":"what","last":false,"intent":"translate"}
 *
 * Trained on CLINC150 (Larson et al. 2019, CC BY 3.0; see NOTICE): 150 intents and `oos`.
 */
import { z } from 'zod';
import { definePipeline } from '../../src/pipeline/define.js';
import { projectPath } from '../../src/paths.js';
import { INTENTS, OUT_OF_SCOPE } from './intents.js';

export const wordEventSchema = z.object({
  utteranceId: z.string().min(1),
  index: z.int().nonnegative(),
  // One whitespace-separated token as written: an empty word is a dead letter.
  word: z.string().min(1),
  last: z.boolean(),
  intent: z.string().min(1).optional(),
});

export default definePipeline({
  name: 'intent-from-words',
  description: `intent of an utterance (${INTENTS.length - 1} CLINC150 intents and ${OUT_OF_SCOPE}), predicted after every word`,
  schema: wordEventSchema,
  keyField: 'utteranceId',
  key: (e) => e.utteranceId,
  // Words count from 0 by one: a repeated or earlier index is a dead letter, so is a first word
  // that is not word 0 (the utterance's start was lost, or it came after its `last` word).
  sequence: { field: 'index', of: (e) => e.index, consecutive: true, first: 0 },
  ends: (e) => e.last,
  featureNames: ['word'],
  word: (e) => e.word,
  label: (e) => e.intent,
  // Live accuracy is the final word's: an utterance's intent is only known (where known) at its end.
  outcomeAtEnd: (e) => e.intent,
  topK: 3,
  outOfScope: OUT_OF_SCOPE,
  trainingFixtures: {
    train: projectPath('fixtures', 'clinc150-train.words.jsonl.gz'),
    validation: projectPath('fixtures', 'clinc150-validation.words.jsonl.gz'),
  },
  modelFile: projectPath('pipelines', 'intent-from-words', 'model.json'),
  defaultFixture: projectPath('fixtures', 'clinc150-validation.words.jsonl.gz'),
  randomModel: {
    name: 'intent-from-words',
    layers: [{ cell: 'gru', hiddenSize: 128 }],
    head: { kind: 'softmax', labels: [...INTENTS] },
    seed: 3,
  },
  training: { epochs: 12, learningRate: 0.003, batchSize: 32, window: 64, clipNorm: 5, dropout: 0.25, labelSmoothing: 0.1, embeddingDim: 64, buckets: 20000, patience: 3 },
});
