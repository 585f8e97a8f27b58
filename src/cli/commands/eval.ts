/** `rnnstream eval`: a model against its baselines on a fixture, with an HTML report. */
import { writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { BACKEND_NAMES } from '../../backends/types.js';
import { loadPipeline, pipelineNames } from '../../pipeline/registry.js';
import { formatEvalReport, formatTranscriptReport } from '../format.js';
import { evaluate } from '../../eval/evaluate.js';
import { renderEvalReport, renderTranscriptReport } from '../../eval/report-html.js';
import { evaluateTranscripts } from '../../eval/transcripts.js';

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('evaluate a model on a labelled fixture: accuracy, by step, confusion matrix, baselines; for speech, WER, CER, exact strings and the delay of partial words')
    .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
    .option('--input <file.jsonl>', "labelled fixture (default: the pipeline's test fixture)")
    .option('--model <model.json>', "model file (default: the pipeline's model)")
    .addOption(new Option('--backend <backend>', 'compute backend').choices(['auto', ...BACKEND_NAMES]).default('auto'))
    .option('--report <out.html>', 'write an HTML report with plots')
    .option('--json', 'print the evaluation as one JSON object')
    .action(async (opts) => {
      if ((await loadPipeline(opts.pipeline)).frames) {
        // A transcribing pipeline: WER, CER, exact strings and the delay of partial words.
        const report = await evaluateTranscripts({ pipeline: opts.pipeline, input: opts.input, model: opts.model, backend: opts.backend });
        if (opts.report) writeFileSync(opts.report, renderTranscriptReport(report));
        const { examples: _e, ...printable } = report;
        process.stdout.write((opts.json ? JSON.stringify(printable) : formatTranscriptReport(report)) + '\n');
        return;
      }
      const report = await evaluate({ pipeline: opts.pipeline, input: opts.input, model: opts.model, backend: opts.backend });
      if (opts.report) writeFileSync(opts.report, renderEvalReport(report));
      const { trajectories: _t, baselinesByStep: _b, ...printable } = report;
      process.stdout.write((opts.json ? JSON.stringify(printable) : formatEvalReport(report)) + '\n');
    });
}
