/** `rnnstream replay`: a JSON Lines fixture through the pipeline operators, and a summary. */
import { type Command, Option } from 'commander';
import { BACKEND_NAMES } from '../../backends/types.js';
import { consoleLogger } from '../../observability/console-logger.js';
import { pipelineNames } from '../../pipeline/registry.js';
import { deadLetterJson } from '../../pipeline/serialize.js';
import { replay } from '../../replay/replay.js';
import { formatReplaySummary } from '../format.js';
import { positiveInt, probability, progressBar } from '../options.js';

export function registerReplay(program: Command): void {
  program
    .command('replay')
    .description('replay a JSON Lines fixture through the pipeline operators and print a summary')
    .requiredOption('--pipeline <name>', `pipeline to run (${pipelineNames().join(', ')})`)
    .option('--input <file.jsonl>', "fixture to replay (default: the pipeline's fixture)")
    .option('--model <model.json>', "model file (default: the pipeline's model)")
    .addOption(new Option('--backend <backend>', 'compute backend').choices(['auto', ...BACKEND_NAMES]).default('auto'))
    .option('--out <preds.jsonl>', 'write predictions as JSON Lines')
    .option('--dead-letters <file.jsonl>', 'write dead letters as JSON Lines (default: report them on stderr)')
    .addOption(new Option('--pace <pace>', 'emit as fast as possible, or spaced by event time').choices(['max', 'realtime']).default('max'))
    .option('--batch-size <n>', 'most events per micro-batch', positiveInt('--batch-size'), 4096)
    .option('--threads <n>', 'CPU threads for the onnx backend', positiveInt('--threads'))
    .option('--key-capacity <n>', 'most keys held in memory; the least recently used is evicted past it (default 1000000)', positiveInt('--key-capacity'))
    .option('--max-message-bytes <n>', 'dead-letter lines longer than this, unparsed (default 1048576, as the service)', positiveInt('--max-message-bytes'))
    .option('--idle-ttl <ms>', 'evict a key not seen for this long, in ms of processing time (default: never)', positiveInt('--idle-ttl'))
    .option('--no-micro-batch', 'step wave by wave (one backend call per wave) instead of one call per micro-batch (device backends, and onnx as sequences)')
    .option('--no-state-on-device', "keep keys' state on the host (it goes up and down with every micro-batch) instead of in the device backend's slot table")
    .option('--oos-threshold <p>', "predict the out-of-scope class when the top probability is under p (default: the model's, chosen on validation; 0: off)", probability('--oos-threshold'))
    .option('--json', 'print the summary as one JSON object')
    .action(async (opts) => {
      const json = Boolean(opts.json);
      let shownDeadLetters = 0;
      const summary = await replay(
        {
          pipeline: opts.pipeline,
          input: opts.input,
          model: opts.model,
          backend: opts.backend,
          out: opts.out,
          deadLetters: opts.deadLetters,
          pace: opts.pace,
          maxBatchSize: opts.batchSize,
          threads: opts.threads,
          keyCapacity: opts.keyCapacity,
          idleTtlMs: opts.idleTtl,
          maxMessageBytes: opts.maxMessageBytes,
          outOfScopeThreshold: opts.oosThreshold,
          // commander's --no-micro-batch: false when given, else the backend's default.
          ...(opts.microBatch === false ? { microBatch: false } : {}),
          ...(opts.stateOnDevice === false ? { stateOnDevice: false } : {}),
        },
        {
          logger: consoleLogger('warn'),
          progress: progressBar(!json && process.stderr.isTTY === true),
          onDeadLetter: (d) => {
            if (shownDeadLetters++ < 20) process.stderr.write(`dead-letter ${deadLetterJson(d)}\n`);
            else if (shownDeadLetters === 21) process.stderr.write('dead-letter ... (more not shown; use --dead-letters <file>)\n');
          },
        },
      );
      process.stdout.write((json ? JSON.stringify(summary) : formatReplaySummary(summary)) + '\n');
    });
}
