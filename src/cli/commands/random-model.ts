/** `rnnstream random-model`: an untrained model file of a given shape. */
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { UsageError } from '../../core/errors.js';
import { randomModelFile } from '../../core/random-model.js';
import { loadPipeline, pipelineNames } from '../../pipeline/registry.js';
import { nonNegativeInt } from '../options.js';

export function registerRandomModel(program: Command): void {
  program
    .command('random-model')
    .description("write a pipeline's seeded random (untrained) model file")
    .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
    .option('--seed <n>', 'random seed (default: the pipeline’s)', nonNegativeInt('--seed'))
    .option('--out <model.json>', "output file (default: the pipeline's model file)")
    .action(async (opts) => {
      const pipeline = await loadPipeline(opts.pipeline);
      if (pipeline.word) throw new UsageError(`pipeline "${pipeline.name}" reads words: its model's vocabulary comes from training data, so there is no random model of it; train one with rnnstream train --pipeline ${pipeline.name}`);
      const spec = { ...pipeline.randomModel, features: pipeline.featureNames, ...(opts.seed !== undefined ? { seed: opts.seed } : {}) };
      const out = opts.out ?? pipeline.modelFile;
      writeFileSync(out, JSON.stringify(randomModelFile(spec)) + '\n');
      process.stderr.write(`wrote a seeded random ${pipeline.name} model to ${out}\n`);
    });
}
