/** rnnstream's public API: the model, backends, state, operators and the shared pipeline chain. */
export { parseModel, describeModel, GATE_COUNT, CELL_KINDS, type RnnModel, type ModelFile, type CellKind } from './core/model.js';
export { loadModelFile, writeModelFile } from './adapters/model-file.js';
export { stepNetwork, stepLayer, applyHead, normalize } from './core/cells.js';
export { randomModel, randomModelFile, type RandomModelSpec } from './core/random-model.js';
export * from './core/errors.js';
export { resolveBackend, registerBackend, listBackends, type BackendResolution, type SkippedBackend } from './backends/registry.js';
export type { StepBackend, BackendName, BackendChoice, BackendProvider, BackendOptions } from './backends/types.js';
export { KeyStateStore, type KeySnapshot, type StatePosition, type KeyStateStoreOptions } from './state/key-state-store.js';
export { decodeEvents, type DecodeOptions } from './operators/decode-events.js';
export { rnnByKey, type RnnByKeyConfig, type KeyedStep } from './operators/rnn-by-key.js';
export { BoundedQueue } from './operators/bounded-queue.js';
export * from './operators/records.js';
export { predict, namedOutputs, type PredictionRecord, type PipelineOutput } from './pipeline/predict.js';
export { definePipeline, type PipelineDefinition } from './pipeline/define.js';
export { loadPipeline, pipelineNames } from './pipeline/registry.js';
export { readFixture } from './adapters/fixture-source.js';
export { replay, type ReplayOptions, type ReplaySummary } from './replay/replay.js';
export type { Logger } from './observability/logger.js';
