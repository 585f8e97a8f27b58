/** `rnnstream eval`: a model against its baselines on a fixture, with an HTML report. */
import { writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { BACKEND_NAMES } from '../../backends/types.js';
import { pipelineNames } from '../../pipeline/registry.js';
import { formatEvalReport } from '../format.js';
import { evaluate } from '../../eval/evaluate.js';
import { renderEvalReport } from '../../eval/report-html.js';

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('evaluate a model on a labelled fixture: accuracy, by step, confusion matrix, baselines')
    .requiredOption('--pipeline <name>', `pipeline (${pipelineNames().join(', ')})`)
    .option('--input <file.jsonl>', "labelled fixture (default: the pipeline's test fixture)")
    .option('--model <model.json>', "model file (default: the pipeline's model)")
    .addOption(new Option('--backend <backend>', 'compute backend').choices(['auto', ...BACKEND_NAMES]).default('auto'))
    .option('--report <out.html>', 'write an HTML report with plots')
    .option('--json', 'print the evaluation as one JSON object')
    .action(async (opts) => {
      const report = await evaluate({ pipeline: opts.pipeline, input: opts.input, model: opts.model, backend: opts.backend });
      if (opts.report) writeFileSync(opts.report, renderEvalReport(report));
      const { trajectories: _t, baselinesByStep: _b, ...printable } = report;
      process.stdout.write((opts.json ? JSON.stringify(printable) : formatEvalReport(report)) + '\n');
    });
}
