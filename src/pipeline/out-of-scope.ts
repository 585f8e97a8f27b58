/**
 * A model's out-of-scope rule, applied where predictions are served (replay and the service),
 * not only where they are evaluated (issue 25, item 7).
 *
 * `rnnstream train` chooses the threshold on the validation set and stores it in the model file
 * (`training.outOfScope`: `{"label":"oos","threshold":0.22,...}` for intent-from-words). A
 * prediction whose top probability is under it is the pipeline's out-of-scope class: a question
 * the model was not taught is answered "out of scope" rather than with its least unlikely intent.
 * The raw top class stays in the record's `topClass`, so nothing is lost to the rule.
 */
import { z } from 'zod';
import { RnnStreamError, UsageError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { formatZodIssues } from '../core/validation.js';
import type { PipelineDefinition } from './define.js';

export interface OutOfScopeRule {
  /** The pipeline's out-of-scope class, and its index among the model's labels. */
  readonly label: string;
  readonly labelIndex: number;
  /** A prediction whose top probability is under this is `label`. */
  readonly threshold: number;
  /** Where the threshold came from. */
  readonly from: 'model' | 'flag';
}

/** What `rnnstream train` writes into training.outOfScope (it writes more; these two are what serving reads). */
const savedRuleSchema = z.object({ label: z.string().min(1), threshold: z.number().min(0).max(1) });

/**
 * The rule `pipeline` serves `model` with: the model's stored threshold, or `threshold` where the
 * user gave one (`--oos-threshold`; 0 turns the rule off). Undefined where there is no rule: the
 * pipeline has no out-of-scope class, or the model no threshold and none was given.
 */
export function outOfScopeRule(pipeline: Pick<PipelineDefinition, 'name' | 'outOfScope'>, model: RnnModel, threshold?: number): OutOfScopeRule | undefined {
  if (threshold !== undefined && !(threshold >= 0 && threshold <= 1)) throw new UsageError(`--oos-threshold: expected a probability from 0 to 1, got ${threshold}`);
  const label = pipeline.outOfScope;
  const labelIndex = label === undefined || model.head.kind !== 'softmax' ? -1 : model.head.names.indexOf(label);
  if (labelIndex < 0) {
    // 0 is "no rule", which every pipeline can have (eval asks for the model's own answers).
    if (threshold === undefined || threshold === 0) return undefined;
    throw new UsageError(
      label === undefined
        ? `--oos-threshold: pipeline "${pipeline.name}" has no out-of-scope class`
        : `--oos-threshold: model "${model.name}" has no "${label}" class among its labels, so nothing can be predicted out of scope`,
    );
  }
  if (threshold !== undefined) return threshold > 0 ? { label: label!, labelIndex, threshold, from: 'flag' } : undefined;
  const saved = model.file.training?.outOfScope;
  if (saved === undefined) return undefined;
  const parsed = savedRuleSchema.safeParse(saved);
  if (!parsed.success) throw new RnnStreamError(`model "${model.name}": training.outOfScope: ${formatZodIssues(parsed.error).join('; ')}`);
  if (parsed.data.label !== label) {
    throw new RnnStreamError(`model "${model.name}": training.outOfScope.label is "${parsed.data.label}", but pipeline "${pipeline.name}" calls its out-of-scope class "${label}"`);
  }
  return parsed.data.threshold > 0 ? { label: label!, labelIndex, threshold: parsed.data.threshold, from: 'model' } : undefined;
}
