/** `rnnstream produce`: a fixture into a Kafka topic, one record per line. */
import { type Command, Option } from 'commander';
import { loadPipeline, pipelineNames } from '../../pipeline/registry.js';
import { fixtureSize } from '../../adapters/fixture-source.js';
import { createKafka, PRODUCER_CONFIG } from '../../adapters/kafka/cluster/client.js';
import { defaultTopics, resolveServiceConfig } from '../../service/config.js';
import { createServiceLogger } from '../../service/logger.js';
import { produceFixture } from '../../service/produce.js';
import { addSecurityOptions, securityFlags } from '../options.js';

export function registerProduce(program: Command): void {
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
      // Unlike the service, produce may make its target topic by writing to it (the broker's defaults).
      const producer = kafka.producer({ ...PRODUCER_CONFIG, allowAutoTopicCreation: true });
      await producer.connect();
      try {
        const r = await produceFixture(producer, pipeline, input, { topic: opts.topic ?? defaultTopics(pipeline.name).inputTopic, pace: opts.pace });
        process.stderr.write(`produced ${r.messages} messages to ${opts.topic ?? defaultTopics(pipeline.name).inputTopic} in ${r.seconds.toFixed(2)} s\n`);
      } finally {
        await producer.disconnect();
      }
    });
}
