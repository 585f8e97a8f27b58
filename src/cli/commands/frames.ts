/**
 * `rnnstream frames`: the model input rows a frames pipeline's front end makes from a fixture,
 * per key, for training a model elsewhere (PyTorch: scripts/train_speech_ctc.py). The rows are
 * the very ones the pipeline steps at serving time, made by the same code, so a model trained on
 * them sees at serving time what it saw in training.
 *
 * Writes <out>.f32 (every key's rows, float32 little-endian, rowSize values each, key after key)
 * and <out>.index.jsonl (a line per key when it ends: {"key","text","rows","offset"}, offset in
 * rows).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../../core/errors.js';
import { randomModel } from '../../core/random-model.js';
import { readJsonLines } from '../../adapters/fixture-source.js';
import { sequenceVerdict } from '../../state/sequence-verdict.js';
import { loadPipeline, pipelineNames } from '../../pipeline/registry.js';

export function registerFrames(program: Command): void {
  program
    .command('frames')
    .description("write the model input rows a frames pipeline's front end makes from a fixture, per key (for training elsewhere)")
    .requiredOption('--pipeline <name>', `a pipeline with a front end (${pipelineNames().join(', ')})`)
    .requiredOption('--input <file.jsonl>', 'fixture (.gz allowed)')
    .requiredOption('--out <prefix>', 'writes <prefix>.f32 and <prefix>.index.jsonl')
    .action(async (opts: { pipeline: string; input: string; out: string }) => {
      const pipeline = await loadPipeline(opts.pipeline);
      if (!pipeline.frames) throw new UsageError(`pipeline "${pipeline.name}" has no front end (frames): its rows are its events' features`);
      const model = randomModel({ ...pipeline.randomModel, features: pipeline.featureNames });
      const frames = pipeline.frames(model);
      const I = model.inputSize;
      const raw = new Float64Array(frames.maxRows * I);
      const open = new Map<string, { state: Float64Array; rows: Float32Array[]; count: number; last: number }>();
      const [dataFile, indexFile] = [`${opts.out}.f32`, `${opts.out}.index.jsonl`];
      if ([dataFile, indexFile].some((f) => resolve(f) === resolve(opts.input))) throw new UsageError(`frames: --out ${opts.out} would write over the input ${opts.input}`);
      const data = openSync(dataFile, 'w');
      const index = openSync(indexFile, 'w');
      let offset = 0;
      let keys = 0;
      let refused = 0;
      try {
        for await (const { text } of readJsonLines(opts.input)) {
          const parsed = pipeline.schema.safeParse(JSON.parse(text));
          if (!parsed.success) {
            refused++;
            continue;
          }
          const event = parsed.data;
          const key = pipeline.key(event);
          let k = open.get(key);
          if (!k) {
            const state = new Float64Array(frames.stateSize);
            frames.init(state);
            open.set(key, (k = { state, rows: [], count: 0, last: Number.NaN }));
          }
          const verdict = sequenceVerdict(pipeline.sequence, event, k.last, k.count === 0 && Number.isNaN(k.last));
          const rows = typeof verdict === 'string' ? verdict : frames.advance(event, k.state, raw);
          if (typeof rows === 'string') {
            refused++;
            continue;
          }
          k.last = pipeline.sequence ? pipeline.sequence.of(event) : Number.NaN;
          if (rows > 0) k.rows.push(Float32Array.from(raw.subarray(0, rows * I)));
          k.count += rows;
          if (pipeline.ends?.(event) !== true) continue;
          for (const r of k.rows) writeSync(data, new Uint8Array(r.buffer, r.byteOffset, r.byteLength));
          writeSync(index, `${JSON.stringify({ key, text: pipeline.label?.(event) ?? null, rows: k.count, offset })}\n`);
          offset += k.count;
          keys++;
          open.delete(key);
        }
      } finally {
        closeSync(data);
        closeSync(index);
      }
      process.stderr.write(`wrote ${offset} rows of ${I} values for ${keys} keys to ${dataFile} and ${indexFile}${refused ? `; ${refused} events refused` : ''}${open.size ? `; ${open.size} keys never ended, left out` : ''}\n`);
    });
}
