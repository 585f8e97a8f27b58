/**
 * The models topic (`--models-topic`): a compacted control topic whose records name the model
 * each pipeline should serve (the model-serving pattern Kafka Streams users build by hand). A
 * record carries a reference, not the bytes, so that big models (a word model's table) fit:
 *
 *   key: the pipeline's name
 *   value: {"pipeline": "ball-direction", "path": "/models/ball-2026-12-06.json", "sha256": "<hex of the file>"}
 *
 * Every instance reads the whole topic (a consumer in a group of its own, from the beginning).
 * `start` resolves once the reader has caught up with the topic as it was at start, having
 * handed on only the latest record for the pipeline: the model the pipeline served last, which a
 * restarted instance serves before it consumes anything. Records after that are handed on as they
 * come. A record that is not that shape is reported with the reason and its position, and
 * skipped.
 *
 * Shadow runs (service/shadow-run.ts) have records of their own, key `<pipeline>/shadow`, value
 * as above with `"role": "shadow"` and `"share"` (of keys, 0 to 1); share 0 or a tombstone under
 * that key (ShadowWithdrawn) stops the shadow. The latest of each role is handed on at start, the served one first.
 */
import { randomUUID } from 'node:crypto';
import type { Admin, Consumer, Kafka } from 'kafkajs';
import { z } from 'zod';
import { formatZodIssues } from '../../../core/validation.js';
import type { Logger } from '../../../observability/logger.js';

export const modelRecordSchema = z
  .object({
    pipeline: z.string().min(1),
    path: z.string().min(1),
    sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'expected 64 hex digits'),
    /** `serve` (default): the model to serve; `shadow`: a candidate run beside it (key `<pipeline>/shadow`). */
    role: z.enum(['serve', 'shadow']).default('serve'),
    /** For a shadow: the share of keys it runs on (each key's place is a hash of it); 0 stops the shadow. */
    share: z.number().min(0).max(1).default(1),
  })
  .strict();
export type ModelRecord = z.infer<typeof modelRecordSchema>;

/** The shadow record deleted (a tombstone under `<pipeline>/shadow`, what `rnnstream promote` leaves): no shadow runs. */
export interface ShadowWithdrawn {
  readonly pipeline: string;
  readonly role: 'shadow';
  readonly withdrawn: true;
}

/** What the topic says for a role: a model, or (shadow) none any more. */
export type ModelsTopicEntry = ModelRecord | ShadowWithdrawn;

export interface ModelsTopicParts {
  readonly kafka: Kafka;
  /** Reads where the topic ends at start. */
  readonly admin: Admin;
  readonly topic: string;
  /** The service's group: the reader's own group is named after it. */
  readonly group: string;
  readonly pipeline: string;
  readonly logger: Logger;
  /** A record for this pipeline, in topic order, with its position (`start` waits for the caught-up one's handling). */
  readonly onRecord: (record: ModelsTopicEntry, at: { partition: number; offset: string }) => void | Promise<unknown>;
  /** A record that is not a model record (its reason and position). */
  readonly onBadRecord: (reason: string, at: { partition: number; offset: string }) => void;
}

export class ModelsTopicReader {
  private consumer: Consumer | undefined;

  constructor(private readonly parts: ModelsTopicParts) {}

  /** Resolves once caught up with the topic's end as it was at start (see the module doc). */
  async start(): Promise<void> {
    const { kafka, admin, topic, group, logger } = this.parts;
    // Where the topic ends now: records before these are the past, of which only the latest counts.
    const ends = new Map((await admin.fetchTopicOffsets(topic)).filter((o) => BigInt(o.high) > BigInt(o.low)).map((o) => [o.partition, BigInt(o.high)]));
    // The latest record of each role: the model served, and the shadow run beside it.
    const latest = new Map<ModelRecord['role'], { record: ModelsTopicEntry; at: { partition: number; offset: string } }>();
    let caughtUp!: (handled: void | Promise<unknown>) => void;
    // Settles once the caught-up record is handled (a failure there is the handler's to report).
    const done = new Promise<void>((resolve) => (caughtUp = (handled) => void Promise.resolve(handled).then(() => resolve(), () => resolve())));
    const passed = (partition: number, offset: string): void => {
      const end = ends.get(partition);
      if (end === undefined || BigInt(offset) + 1n < end) return;
      ends.delete(partition);
      if (ends.size > 0) return;
      const records = [latest.get('serve'), latest.get('shadow')];
      latest.clear();
      // The served model first: a shadow is checked against it.
      const handled = records.reduce<Promise<unknown>>((prev, r) => (r ? prev.then(() => this.parts.onRecord(r.record, r.at)) : prev), Promise.resolve());
      caughtUp(handled);
    };
    if (ends.size === 0) caughtUp(undefined);
    const consumer = kafka.consumer({ groupId: `${group}.models-reader.${randomUUID()}`, allowAutoTopicCreation: false, maxWaitTimeInMs: 200 });
    this.consumer = consumer;
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    // A batch's last offset counts too: compaction leaves gaps, and the last offsets may be gone.
    consumer.on(consumer.events.END_BATCH_PROCESS, (e) => passed(e.payload.partition, e.payload.lastOffset));
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        const at = { partition, offset: message.offset };
        const record = this.recordOf(message.value, at) ?? this.shadowWithdrawn(message.key, message.value);
        if (record) {
          logger.info({ topic, ...at, role: record.role, ...('withdrawn' in record ? { withdrawn: true } : { path: record.path, sha256: record.sha256 }) }, 'model record read');
          if (ends.has(partition)) latest.set(record.role, { record, at });
          else this.parts.onRecord(record, at);
        }
        passed(partition, message.offset);
      },
    });
    await done;
  }

  /** The record for this pipeline, if the value is one (a bad value is reported). */
  private recordOf(value: Buffer | null, at: { partition: number; offset: string }): ModelRecord | undefined {
    if (value === null) return undefined; // a tombstone: the pipeline's entry was deleted
    let json: unknown;
    try {
      json = JSON.parse(value.toString('utf8'));
    } catch (err) {
      this.parts.onBadRecord(`not JSON: ${(err as Error).message}`, at);
      return undefined;
    }
    const parsed = modelRecordSchema.safeParse(json);
    if (!parsed.success) {
      this.parts.onBadRecord(formatZodIssues(parsed.error).join('; '), at);
      return undefined;
    }
    return parsed.data.pipeline === this.parts.pipeline ? parsed.data : undefined;
  }

  /** A tombstone under `<pipeline>/shadow`: the shadow record was deleted. */
  private shadowWithdrawn(key: Buffer | null, value: Buffer | null): ShadowWithdrawn | undefined {
    if (value !== null || key?.toString('utf8') !== `${this.parts.pipeline}/shadow`) return undefined;
    return { pipeline: this.parts.pipeline, role: 'shadow', withdrawn: true };
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect();
  }
}
