/** The pipelines this package ships, by name, loaded on demand. */
import { UsageError } from '../core/errors.js';
import type { PipelineDefinition } from './define.js';

const PIPELINES: Record<string, () => Promise<{ default: PipelineDefinition }>> = {
  'ball-direction': () => import('../../pipelines/ball-direction/index.js'),
  'stock-moves': () => import('../../pipelines/stock-moves/index.js'),
  'intent-from-words': () => import('../../pipelines/intent-from-words/index.js'),
  'speech-digits': () => import('../../pipelines/speech-digits/index.js'),
};

export const pipelineNames = (): string[] => Object.keys(PIPELINES);

export async function loadPipeline(name: string): Promise<PipelineDefinition> {
  const load = PIPELINES[name];
  if (!load) throw new UsageError(`unknown pipeline "${name}"; expected one of: ${pipelineNames().join(', ')}`);
  return (await load()).default;
}
