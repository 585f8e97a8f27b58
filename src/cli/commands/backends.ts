/** `rnnstream backends`: the compute backends on this host, and their conformance (`--check`). */
import type { Command } from 'commander';
import { listBackends, resolveBackend } from '../../backends/registry.js';
import { type BackendName } from '../../backends/types.js';
import { checkConformance, CONFORMANCE_SUITE, conformanceModel } from '../../backends/conformance.js';
import { RnnStreamError } from '../../core/errors.js';
import { loadModelFile } from '../../adapters/model-file.js';
import { loadPipeline } from '../../pipeline/registry.js';

export function registerBackends(program: Command): void {
  program
    .command('backends')
    .description('try every compute backend on this host and say which work, and why the others do not')
    .option('--pipeline <name>', "probe with this pipeline's model", 'ball-direction')
    .option(
      '--check',
      `also run every working backend beside the float64 reference (each cell type, single and stacked, B = ${CONFORMANCE_SUITE.batches.join(', ')}, ${CONFORMANCE_SUITE.steps} steps) and fail if any differs by ${CONFORMANCE_SUITE.tolerance} or more`,
    )
    .action(async (opts) => {
      const pipeline = await loadPipeline(opts.pipeline);
      const model = loadModelFile(pipeline.modelFile);
      const working: BackendName[] = [];
      for (const provider of listBackends()) {
        try {
          const { backend } = await resolveBackend(provider.name, model);
          process.stdout.write(`${provider.name.padEnd(10)} ok    ${backend.detail}\n`);
          backend.dispose();
          working.push(provider.name);
        } catch (err) {
          const reason = err instanceof RnnStreamError && 'reason' in err ? String(err.reason) : (err as Error).message;
          process.stdout.write(`${provider.name.padEnd(10)} no    ${reason}\n`);
        }
      }
      const auto = await resolveBackend('auto', model);
      const timed = auto.measured.map((m) => `${m.name} ${Math.round(m.keyStepsPerSecond)} key-steps/s`).join(', ');
      process.stdout.write(`auto picks ${auto.backend.name}${timed ? ` (measured at 256 keys per step: ${timed})` : ''}\n`);
      auto.backend.dispose();
      if (opts.check) {
        const failed = await checkBackends(working.filter((n) => n !== 'reference'));
        if (failed > 0) throw new RnnStreamError(`${failed} backend check(s) differ from the float64 reference by ${CONFORMANCE_SUITE.tolerance} or more`);
      }
    });
}

/** Conformance of each named backend against the reference; prints a line per backend, returns the failures. */
async function checkBackends(names: readonly BackendName[]): Promise<number> {
  const { cases, batches, steps, tolerance } = CONFORMANCE_SUITE;
  process.stdout.write(`\nconformance vs float64 reference (${steps} steps, tolerance ${tolerance}):\n`);
  let failed = 0;
  for (const name of names) {
    let worst = 0;
    // The micro-batch path (every wave of a micro-batch in one call: device backends, onnx as sequences), where there is one.
    let worstMicroBatch: number | undefined;
    const bad: string[] = [];
    for (const modelCase of cases) {
      const { backend } = await resolveBackend(name, conformanceModel(modelCase));
      try {
        for (const batch of batches) {
          const r = await checkConformance(backend, modelCase, batch);
          worst = Math.max(worst, r.worstAbsError);
          if (r.microBatch) worstMicroBatch = Math.max(worstMicroBatch ?? 0, r.microBatch.worstAbsError);
          if (!r.passed) bad.push(`${modelCase.label} B=${batch}: ${r.worstAbsError.toExponential(2)}${r.microBatch ? `, micro-batch ${r.microBatch.worstAbsError.toExponential(2)}` : ''}`);
        }
      } finally {
        backend.dispose();
      }
    }
    failed += bad.length;
    const microBatch = worstMicroBatch === undefined ? '' : `, micro-batch path worst ${worstMicroBatch.toExponential(2)}`;
    process.stdout.write(
      `${name.padEnd(10)} ${bad.length === 0 ? 'pass' : 'FAIL'}  worst ${worst.toExponential(2)} over ${cases.length * batches.length} cases${microBatch}${bad.length ? ` (${bad.join('; ')})` : ''}\n`,
    );
  }
  return failed;
}
