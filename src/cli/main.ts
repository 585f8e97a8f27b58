#!/usr/bin/env -S node --max-semi-space-size=64
/**
 * `rnnstream`: the command line. Every command validates its arguments once; bad usage, a
 * missing file or an invalid model file prints one clear message and exits with code 2.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { ModelFileError, RnnStreamError, UsageError } from '../core/errors.js';
import { explainKafkaError } from '../adapters/kafka/cluster/errors.js';
import { registerReplay } from './commands/replay.js';
import { registerFixtures } from './commands/fixtures.js';
import { registerTrain } from './commands/train.js';
import { registerEval } from './commands/eval.js';
import { registerRun } from './commands/run.js';
import { registerProduce } from './commands/produce.js';
import { registerPromote } from './commands/promote.js';
import { registerRandomModel } from './commands/random-model.js';
import { registerBackends } from './commands/backends.js';
import { registerImport } from './commands/import.js';
import { registerExport } from './commands/export.js';
import { registerFrames } from './commands/frames.js';
import { ImportError } from '../import/onnx-file.js';

export function buildProgram(): Command {
  const program = new Command('rnnstream')
    .description('Recurrent neural networks over live streams: per-key hidden state, batched GPU.js kernels, Kafka and fixture replay.')
    .showHelpAfterError('(run with --help for usage)')
    .option('--debug', 'print the stack trace of an unexpected error')
    .exitOverride();

  registerReplay(program);
  registerFixtures(program);
  registerTrain(program);
  registerEval(program);
  registerRun(program);
  registerProduce(program);
  registerPromote(program);
  registerRandomModel(program);
  registerBackends(program);
  registerImport(program);
  registerExport(program);
  registerFrames(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed the message (and help for --help, whose code is 0).
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof UsageError || err instanceof ModelFileError || err instanceof ImportError) {
      process.stderr.write(`rnnstream: ${err.message}\n`);
      return 2;
    }
    if (err instanceof RnnStreamError) {
      process.stderr.write(`rnnstream: ${err.message}\n`);
      return 1;
    }
    const kafka = explainKafkaError(err);
    if (kafka) {
      process.stderr.write(`rnnstream: ${kafka}\n`);
      return 1;
    }
    // One line; the stack only when asked for (it can quote internals, and helps only a developer).
    const debug = argv.includes('--debug');
    process.stderr.write(`rnnstream: unexpected error: ${debug ? ((err as Error).stack ?? String(err)) : err instanceof Error ? `${err.name}: ${err.message}` : String(err)}${debug ? '' : ' (run with --debug for the stack trace)'}\n`);
    return 1;
  }
}

// Run when executed (node dist/src/cli/main.js, or the `rnnstream` bin, which is a symlink),
// not when imported by tests.
const invokedDirectly = (() => {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
})();
/**
 * A command that has finished must end the process. Native add-ons can hold it open after their
 * objects are released (Dawn did: a webgpu replay printed its summary and hung), so once a
 * one-shot command returns, an unref'd timer gives pending output and teardown a few seconds and
 * then exits, saying so on stderr. It never fires when the process ends on its own.
 */
export const EXIT_GRACE_MS = 5000;

if (invokedDirectly) {
  main(process.argv).then((code) => {
    process.exitCode = code;
    setTimeout(() => {
      process.stderr.write(`rnnstream: the command finished ${EXIT_GRACE_MS / 1000} s ago but something (a native add-on's handle) kept the process alive; exiting\n`);
      process.exit(code);
    }, EXIT_GRACE_MS).unref();
  });
}
