/**
 * `rnnstream train`: load a pipeline's train and validation fixtures, train, write the model file
 * (validated by loading it back), and optionally an HTML report with the loss curves and the
 * gradient norm by distance for untrained rnn, lstm and gru networks and the trained one.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import cliProgress from 'cli-progress';
import { UsageError } from '../core/errors.js';
import { parseModel, withWordTable, type ModelFile } from '../core/model.js';
import { writeModelFile } from '../adapters/model-file.js';
import { chooseOutOfScopeThreshold, trackUtterance, type FinishedKey, type OpenKeys } from '../eval/utterances.js';
import { renderTrainReport } from '../eval/report-html.js';
import { loadPipeline } from '../pipeline/registry.js';
import { replay } from '../replay/replay.js';
import { loadDataset } from './dataset.js';
import { hiddenGradientByDistance, initialModel, train, trainOptionsSchema, type EpochReport, type TrainOptions } from './trainer.js';

export interface TrainPipelineRequest {
  readonly pipeline: string;
  readonly train?: string;
  readonly validation?: string;
  readonly out?: string;
  readonly report?: string;
  readonly options: TrainOptions;
}

export interface TrainPipelineResult {
  readonly pipeline: string;
  readonly out: string;
  readonly seconds: number;
  readonly bestEpoch: number;
  readonly history: readonly EpochReport[];
  readonly trainEvents: number;
  readonly validationEvents: number;
}

/** Distance over which `--report` measures gradient decay. */
const REPORT_STEPS = 40;

export async function trainPipeline(req: TrainPipelineRequest, io: { progress: boolean; log: (line: string) => void }): Promise<TrainPipelineResult> {
  const pipeline = await loadPipeline(req.pipeline);
  const trainFile = req.train ?? pipeline.trainingFixtures?.train;
  const validationFile = req.validation ?? pipeline.trainingFixtures?.validation;
  if (!trainFile || !validationFile) throw new UsageError(`pipeline "${pipeline.name}" has no training fixtures; pass --train and --validation`);
  const classes = pipeline.randomModel.head.kind === 'softmax' ? pipeline.randomModel.head.labels : [];
  if (classes.length === 0) throw new UsageError(`pipeline "${pipeline.name}" is not a classifier; training supports softmax heads`);
  const trainData = await loadDataset(pipeline, trainFile, classes);
  const valData = await loadDataset(pipeline, validationFile, classes);
  io.log(`training ${pipeline.name} on ${trainData.sequences.length} sequences (${trainData.events} events), validating on ${valData.sequences.length} (${valData.events})`);

  const bar = io.progress
    ? new cliProgress.SingleBar({ format: 'epoch {epoch} |{bar}| {percentage}%', stream: process.stderr, hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic)
    : undefined;
  let barEpoch = 0;
  const options = { ...pipeline.training, ...Object.fromEntries(Object.entries(req.options).filter(([, v]) => v !== undefined)) } as TrainOptions;
  const result = train(pipeline, trainData, valData, options, {
    onProgress: (epoch, fraction) => {
      if (!bar) return;
      if (epoch !== barEpoch) {
        barEpoch = epoch;
        bar.start(100, 0, { epoch });
      }
      bar.update(Math.round(fraction * 100), { epoch });
    },
    onEpoch: (e) => {
      bar?.stop();
      io.log(
        `epoch ${String(e.epoch).padStart(3)}  train loss ${e.trainLoss.toFixed(4)} acc ${(100 * e.trainAccuracy).toFixed(1)}%  ` +
          `validation loss ${e.valLoss.toFixed(4)} acc ${(100 * e.valAccuracy).toFixed(1)}%  |grad| ${e.gradNorm.toFixed(3)}  lr ${e.learningRate.toPrecision(2)}  ${e.seconds.toFixed(1)}s`,
      );
    },
  });
  // Loading it back validates shapes and finiteness before anything is written.
  const withTable = result.table ? withWordTable(result.model, result.model.input!.table.file, result.table) : undefined;
  parseModel(withTable?.doc ?? result.model, 'trained model', withTable?.tables);
  const out = req.out ?? pipeline.modelFile;
  writeModelFile(out, result.model, result.table);
  io.log(`best epoch ${result.bestEpoch}; wrote ${out} (${result.seconds.toFixed(1)} s)`);
  if (pipeline.outOfScope && pipeline.ends) {
    const chosen = await chooseThresholdOnValidation(pipeline.name, pipeline.outOfScope, out, validationFile);
    io.log(`${pipeline.outOfScope} threshold ${chosen.value.toFixed(2)} (chosen on ${validationFile}): in-scope accuracy ${(100 * chosen.inScopeAccuracy).toFixed(1)}%, ${pipeline.outOfScope} recall ${(100 * chosen.outOfScopeRecall).toFixed(1)}%`);
  }

  if (req.report) {
    const opts = trainOptionsSchema.parse(options);
    const byDistance: Record<string, number[]> = {};
    for (const cell of ['rnn', 'lstm', 'gru'] as const) {
      byDistance[`${cell} (untrained)`] = hiddenGradientByDistance(initialModel(pipeline, trainData, { ...opts, cell }), valData, REPORT_STEPS);
    }
    byDistance[`trained ${result.model.layers[0]!.cell}`] = hiddenGradientByDistance(result.model, valData, REPORT_STEPS);
    writeFileSync(req.report, renderTrainReport({ pipeline: pipeline.name, history: result.history, gradientByDistance: byDistance, seconds: result.seconds }));
    io.log(`wrote ${req.report}`);
  }
  return {
    pipeline: pipeline.name,
    out,
    seconds: result.seconds,
    bestEpoch: result.bestEpoch,
    history: result.history,
    trainEvents: trainData.events,
    validationEvents: valData.events,
  };
}

/**
 * Replays the validation fixture through the written model (the path users run), chooses the
 * out-of-scope threshold on its final-word predictions, and records it in the model file's
 * training section (provenance: it changes no number the model computes, nor its hash).
 */
export async function chooseThresholdOnValidation(pipeline: string, outOfScope: string, modelFile: string, validationFile: string): Promise<ReturnType<typeof chooseOutOfScopeThreshold>> {
  const open: OpenKeys = new Map();
  const finished: FinishedKey[] = [];
  // The model's own answers: the rule is what this chooses, so none may apply yet.
  await replay({ pipeline, input: validationFile, model: modelFile, backend: 'auto', outOfScopeThreshold: 0 }, { onPrediction: (p) => trackUtterance(open, finished, p.key, p, p.label), onDeadLetter: () => {} });
  const chosen = chooseOutOfScopeThreshold(finished, outOfScope);
  const doc = JSON.parse(readFileSync(modelFile, 'utf8')) as ModelFile;
  const training = { ...doc.training, outOfScope: { label: outOfScope, threshold: chosen.value, chosenOn: basename(validationFile), rule: 'the best out-of-scope recall that costs at most 1 point of in-scope accuracy', inScopeAccuracy: chosen.inScopeAccuracy, outOfScopeRecall: chosen.outOfScopeRecall } };
  writeFileSync(modelFile, JSON.stringify({ ...doc, training }) + '\n');
  return chosen;
}
