import { join } from 'node:path';
import { wordTableRows, type ModelFile } from '../../src/core/model.js';
import { writeModelFile } from '../../src/adapters/model-file.js';
import { createRng } from '../../src/core/prng.js';
import { randomModelFile } from '../../src/core/random-model.js';
import { INTENTS } from '../../pipelines/intent-from-words/intents.js';

/**
 * A small seeded word model for intent-from-words (vocabulary `words`, hashed n-grams, one GRU
 * layer, the pipeline's 151 classes), written as model.json + its table in `dir`; returns the path.
 */
export function writeRandomWordModel(dir: string, options: { words?: readonly string[]; dim?: number; hidden?: number; buckets?: number; seed?: number } = {}): string {
  const dim = options.dim ?? 8;
  const seed = options.seed ?? 5;
  const base = randomModelFile({ name: 'intent-from-words', features: dim, layers: [{ cell: 'gru', hiddenSize: options.hidden ?? 16 }], head: { kind: 'softmax', labels: [...INTENTS] }, seed, scale: 2 });
  const input = { kind: 'words' as const, dim, vocabulary: [...(options.words ?? ['what', 'is', 'my', 'balance', 'book', 'a', 'flight'])], buckets: options.buckets ?? 50, minN: 3, maxN: 5, table: { file: 'x', sha256: '0'.repeat(64) } };
  const doc: ModelFile = { ...base, features: ['word'], input };
  const rng = createRng(seed + 1);
  const table = Float32Array.from({ length: wordTableRows(input) * dim }, () => rng.normal());
  const path = join(dir, 'model.json');
  writeModelFile(path, doc, table);
  return path;
}
