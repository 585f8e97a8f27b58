import type { EvalReport } from '../eval/evaluate.js';
import type { UtteranceReport } from '../eval/utterances.js';
import type { TranscriptReport } from '../eval/transcripts.js';
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
    `seconds      ${s.seconds.toFixed(3)}  (setup ${s.setupSeconds.toFixed(3)}; CPU ${s.cpuSeconds.toFixed(3)})`,
    `events/s     ${Math.round(s.eventsPerSecond)}`,
  ];
  if (s.transfers) {
    const t = s.transfers;
    const kb = (n: number): string => `${(n / 1024).toFixed(1)} KiB`;
    lines.push(
      `device       ${t.microBatches} micro-batch(es), ${t.waves} wave(s), ${t.microBatchPath ? 'one call per micro-batch' : 'one call per wave'}`,
      `  state      ${t.stateOnDevice.on ? 'on the device' : 'on the host'}: ${t.stateOnDevice.why}`,
      `  per batch  up ${kb(t.perMicroBatch.bytesUp)}, down ${kb(t.perMicroBatch.bytesDown)}, ${t.perMicroBatch.kernelCalls} kernel calls, ${t.perMicroBatch.readBacks} read-backs`,
    );
  }
  if (s.accuracy) {
    const a = s.accuracy;
    lines.push(`accuracy     ${pct(a.accuracy)}  (${a.correct}/${a.labelled} labelled events)`);
    const shown = a.accuracyByStep.slice(0, 10).map((v, k) => `${k + 1}:${pct(v)}`);
    lines.push(`by step      ${shown.join('  ')}${a.accuracyByStep.length > 10 ? '  ...' : ''}`);
  }
  if (s.outOfScope) {
    const o = s.outOfScope;
    lines.push(`out of scope ${o.label} when the top probability is under ${o.threshold} (${o.from === 'model' ? "the model's threshold, chosen on validation" : '--oos-threshold'}; the raw class in topClass)`);
  }
  if (s.prequential) {
    const p = s.prequential;
    lines.push(`prequential  ${pct(p.accuracy)}  (${p.correct}/${p.scored} predictions scored by ${p.scoredBy === 'last event' ? "the key's last event: its final prediction" : "the key's next event"})`);
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
  if (r.utterances) lines.push('', ...formatUtterances(r.utterances));
  lines.push('', ...formatConfusion(r.confusion));
  return lines.join('\n');
}

/** Up to this many classes the whole matrix is printed; past it, the most frequent confusions. */
const CONFUSION_MATRIX_MAX_LABELS = 12;

function formatConfusion({ labels, matrix }: EvalReport['confusion']): string[] {
  if (labels.length > CONFUSION_MATRIX_MAX_LABELS) {
    const pairs = matrix.flatMap((row, i) => row.map((n, j) => ({ n, truth: labels[i]!, predicted: labels[j]! })).filter((c) => c.truth !== c.predicted && c.n > 0));
    pairs.sort((a, b) => b.n - a.n || (a.truth < b.truth ? -1 : 1));
    return [`most frequent confusions (of ${labels.length} classes; --json has the whole matrix)`, ...pairs.slice(0, 10).map((c) => `  ${String(c.n).padStart(5)}  ${c.truth} -> ${c.predicted}`)];
  }
  const w = Math.max(6, ...labels.map((l) => l.length + 1));
  return [`confusion (rows true, columns predicted)`, ' '.repeat(w) + labels.map((l) => l.padStart(w)).join(''), ...matrix.map((row, i) => labels[i]!.padEnd(w) + row.map((v) => String(v).padStart(w)).join(''))];
}

function formatUtterances(u: UtteranceReport): string[] {
  const lines = [`utterances   ${u.keys} (${u.inScopeKeys} in scope, ${u.outOfScopeKeys} out of scope); final-word accuracy ${pct(u.accuracy)}`];
  if (u.asClass) lines.push(`${u.outOfScopeLabel} as a class       in-scope accuracy ${pct(u.asClass.inScopeAccuracy)}  ${u.outOfScopeLabel} recall ${pct(u.asClass.outOfScopeRecall)}`);
  if (u.threshold) lines.push(`${u.outOfScopeLabel} below p ${u.threshold.value.toFixed(2)}  in-scope accuracy ${pct(u.threshold.inScopeAccuracy)}  ${u.outOfScopeLabel} recall ${pct(u.threshold.outOfScopeRecall)}  (threshold chosen on validation)`);
  lines.push(`early intent ${u.earlyIntent.map((e) => `${Math.round(e.fraction * 100)}% of words: ${pct(e.accuracy)}`).join('  ')}`);
  return lines;
}

export function formatTranscriptReport(r: TranscriptReport): string {
  const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;
  return [
    `pipeline     ${r.pipeline}  (${r.input})`,
    `model        ${r.model.name} ${r.model.architecture}  hash ${r.model.hash.slice(0, 12)}${r.model.trained ? '' : '  [seeded random model, untrained]'}`,
    `backend      ${r.backend.name}: ${r.backend.detail}`,
    `streams      ${r.streams}  (${r.events} chunks, ${r.audioSeconds.toFixed(1)} s of audio, ${r.deadLettered} dead letters)`,
    `WER          ${pct(r.wer)}  (${r.referenceWords} words)`,
    `CER          ${pct(r.cer)}`,
    `exact        ${pct(r.exact)}  (whole transcripts)`,
    r.delay ? `word delay   median ${r.delay.medianFrames.toFixed(1)} frames (${(10 * r.delay.medianFrames).toFixed(0)} ms), p90 ${r.delay.p90Frames.toFixed(1)}, mean ${r.delay.meanFrames.toFixed(1)}  (${r.delay.words} words, from a word's end in the audio)` : 'word delay   (no alignments in this fixture)',
    `speed        ${r.realTimeFactor.toFixed(0)}x real time  (${r.seconds.toFixed(2)} s)`,
  ].join('\n');
}
