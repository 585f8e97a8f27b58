/**
 * Whether a new model may replace the one a running pipeline serves (a hot swap), checked before
 * it serves a single event: it must fit the pipeline (features, input, out-of-scope class), give
 * the same outputs (head kind and names), lay out its state as the served one does (the state
 * store's columns stay), and its steps on the backend in use must agree with the float64
 * reference. A model that fails is refused with the reason; the served one goes on.
 */
import { compareWithReference, CONFORMANCE_SUITE } from '../backends/conformance.js';
import type { StepBackend } from '../backends/types.js';
import { describeModel, type RnnModel } from '../core/model.js';
import type { PipelineDefinition } from './define.js';
import { inputOf } from './inputs.js';
import { outOfScopeRule } from './out-of-scope.js';
import { checkModelFitsPipeline } from './predict.js';

/** What happens to keys' state when a model is swapped in (issue: hot swap). */
export type SwapPolicy = 'reset' | 'keep' | 'warm';

export interface CandidateCheckParts {
  readonly pipeline: PipelineDefinition;
  /** The model served now. */
  readonly served: RnnModel;
  readonly candidate: RnnModel;
  readonly policy: SwapPolicy;
  /** Builds the candidate's backend, of the kind in use. */
  readonly createBackend: (model: RnnModel) => Promise<StepBackend>;
  /** The `--oos-threshold` flag, if given (it overrides the model's own threshold). */
  readonly oosThreshold?: number;
  /** Steps run beside the reference (default 20, on 8 keys). */
  readonly steps?: number;
}

export type CandidateVerdict = { readonly ok: true; readonly backend: StepBackend; readonly worstAbsError: number } | { readonly ok: false; readonly reason: string };

/** Checks `candidate`; when it passes, its backend is built and returned (the caller owns it). */
export async function checkCandidate(parts: CandidateCheckParts): Promise<CandidateVerdict> {
  const { pipeline, served, candidate, policy } = parts;
  const refused = (reason: string): CandidateVerdict => ({ ok: false, reason });
  try {
    checkModelFitsPipeline(pipeline, candidate);
    inputOf(pipeline, candidate);
    outOfScopeRule(pipeline, candidate, parts.oosThreshold);
  } catch (err) {
    return refused((err as Error).message);
  }
  if (candidate.head.kind !== served.head.kind || candidate.head.names.join('\u0000') !== served.head.names.join('\u0000')) {
    return refused(`its outputs (${candidate.head.kind}: ${candidate.head.names.join(', ')}) are not the served model's (${served.head.kind}: ${served.head.names.join(', ')})`);
  }
  const layout = (m: RnnModel): string => m.stateSegments.map((s) => `${s.offset}+${s.size}`).join(',');
  if (layout(candidate) !== layout(served)) {
    return refused(`its state (${describeModel(candidate)}, ${candidate.stateSize} floats) is laid out differently from the served model's (${describeModel(served)}, ${served.stateSize}); a different architecture needs a restart`);
  }
  if (policy === 'keep' && describeModel(candidate) !== describeModel(served)) {
    return refused(`--swap-policy keep needs the same cells (${describeModel(served)}), got ${describeModel(candidate)}`);
  }
  let backend: StepBackend;
  try {
    backend = await parts.createBackend(candidate);
  } catch (err) {
    return refused(`its backend could not be built: ${(err as Error).message}`);
  }
  try {
    const r = await compareWithReference(backend, candidate, 8, { steps: parts.steps ?? 20, seed: 11 });
    // Written so that NaN is refused too.
    if (!(r.worstAbsError < CONFORMANCE_SUITE.tolerance)) {
      backend.dispose();
      return refused(`its steps on ${backend.name} differ from the float64 reference by ${r.worstAbsError} (tolerance ${CONFORMANCE_SUITE.tolerance})`);
    }
    return { ok: true, backend, worstAbsError: r.worstAbsError };
  } catch (err) {
    backend.dispose();
    return refused(`its steps on ${backend.name} failed: ${(err as Error).message}`);
  }
}
