/** `rnnstream import`: an ONNX recurrent network (PyTorch, tf2onnx) as an rnnstream model file. */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { BACKEND_NAMES, type BackendChoice } from '../../backends/types.js';
import { parseModel } from '../../core/model.js';
import { RnnStreamError, UsageError } from '../../core/errors.js';
import { importOnnx } from '../../import/onnx-import.js';
import { verifyImport } from '../../import/verify-import.js';
import { loadPipeline, pipelineNames } from '../../pipeline/registry.js';

/** A `--normalization` file: {"mean", "std"} of one number per feature (std > 0); a bad one is a usage error naming the field. */
function readNormalization(file: string, features: number): { mean: number[]; std: number[] } {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`--normalization ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const { mean, std } = (doc ?? {}) as { mean?: unknown; std?: unknown };
  const vector = (v: unknown, name: string, positive: boolean): number[] => {
    if (!Array.isArray(v) || v.length !== features || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0))) {
      throw new UsageError(`--normalization ${file}: ${name}: expected ${features} finite numbers${positive ? ' > 0' : ''} (one per feature)`);
    }
    return v as number[];
  };
  return { mean: vector(mean, 'mean', false), std: vector(std, 'std', true) };
}

export function registerImport(program: Command): void {
  program
    .command('import')
    .description('import an ONNX RNN/LSTM/GRU model (torch.onnx.export, tf2onnx) as a model file; --verify checks it against onnxruntime on the original')
    .argument('<model.onnx>', 'the ONNX file')
    .requiredOption('--out <model.json>', 'the model file to write')
    .option('--pipeline <name>', `take feature names and labels from a pipeline (${pipelineNames().join(', ')})`)
    .option('--labels <list>', 'comma-separated class labels (softmax) or output names (default: the pipeline\'s, or class0.../y0...)')
    .option('--name <name>', "the model's name (default: the pipeline's, or the file's)")
    .option('--normalization <stats.json>', 'the normalisation the model was trained with, {"mean": [...], "std": [...]} per feature: the graph then reads (feature - mean) / std')
    .option('--verify', 'run the import and the original file on the same random sequences and fail above the tolerance (1e-5)')
    .option('--backend <backend>', `backend for --verify (auto, ${BACKEND_NAMES.join(', ')})`, 'auto')
    .action(async (file: string, opts) => {
      let bytes: Uint8Array;
      try {
        bytes = readFileSync(file);
      } catch (err) {
        throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      if (opts.backend !== 'auto' && !(BACKEND_NAMES as readonly string[]).includes(opts.backend)) throw new UsageError(`--backend: expected auto or one of ${BACKEND_NAMES.join(', ')}, got "${opts.backend}"`);
      const pipeline = opts.pipeline ? await loadPipeline(opts.pipeline) : undefined;
      const pipelineHead = pipeline?.randomModel.head;
      const labels: string[] | undefined = opts.labels
        ? (opts.labels as string).split(',').map((l) => l.trim()).filter(Boolean)
        : pipelineHead ? (pipelineHead.kind === 'softmax' ? [...pipelineHead.labels] : [...pipelineHead.outputs]) : undefined;
      const imported = importOnnx(bytes, { name: opts.name ?? pipeline?.name ?? basename(file).replace(/\.onnx$/, ''), features: pipeline?.featureNames, labels, source: basename(file) });
      if (opts.normalization) imported.model.normalization = readNormalization(opts.normalization, imported.model.features.length);
      const model = parseModel(imported.model, opts.out);
      for (const note of imported.notes) process.stderr.write(`  ${note}\n`);
      if (opts.verify) {
        const r = await verifyImport(bytes, imported, { backend: opts.backend as BackendChoice });
        process.stderr.write(`verify: ${r.keys} keys x ${r.steps} steps, interleaved, on ${r.backend}, against onnxruntime on ${basename(file)}: worst difference ${r.worst.toExponential(2)} (tolerance ${r.tolerance})\n`);
        if (!r.pass) throw new RnnStreamError(`the import differs from the original by ${r.worst.toExponential(2)}, above the tolerance ${r.tolerance}; nothing was written`);
      }
      writeFileSync(opts.out, JSON.stringify(imported.model) + '\n');
      process.stderr.write(`wrote ${opts.out}: ${model.layers.map((l) => `${l.cell}(${l.inputSize}->${l.hiddenSize})`).join(' > ')} > ${model.head.kind}[${model.outputSize}], hash ${model.hash.slice(0, 12)}\n`);
    });
}
