/** `rnnstream run`: the pipeline as a Kafka consumer-group service, until a signal stops it. */
import type { Command } from 'commander';
import { RnnStreamError } from '../../core/errors.js';
import { pipelineNames } from '../../pipeline/registry.js';
import { resolveServiceConfig } from '../../service/config.js';
import { createServiceLogger } from '../../service/logger.js';
import { startService, type RunningService } from '../../service/run.js';
import { addSecurityOptions, nonNegativeInt, positiveInt, probability, securityFlags } from '../options.js';

export function registerRun(program: Command): void {
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
      .option('--guarantee <g>', 'at-least-once or exactly-once (RNNSTREAM_GUARANTEE; default at-least-once)')
      .option('--commit-interval <ms>', 'how often state and offsets are committed, in ms (RNNSTREAM_COMMIT_INTERVAL_MS; default 1000, exactly-once 100)', nonNegativeInt('--commit-interval'))
      .option('--oos-threshold <p>', "predict the out-of-scope class when the top probability is under p (RNNSTREAM_OOS_THRESHOLD; default: the model's; 0: off)", probability('--oos-threshold'))
      .option('--standby-replicas <n>', "keep this many warm copies of each partition's state on other instances, for fast failover (RNNSTREAM_STANDBY_REPLICAS; default 0)", nonNegativeInt('--standby-replicas'))
      .option('--watch-model', 'swap in a new model, checked first, whenever the --model file changes (RNNSTREAM_WATCH_MODEL)')
      .option('--models-topic <topic>', 'swap in the models a compacted control topic names: key the pipeline, value {pipeline, path, sha256} (RNNSTREAM_MODELS_TOPIC)')
      .option('--swap-policy <p>', "keys' state when a model is swapped in: reset, keep (same cells only) or warm (rebuilt from each key's last events) (RNNSTREAM_SWAP_POLICY; default reset)")
      .option('--warm-history <n>', 'with --swap-policy warm: events per key kept to warm a new model on (RNNSTREAM_WARM_HISTORY; default 16)', positiveInt('--warm-history'))
      .option('--shadow-topic <topic>', "where a shadow model's predictions go (a models-topic record with role shadow) (RNNSTREAM_SHADOW_TOPIC; default <output topic>.shadow)"),
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
        guarantee: opts.guarantee,
        commitIntervalMs: opts.commitInterval,
        outOfScopeThreshold: opts.oosThreshold,
        standbyReplicas: opts.standbyReplicas,
        watchModel: opts.watchModel,
        modelsTopic: opts.modelsTopic,
        swapPolicy: opts.swapPolicy,
        warmHistory: opts.warmHistory,
        shadowTopic: opts.shadowTopic,
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
}
