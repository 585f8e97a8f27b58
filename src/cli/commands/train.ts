/** `rnnstream train`: trains a pipeline's model on its fixtures. */
import { type Command, Option } from 'commander';
import { trainPipeline } from '../../train/train-pipeline.js';
import { UsageError } from '../../core/errors.js';
import { loadPipeline, pipelineNames } from '../../pipeline/registry.js';
import { fraction, positiveInt, positiveNumber, nonNegativeInt } from '../options.js';

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description("train a pipeline's model with truncated BPTT and Adam on its train/validation fixtures")
    .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
    .option('--train <file.jsonl>', "training fixture (default: the pipeline's)")
    .option('--validation <file.jsonl>', "validation fixture for early stopping (default: the pipeline's)")
    .option('--epochs <n>', 'most epochs', positiveInt('--epochs'))
    .option('--seed <n>', 'random seed (initial weights, sequence order)', nonNegativeInt('--seed'))
    .addOption(new Option('--cell <cell>', "override the pipeline's cell").choices(['rnn', 'lstm', 'gru']))
    .option('--hidden <n>', 'override the hidden size', positiveInt('--hidden'))
    .option('--layers <n>', 'override the number of stacked layers', positiveInt('--layers'))
    .option('--window <n>', 'BPTT truncation length in steps', positiveInt('--window'))
    .option('--batch-size <n>', 'sequences per update', positiveInt('--batch-size'))
    .option('--learning-rate <lr>', 'Adam learning rate', positiveNumber('--learning-rate'))
    .option('--dropout <p>', 'dropout on the first layer\'s input and the top layer\'s output, 0 to 0.9', fraction('--dropout'))
    .option('--label-smoothing <e>', 'label smoothing of the cross-entropy target, 0 to 0.5', fraction('--label-smoothing'))
    .option('--embedding-dim <n>', 'words: floats per word vector', positiveInt('--embedding-dim'))
    .option('--buckets <n>', 'words: rows of hashed character n-grams (0: vocabulary only)', nonNegativeInt('--buckets'))
    .option('--no-train-embedding', 'words: keep the embedding table at its random initial rows (for comparison)')
    .option('--out <model.json>', "where to write the model (default: the pipeline's model file)")
    .option('--report <out.html>', 'write loss curves and the gradient norm by distance (rnn vs lstm vs gru) as HTML')
    .option('--json', 'print the training history as one JSON object')
    .action(async (opts) => {
      const json = Boolean(opts.json);
      if ((await loadPipeline(opts.pipeline)).frames) {
        throw new UsageError(
          `pipeline "${opts.pipeline}" is trained with a CTC loss in PyTorch on its front end's rows: bash scripts/train-speech.sh (see the README's speech section); rnnstream train takes pipelines with one labelled step per event`,
        );
      }
      const result = await trainPipeline(
        {
          pipeline: opts.pipeline,
          train: opts.train,
          validation: opts.validation,
          out: opts.out,
          report: opts.report,
          options: {
            epochs: opts.epochs,
            seed: opts.seed,
            cell: opts.cell,
            hiddenSize: opts.hidden,
            layers: opts.layers,
            window: opts.window,
            batchSize: opts.batchSize,
            learningRate: opts.learningRate,
            dropout: opts.dropout,
            labelSmoothing: opts.labelSmoothing,
            embeddingDim: opts.embeddingDim,
            buckets: opts.buckets,
            // commander's --no-train-embedding: true unless given; undefined keeps the pipeline's default.
            trainEmbedding: opts.trainEmbedding === false ? false : undefined,
          },
        },
        {
          progress: !json && process.stderr.isTTY === true,
          log: json ? () => {} : (line) => process.stderr.write(line + '\n'),
        },
      );
      if (json) process.stdout.write(JSON.stringify(result) + '\n');
    });
}
