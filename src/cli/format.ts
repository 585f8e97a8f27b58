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
    `dead-letters ${s.deadLettered}`,
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
  return lines.join('\n');
}
