/**
 * Where new models come from while the service runs, and their way to the swapper
 * (model-swap.ts): the --model file when it changes (--watch-model), and the records of the
 * models topic (--models-topic). Both only offer; the swapper checks and swaps, one at a time.
 */
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import type { Admin, Kafka } from 'kafkajs';
import { ModelsTopicReader } from '../adapters/kafka/consumer/models-topic.js';
import type { Logger } from '../observability/logger.js';
import type { ServiceMetrics } from './metrics.js';
import type { ModelSwapper } from './model-swap.js';
import type { ShadowRunner } from './shadow-run.js';

/** How often the watched model file is looked at. */
const WATCH_INTERVAL_MS = 500;

export interface ModelSourcesParts {
  readonly swapper: ModelSwapper;
  /** The --model file, watched when `watch`. */
  readonly modelFile: string;
  readonly watch: boolean;
  readonly modelsTopic: string | undefined;
  /** Runs the models topic's shadow records (role "shadow"); absent: they are refused. */
  readonly shadow: ShadowRunner | undefined;
  readonly kafka: Kafka;
  readonly admin: Admin;
  readonly group: string;
  readonly pipeline: string;
  readonly logger: Logger;
  readonly metrics: ServiceMetrics;
}

/**
 * Starts the configured sources; resolves with their stop once the models topic (if any) has
 * been read to its end and its latest record for the pipeline checked and, if it passed, swapped
 * in: a restarted instance serves the model the topic names before it consumes anything.
 */
export async function startModelSources(parts: ModelSourcesParts): Promise<() => Promise<void>> {
  const stops: (() => Promise<void>)[] = [];
  if (parts.watch) stops.push(watchModelFile(parts));
  if (parts.modelsTopic !== undefined) stops.push(await readModelsTopic(parts, parts.modelsTopic));
  return async () => {
    await Promise.allSettled(stops.map((stop) => stop()));
  };
}

/** Offers the file whenever it changes (its size or modification time; a rename over it counts). */
function watchModelFile(parts: ModelSourcesParts): () => Promise<void> {
  const { modelFile, swapper, logger } = parts;
  const changed = (now: Stats, before: Stats): void => {
    if (now.nlink === 0 || (now.mtimeMs === before.mtimeMs && now.size === before.size && now.ino === before.ino)) return;
    void swapper.offer({ path: modelFile, from: 'the watched --model file' });
  };
  watchFile(modelFile, { interval: WATCH_INTERVAL_MS, persistent: false }, changed);
  logger.info({ model: modelFile, intervalMs: WATCH_INTERVAL_MS }, 'watching the model file for new models');
  return async () => unwatchFile(modelFile, changed);
}

/** Offers every record of the models topic for this pipeline (the topic is made and checked with the others: ensureTopics). */
async function readModelsTopic(parts: ModelSourcesParts, topic: string): Promise<() => Promise<void>> {
  const { admin, swapper, logger, metrics } = parts;
  const reader = new ModelsTopicReader({
    kafka: parts.kafka,
    admin,
    topic,
    group: parts.group,
    pipeline: parts.pipeline,
    logger,
    onRecord: (record, at) => {
      const from = `${topic} partition ${at.partition} offset ${at.offset}`;
      if ('withdrawn' in record) return parts.shadow?.withdraw(`the shadow record was deleted (${from})`);
      if (record.role === 'serve') return swapper.offer({ path: record.path, sha256: record.sha256, from });
      if (parts.shadow) return parts.shadow.offer({ path: record.path, sha256: record.sha256, share: record.share, from });
      metrics.modelRefusals.inc();
      logger.warn({ topic, ...at }, 'models topic shadow record refused: this service writes no shadow topic');
      return undefined;
    },
    onBadRecord: (reason, at) => {
      metrics.modelRefusals.inc();
      logger.warn({ topic, ...at, reason }, 'models topic record refused: not a model record');
    },
  });
  await reader.start();
  return () => reader.stop();
}
