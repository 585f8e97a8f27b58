/**
 * What the first layer reads for an event: the pipeline's numeric features, or the model's vector
 * for the event's word. One function for inference (rnnByKey) and evaluation alike.
 */
import { RnnStreamError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { WordVectors } from '../core/words.js';
import type { Carried, PipelineDefinition } from './define.js';

export type InputOf = (event: unknown, prev: Carried | undefined, out: Float64Array) => void;

export function inputOf(pipeline: PipelineDefinition, model: RnnModel): InputOf {
  if (pipeline.word) {
    const input = model.input;
    if (!input) throw new RnnStreamError(`pipeline "${pipeline.name}" reads words, but model "${model.name}" has no word input (input.kind "words")`);
    const word = pipeline.word;
    const vectors = new WordVectors(input);
    return (event, _prev, out) => vectors.into(word(event), out);
  }
  if (model.input) throw new RnnStreamError(`model "${model.name}" reads words, but pipeline "${pipeline.name}" computes numeric features`);
  // A frames pipeline's rows come from its front end (frame-stepper.ts), not from here.
  return pipeline.features ?? (() => undefined);
}
