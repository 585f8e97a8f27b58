/**
 * `rnnstream export`: a model as one ONNX file that any ONNX runtime can run a step of, with the
 * state in its inputs and outputs: the step graph the onnx backend builds in memory
 * (backends/onnx-graph.ts), plus the model's normalisation in front, so that the file is the whole
 * model. Per step, for a batch of keys:
 *
 *   inputs   features [batch, F]      the raw feature values (float64), in `rnnstream.features` order
 *            h<k> (c<k>) [1, batch, H] layer k's state from the key's previous step (zeros at first)
 *   outputs  probabilities [batch, C] the head: class probabilities (softmax), or
 *            outputs [batch, C]       its values (linear)
 *            h<k>_next (c<k>_next)     the state to feed back at the key's next step
 *
 * The file's metadata_props say the same in machine-readable form (rnnstream.*), with the
 * model's hash: state written by another model means nothing to this one.
 */
import { RnnStreamError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { buildStepGraph, type OnnxStepGraph } from '../backends/onnx-graph.js';

/** One state input and the output that feeds it at the next step. */
export interface ExportedState {
  readonly input: string;
  readonly output: string;
  readonly layer: number;
  readonly kind: 'h' | 'c';
  readonly size: number;
}

export interface ExportedModel extends OnnxStepGraph {
  readonly states: readonly ExportedState[];
  readonly metadata: Readonly<Record<string, string>>;
}

export function exportStepGraph(model: RnnModel): ExportedModel {
  if (model.input) {
    throw new RnnStreamError(
      `export: model ${model.name} reads words (its first layer's input is an embedding rnnstream computes from a table beside the model file); export takes models of numeric features`,
    );
  }
  const states: ExportedState[] = [];
  model.layers.forEach((layer, k) => {
    states.push({ input: `h${k}`, output: `h${k}_next`, layer: k, kind: 'h', size: layer.hiddenSize });
    if (layer.cell === 'lstm') states.push({ input: `c${k}`, output: `c${k}_next`, layer: k, kind: 'c', size: layer.hiddenSize });
  });
  const metadata = {
    'rnnstream.model': model.name,
    'rnnstream.model_hash': model.hash,
    'rnnstream.features': JSON.stringify(model.features),
    'rnnstream.head': model.head.kind,
    'rnnstream.outputs': JSON.stringify(model.head.names),
    'rnnstream.state': JSON.stringify(states),
    'rnnstream.layers': JSON.stringify(model.layers.map((l) => ({ cell: l.cell, inputSize: l.inputSize, hiddenSize: l.hiddenSize }))),
  };
  const graph = buildStepGraph(model, { normalize: true, metadata, output: model.head.kind === 'softmax' ? 'probabilities' : 'outputs' });
  return { ...graph, states, metadata };
}
