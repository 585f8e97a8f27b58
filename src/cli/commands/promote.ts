/** `rnnstream promote`: the shadow model a models topic names becomes the served one (hot swap). */
import type { Command } from 'commander';
import { createKafka, PRODUCER_CONFIG } from '../../adapters/kafka/cluster/client.js';
import { ModelsTopicReader, type ModelRecord } from '../../adapters/kafka/consumer/models-topic.js';
import { UsageError } from '../../core/errors.js';
import { pipelineNames } from '../../pipeline/registry.js';
import { resolveServiceConfig } from '../../service/config.js';
import { createServiceLogger } from '../../service/logger.js';
import { addSecurityOptions, securityFlags } from '../options.js';

export function registerPromote(program: Command): void {
  addSecurityOptions(
    program
      .command('promote')
      .description("serve the shadow model the models topic names: writes it as the pipeline's model, and removes the shadow record")
      .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
      .option('--models-topic <topic>', 'the models topic (or RNNSTREAM_MODELS_TOPIC, or the config file)')
      .option('--brokers <list>', 'comma-separated host:port list (or RNNSTREAM_BROKERS, or the config file)')
      .option('--config <file.json>', 'JSON config file: its brokers, models topic, ssl and sasl settings apply'),
  ).action(async (opts) => {
    const resolved = resolveServiceConfig({
      file: opts.config,
      flags: { pipeline: opts.pipeline, brokers: opts.brokers?.split(',').map((b: string) => b.trim()).filter(Boolean), modelsTopic: opts.modelsTopic, logLevel: 'warn', ...securityFlags(opts) },
    });
    const { config } = resolved;
    const topic = config.modelsTopic;
    if (topic === undefined) throw new UsageError('promote: --models-topic is required (or RNNSTREAM_MODELS_TOPIC, or modelsTopic in --config)');
    const logger = createServiceLogger('warn');
    const kafka = createKafka({ brokers: config.brokers, clientId: 'rnnstream-promote', ssl: config.ssl, sasl: config.sasl, saslPassword: resolved.saslPassword }, logger);
    const admin = kafka.admin();
    await admin.connect();
    let shadow: ModelRecord | undefined;
    try {
      // The latest record of each role, as a starting service reads them.
      const reader = new ModelsTopicReader({
        kafka,
        admin,
        topic,
        group: `rnnstream-promote-${config.pipeline}`,
        pipeline: config.pipeline,
        logger,
        onRecord: (record) => {
          if (record.role === 'shadow') shadow = 'withdrawn' in record ? undefined : record;
        },
        onBadRecord: () => undefined,
      });
      await reader.start();
      await reader.stop();
    } finally {
      await admin.disconnect();
    }
    if (!shadow || shadow.share === 0) throw new UsageError(`promote: ${topic} names no shadow model for pipeline "${config.pipeline}" (a record with "role": "shadow")`);
    const producer = kafka.producer(PRODUCER_CONFIG);
    await producer.connect();
    try {
      await producer.send({
        topic,
        messages: [
          { key: config.pipeline, value: JSON.stringify({ pipeline: config.pipeline, path: shadow.path, sha256: shadow.sha256 }) },
          // The shadow record goes (a tombstone): a restarted service must not run the served model as its own shadow.
          { key: `${config.pipeline}/shadow`, value: null },
        ],
      });
    } finally {
      await producer.disconnect();
    }
    process.stderr.write(`promoted ${shadow.path} (sha256 ${shadow.sha256.slice(0, 12)}...) on ${topic}: every instance checks it and swaps it in\n`);
  });
}
