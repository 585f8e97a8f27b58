#!/usr/bin/env -S node --max-semi-space-size=64
/**
 * `rnnstream`: the command line. Every command validates its arguments once; bad usage, a
 * missing file or an invalid model file prints one clear message and exits with code 2.
 */
import { realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { listBackends, resolveBackend } from '../backends/registry.js';
import { BACKEND_NAMES, type BackendName } from '../backends/types.js';
import { checkConformance, CONFORMANCE_SUITE, conformanceModel } from '../backends/conformance.js';
import { ModelFileError, RnnStreamError, UsageError } from '../core/errors.js';
import { loadModelFile } from '../core/model.js';
import { randomModelFile } from '../core/random-model.js';
import { generateBallEvents } from '../fixtures/ball.js';
import { generateStockEvents } from '../fixtures/stock.js';
import { consoleLogger } from '../observability/console-logger.js';
import { loadPipeline, pipelineNames } from '../pipeline/registry.js';
import { deadLetterJson } from '../pipeline/serialize.js';
import { replay } from '../replay/replay.js';
import { formatEvalReport, formatReplaySummary } from './format.js';
import { evaluate } from '../eval/evaluate.js';
import { renderEvalReport } from '../eval/report-html.js';
import { trainPipeline } from '../train/train-pipeline.js';
import { fixtureSize } from '../adapters/fixture-source.js';
import { createKafka, PRODUCER_CONFIG } from '../adapters/kafka/client.js';
import { defaultTopics, resolveServiceConfig } from '../service/config.js';
import { createServiceLogger } from '../service/logger.js';
import { produceFixture } from '../service/produce.js';
import { startService, type RunningService } from '../service/run.js';
import { explainKafkaError } from '../adapters/kafka/errors.js';

const positiveInt = (name: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got "${value}"`);
  return n;
};
const positiveNumber = (name: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got "${value}"`);
  return n;
};
const nonNegativeInt = (name: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer, got "${value}"`);
  return n;
};

function progressBar(enabled: boolean) {
  if (!enabled) return undefined;
  const bar = new cliProgress.SingleBar(
    { format: 'replay |{bar}| {percentage}% {value}/{total} MB', stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  const mb = (b: number): number => Number((b / 1e6).toFixed(1));
  return {
    start: (total: number) => bar.start(mb(total), 0),
    update: (bytes: number) => bar.update(mb(bytes)),
    stop: () => bar.stop(),
  };
}

export function buildProgram(): Command {
  const program = new Command('rnnstream')
    .description('Recurrent neural networks over live streams: per-key hidden state, batched GPU.js kernels, Kafka and fixture replay.')
    .showHelpAfterError('(run with --help for usage)')
    .option('--debug', 'print the stack trace of an unexpected error')
    .exitOverride();

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
    .option('--out <model.json>', "where to write the model (default: the pipeline's model file)")
    .option('--report <out.html>', 'write loss curves and the gradient norm by distance (rnn vs lstm vs gru) as HTML')
    .option('--json', 'print the training history as one JSON object')
    .action(async (opts) => {
      const json = Boolean(opts.json);
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
          },
        },
        {
          progress: !json && process.stderr.isTTY === true,
          log: json ? () => {} : (line) => process.stderr.write(line + '\n'),
        },
      );
      if (json) process.stdout.write(JSON.stringify(result) + '\n');
    });

  program
    .command('eval')
    .description('evaluate a model on a labelled fixture: accuracy, by step, confusion matrix, baselines')
    .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
    .option('--input <file.jsonl>', "labelled fixture (default: the pipeline's test fixture)")
    .option('--model <model.json>', "model file (default: the pipeline's model)")
    .addOption(new Option('--backend <backend>', 'compute backend').choices(['auto', ...BACKEND_NAMES]).default('auto'))
    .option('--report <out.html>', 'write an HTML report with plots')
    .option('--json', 'print the evaluation as one JSON object')
    .action(async (opts) => {
      const report = await evaluate({ pipeline: opts.pipeline, input: opts.input, model: opts.model, backend: opts.backend });
      if (opts.report) writeFileSync(opts.report, renderEvalReport(report));
      const { trajectories: _t, baselinesByStep: _b, ...printable } = report;
      process.stdout.write((opts.json ? JSON.stringify(printable) : formatEvalReport(report)) + '\n');
    });

  addSecurityOptions(
    program
      .command('run')
      .description('run a pipeline as a Kafka consumer-group service (predictions, dead letters, state changelog, /metrics)')
      .option('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
      .option('--brokers <list>', 'comma-separated host:port list')
      .option('--group <id>', 'consumer group (default rnnstream-<pipeline>)')
      .option('--input-topic <topic>', 'input topic (default <pipeline>.input)')
      .option('--output-topic <topic>', 'predictions topic (default <pipeline>.predictions)')
      .option('--dlq-topic <topic>', 'dead-letter topic (default <pipeline>.dead-letters)')
      .option('--changelog-topic <topic>', 'state changelog topic (default <pipeline>.changelog)')
      .option('--config <file.json>', 'JSON config file (any option; flags and RNNSTREAM_* variables override it)')
      .option('--backend <backend>', 'compute backend (default auto)')
      .option('--model <model.json>', "model file (default: the pipeline's)")
      .option('--http-host <host>', 'metrics/health endpoint host (default 127.0.0.1)')
      .option('--http-port <port>', 'metrics/health endpoint port (default 9464; 0 picks a free port)', nonNegativeInt('--http-port'))
      .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (default info)')
      .option('--key-capacity <n>', 'most keys held in memory (RNNSTREAM_KEY_CAPACITY; default 1000000)', positiveInt('--key-capacity'))
      .option('--idle-ttl <ms>', 'evict a key not seen for this long, in ms (RNNSTREAM_IDLE_TTL_MS; default: never)', positiveInt('--idle-ttl'))
  )
    .action(async (opts) => {
      const flags: Record<string, unknown> = {
        pipeline: opts.pipeline,
        brokers: opts.brokers?.split(',').map((b: string) => b.trim()).filter(Boolean),
        group: opts.group,
        inputTopic: opts.inputTopic,
        outputTopic: opts.outputTopic,
        dlqTopic: opts.dlqTopic,
        changelogTopic: opts.changelogTopic,
        backend: opts.backend,
        model: opts.model,
        logLevel: opts.logLevel,
        keyCapacity: opts.keyCapacity,
        idleTtlMs: opts.idleTtl,
        http: opts.httpHost !== undefined || opts.httpPort !== undefined ? { host: opts.httpHost, port: opts.httpPort } : undefined,
        ...securityFlags(opts),
      };
      const resolved = resolveServiceConfig({ file: opts.config, flags });
      const logger = createServiceLogger(resolved.config.logLevel);
      // Signals are handled from before the start: a SIGTERM while the service is still joining
      // its group (an orchestrator scaling down) is a graceful stop right after the start, not
      // Node's default kill, which would skip the shutdown.
      let signals = 0;
      let service: RunningService | undefined;
      const onSignal = (signal: string): void => {
        signals++;
        if (signals > 1) {
          logger.warn({ signal }, 'second signal: exiting now without a graceful shutdown');
          process.exit(130);
        }
        logger.info({ signal, starting: service === undefined }, 'shutting down');
        void service?.stop();
        // Still starting (kafkajs may retry an unreachable cluster for half a minute): nothing
        // has been consumed, so nothing is lost by ending at the deadline.
        if (service === undefined) {
          setTimeout(() => {
            logger.warn({ timeoutMs: resolved.config.shutdownTimeoutMs }, 'still starting at the shutdown deadline: exiting');
            process.exit(1);
          }, resolved.config.shutdownTimeoutMs).unref();
        }
      };
      process.on('SIGTERM', () => onSignal('SIGTERM'));
      process.on('SIGINT', () => onSignal('SIGINT'));
      service = await startService(resolved, logger);
      if (signals > 0) void service.stop();
      const result = await service.done;
      // The service has let go of everything it could within shutdownTimeoutMs; a client still
      // retrying in an outage must not hold the process past that.
      setTimeout(() => process.exit(), 500).unref();
      if (!result.flushed) {
        throw new RnnStreamError(`stopped after at most ${resolved.config.shutdownTimeoutMs / 1000} s with ${result.unflushedEvents} event(s) not flushed; they were not committed and will be redelivered`);
      }
    });

  addSecurityOptions(
    program
      .command('produce')
      .description("write a fixture into a Kafka topic, keyed by the pipeline's key")
      .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
      .option('--brokers <list>', 'comma-separated host:port list (or RNNSTREAM_BROKERS, or the config file)')
      .option('--input <file.jsonl>', "fixture (default: the pipeline's)")
      .option('--topic <topic>', 'topic (default <pipeline>.input)')
      .addOption(new Option('--pace <pace>', 'as fast as possible, or spaced by event time').choices(['max', 'realtime']).default('max'))
      .option('--config <file.json>', "JSON config file: its brokers, ssl and sasl settings apply (flags and RNNSTREAM_* variables override it)")
  )
    .action(async (opts) => {
      const pipeline = await loadPipeline(opts.pipeline);
      const input = opts.input ?? pipeline.defaultFixture;
      fixtureSize(input);
      // The service's own configuration rules, so a secured cluster is reached the same way.
      const resolved = resolveServiceConfig({
        file: opts.config,
        flags: { pipeline: pipeline.name, brokers: opts.brokers?.split(',').map((b: string) => b.trim()).filter(Boolean), logLevel: 'warn', ...securityFlags(opts) },
      });
      const { config } = resolved;
      const logger = createServiceLogger('warn');
      const kafka = createKafka({ brokers: config.brokers, clientId: 'rnnstream-produce', ssl: config.ssl, sasl: config.sasl, saslPassword: resolved.saslPassword }, logger);
      const producer = kafka.producer(PRODUCER_CONFIG);
      await producer.connect();
      try {
        const r = await produceFixture(producer, pipeline, input, { topic: opts.topic ?? defaultTopics(pipeline.name).inputTopic, pace: opts.pace });
        process.stderr.write(`produced ${r.messages} messages to ${opts.topic ?? defaultTopics(pipeline.name).inputTopic} in ${r.seconds.toFixed(2)} s\n`);
      } finally {
        await producer.disconnect();
      }
    });

  program
    .command('random-model')
    .description("write a pipeline's seeded random (untrained) model file")
    .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
    .option('--seed <n>', 'random seed (default: the pipeline’s)', nonNegativeInt('--seed'))
    .option('--out <model.json>', "output file (default: the pipeline's model file)")
    .action(async (opts) => {
      const pipeline = await loadPipeline(opts.pipeline);
      const spec = { ...pipeline.randomModel, features: pipeline.featureNames, ...(opts.seed !== undefined ? { seed: opts.seed } : {}) };
      const out = opts.out ?? pipeline.modelFile;
      writeFileSync(out, JSON.stringify(randomModelFile(spec)) + '\n');
      process.stderr.write(`wrote a seeded random ${pipeline.name} model to ${out}\n`);
    });

  program
    .command('backends')
    .description('try every compute backend on this host and say which work, and why the others do not')
    .option('--pipeline <name>', "probe with this pipeline's model", 'ball-direction')
    .option(
      '--check',
      `also run every working backend beside the float64 reference (each cell type, single and stacked, B = ${CONFORMANCE_SUITE.batches.join(', ')}, ${CONFORMANCE_SUITE.steps} steps) and fail if any differs by ${CONFORMANCE_SUITE.tolerance} or more`,
    )
    .action(async (opts) => {
      const pipeline = await loadPipeline(opts.pipeline);
      const model = loadModelFile(pipeline.modelFile);
      const working: BackendName[] = [];
      for (const provider of listBackends()) {
        try {
          const { backend } = await resolveBackend(provider.name, model);
          process.stdout.write(`${provider.name.padEnd(10)} ok    ${backend.detail}\n`);
          backend.dispose();
          working.push(provider.name);
        } catch (err) {
          const reason = err instanceof RnnStreamError && 'reason' in err ? String(err.reason) : (err as Error).message;
          process.stdout.write(`${provider.name.padEnd(10)} no    ${reason}\n`);
        }
      }
      const auto = await resolveBackend('auto', model);
      const timed = auto.measured.map((m) => `${m.name} ${Math.round(m.keyStepsPerSecond)} key-steps/s`).join(', ');
      process.stdout.write(`auto picks ${auto.backend.name}${timed ? ` (measured at 256 keys per step: ${timed})` : ''}\n`);
      auto.backend.dispose();
      if (opts.check) {
        const failed = await checkBackends(working.filter((n) => n !== 'reference'));
        if (failed > 0) throw new RnnStreamError(`${failed} backend check(s) differ from the float64 reference by ${CONFORMANCE_SUITE.tolerance} or more`);
      }
    });

  return program;
}

/** TLS and SASL options, the same on every command that connects to Kafka. */
function addSecurityOptions(command: Command): Command {
  return command
    .option('--ssl', 'connect to the brokers over TLS')
    .option('--ssl-ca <file.pem>', "CA certificate(s) to trust for the brokers' TLS certificates (implies --ssl)")
    .option('--sasl-mechanism <mechanism>', 'plain, scram-sha-256 or scram-sha-512')
    .option('--sasl-username <user>', 'SASL user name (the password comes from RNNSTREAM_SASL_PASSWORD or --sasl-password-file)')
    .option('--sasl-password-file <file>', 'file whose first line is the SASL password');
}

/** The security part of the configuration flags; absent options stay undefined (config file and env then apply). */
function securityFlags(opts: { ssl?: boolean; sslCa?: string; saslMechanism?: string; saslUsername?: string; saslPasswordFile?: string }): Record<string, unknown> {
  return {
    ssl: opts.sslCa ? { enabled: true, ca: opts.sslCa } : opts.ssl ? { enabled: true } : undefined,
    sasl:
      opts.saslMechanism || opts.saslUsername || opts.saslPasswordFile
        ? { mechanism: opts.saslMechanism, username: opts.saslUsername, passwordFile: opts.saslPasswordFile }
        : undefined,
  };
}

/** Conformance of each named backend against the reference; prints a line per backend, returns the failures. */
async function checkBackends(names: readonly BackendName[]): Promise<number> {
  const { cases, batches, steps, tolerance } = CONFORMANCE_SUITE;
  process.stdout.write(`\nconformance vs float64 reference (${steps} steps, tolerance ${tolerance}):\n`);
  let failed = 0;
  for (const name of names) {
    let worst = 0;
    const bad: string[] = [];
    for (const modelCase of cases) {
      const { backend } = await resolveBackend(name, conformanceModel(modelCase));
      try {
        for (const batch of batches) {
          const r = await checkConformance(backend, modelCase, batch);
          worst = Math.max(worst, r.worstAbsError);
          if (!r.passed) bad.push(`${modelCase.label} B=${batch}: ${r.worstAbsError.toExponential(2)}`);
        }
      } finally {
        backend.dispose();
      }
    }
    failed += bad.length;
    process.stdout.write(
      `${name.padEnd(10)} ${bad.length === 0 ? 'pass' : 'FAIL'}  worst ${worst.toExponential(2)} over ${cases.length * batches.length} cases${bad.length ? ` (${bad.join('; ')})` : ''}\n`,
    );
  }
  return failed;
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
    if (err instanceof UsageError || err instanceof ModelFileError) {
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
