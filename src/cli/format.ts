import type { EvalReport } from '../eval/evaluate.js';
import type { ReplaySummary } from '../replay/replay.js';

const pct = (v: number): string => `${(100 * v).toFixed(1)}%`;

/** The human summary `rnnstream replay` prints. */
export function formatReplaySummary(s: ReplaySummary): string {
  const lines = [
    `pipeline     ${s.pipeline}  (${s.input})`,
    `model        ${s.model.name} ${s.model.architecture}  hash ${s.model.hash.slice(0, 12)}${s.model.trained ? '' : '  [seeded random model, untrained]'}`,
    `backend      ${s.backend.name}${s.backend.requested === 'auto' ? ' (auto)' : ''}: ${s.backend.detail}`,
    ...s.backend.skipped.map((k) => `  skipped    ${k.name}: ${k.reason}`),
    `events       ${s.events}`,
    `keys         ${s.keys}`,
    `predictions  ${s.predictions}`,
    `dead-letters ${s.deadLettered}${s.blankLines ? `  (${s.blankLines} blank line(s) skipped)` : ''}`,
    ...(s.sequenceGaps ? [`gaps        ${s.sequenceGaps} missing event(s) by sequence`] : []),
    `evictions    ${s.evictions}`,
    `seconds      ${s.seconds.toFixed(3)}  (setup ${s.setupSeconds.toFixed(3)})`,
    `events/s     ${Math.round(s.eventsPerSecond)}`,
  ];
  if (s.accuracy) {
    const a = s.accuracy;
    lines.push(`accuracy     ${pct(a.accuracy)}  (${a.correct}/${a.labelled} labelled events)`);
    const shown = a.accuracyByStep.slice(0, 10).map((v, k) => `${k + 1}:${pct(v)}`);
    lines.push(`by step      ${shown.join('  ')}${a.accuracyByStep.length > 10 ? '  ...' : ''}`);
  }
  if (s.prequential) {
    const p = s.prequential;
    lines.push(`prequential  ${pct(p.accuracy)}  (${p.correct}/${p.scored} predictions scored by the key's next event)`);
  }
  return lines.join('\n');
}

/** The human summary `rnnstream eval` prints. */
export function formatEvalReport(r: EvalReport): string {
  const width = Math.max(16, ...Object.keys(r.baselines).map((n) => n.length + 2));
  const lines = [
    `pipeline     ${r.pipeline}  (${r.input})`,
    `model        ${r.model.name} ${r.model.architecture}${r.model.trained ? '' : '  [seeded random model, untrained]'}  backend ${r.backend.name}`,
    `events       ${r.events} (${r.labelled} labelled), keys ${r.keys}`,
    '',
    `${'predictor'.padEnd(width)}accuracy  from step ${r.warmedUpFromStep}`,
    `${'model'.padEnd(width)}${pct(r.accuracy).padStart(8)}  ${pct(r.accuracyWarmedUp).padStart(8)}`,
    ...Object.keys(r.baselines).map((n) => `${n.padEnd(width)}${pct(r.baselines[n]!).padStart(8)}  ${pct(r.baselinesWarmedUp[n]!).padStart(8)}`),
    '',
    `by step      ${r.accuracyByStep.slice(0, 10).map((v, k) => `${k + 1}:${pct(v)}`).join('  ')}${r.accuracyByStep.length > 10 ? '  ...' : ''}`,
  ];
  if (r.prequential) lines.push(`prequential  ${pct(r.prequential.accuracy)} (${r.prequential.scored} scored)`);
  const { labels, matrix } = r.confusion;
  const w = Math.max(6, ...labels.map((l) => l.length + 1));
  lines.push('', `confusion (rows true, columns predicted)`, ' '.repeat(w) + labels.map((l) => l.padStart(w)).join(''));
  matrix.forEach((row, i) => lines.push(labels[i]!.padEnd(w) + row.map((v) => String(v).padStart(w)).join('')));
  return lines.join('\n');
}
