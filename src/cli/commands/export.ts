/** `rnnstream export`: a model file as one ONNX step graph with explicit state inputs and outputs. */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { RnnStreamError, UsageError } from '../../core/errors.js';
import { loadModelFile } from '../../adapters/model-file.js';
import { exportStepGraph } from '../../export/onnx-export.js';
import { verifyExport } from '../../export/verify-export.js';

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('write a model as an ONNX step graph (raw features and each layer\'s state in; outputs and the next state out) that any ONNX runtime runs, checked against the float64 reference')
    .argument('<model.json>', 'the model file')
    .requiredOption('--out <model.onnx>', 'the ONNX file to write')
    .option('--no-verify', 'skip running the written graph on onnxruntime beside the float64 reference')
    .action(async (file: string, opts: { out: string; verify: boolean }) => {
      if (!opts.out.endsWith('.onnx')) throw new UsageError(`--out: expected a file name ending in .onnx, got "${opts.out}"`);
      const model = loadModelFile(file);
      const exported = exportStepGraph(model);
      if (opts.verify) {
        const r = await verifyExport(model, exported);
        process.stderr.write(`verify: ${r.keys} keys x ${r.steps} steps on onnxruntime against the float64 reference: worst difference ${r.worst.toExponential(2)} (tolerance ${r.tolerance})\n`);
        if (!r.pass) throw new RnnStreamError(`the exported graph differs from the float64 reference by ${r.worst.toExponential(2)}, above the tolerance ${r.tolerance}; nothing was written`);
      }
      writeFileSync(opts.out, exported.bytes);
      const state = exported.states.map((s) => `${s.input} [1, batch, ${s.size}] -> ${s.output}`).join(', ');
      process.stderr.write(`wrote ${opts.out} (${exported.bytes.length} bytes): features [batch, ${model.inputSize}] float64 (${model.features.join(', ')}) -> ${exported.output} [batch, ${model.outputSize}] (${model.head.names.join(', ')}); state ${state}; model hash ${model.hash.slice(0, 12)}\n`);
    });
}
