import { ReferenceBackend } from '../../src/backends/reference.js';
import type { StepBackend } from '../../src/backends/types.js';
import type { RnnModel } from '../../src/core/model.js';

/** The reference backend behind a timer: an asynchronous, slow backend for flow-control tests. */
export function delayedReference(model: RnnModel, delayMs = 1): StepBackend {
  const reference = new ReferenceBackend(model);
  return {
    name: 'reference',
    detail: `reference delayed ${delayMs} ms`,
    step: (...args) => new Promise((resolve) => setTimeout(() => resolve(reference.step(...args)), delayMs)),
    dispose: () => {},
  };
}
