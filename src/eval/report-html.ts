/**
 * Self-contained HTML reports (inline SVG, no scripts, no external files): what a person would
 * rather look at than a table. `renderEvalReport` draws accuracy by step index against the
 * baselines, the confusion matrix, and a few trajectories with their predictions;
 * `renderTrainReport` draws the loss per epoch and the gradient norm by distance.
 */
import { COMPASS } from '../fixtures/compass.js';
import type { EpochReport } from '../train/trainer.js';
import type { EvalReport, Trajectory } from './evaluate.js';
import type { StreamTranscript, TranscriptReport } from './transcripts.js';
import type { UtteranceReport } from './utterances.js';

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pct = (v: number): string => `${(100 * v).toFixed(1)}%`;
const num = (v: number): string => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2));

interface Series {
  readonly name: string;
  readonly points: readonly (readonly [number, number])[];
  readonly dashed?: boolean;
}

/** A line chart with axes, ticks and a legend. `logY` plots log10 of positive values. */
export function lineChart(opts: { id: string; title: string; xLabel: string; yLabel: string; series: readonly Series[]; yMin?: number; yMax?: number; logY?: boolean }): string {
  const W = 800;
  const H = 360;
  const m = { l: 64, r: 260, t: 36, b: 48 };
  const tf = (v: number): number => (opts.logY ? Math.log10(Math.max(v, 1e-12)) : v);
  const xs = opts.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = opts.series.flatMap((s) => s.points.map((p) => tf(p[1])));
  const x0 = Math.min(...xs, 0);
  const x1 = Math.max(...xs, 1);
  const y0 = opts.yMin ?? Math.min(...ys);
  const y1 = opts.yMax ?? Math.max(...ys);
  const yr = y1 - y0 || 1;
  const X = (v: number): number => m.l + ((v - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
  const Y = (v: number): number => H - m.b - ((tf(v) - y0) / yr) * (H - m.t - m.b);
  const YT = (t: number): number => H - m.b - ((t - y0) / yr) * (H - m.t - m.b);
  const parts: string[] = [];
  for (let i = 0; i <= 5; i++) {
    const t = y0 + (yr * i) / 5;
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${YT(t)}" y2="${YT(t)}" stroke="#ddd"/>`);
    parts.push(`<text x="${m.l - 6}" y="${YT(t) + 4}" text-anchor="end" font-size="11">${opts.logY ? `1e${t.toFixed(1)}` : num(t)}</text>`);
  }
  for (let i = 0; i <= 6; i++) {
    const t = x0 + ((x1 - x0) * i) / 6;
    parts.push(`<text x="${X(t)}" y="${H - m.b + 16}" text-anchor="middle" font-size="11">${Number.isInteger(x0) && Number.isInteger(x1) ? Math.round(t) : num(t)}</text>`);
  }
  parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/>`);
  opts.series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const d = s.points.map((p, k) => `${k ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    parts.push(`<line x1="${W - m.r + 12}" x2="${W - m.r + 36}" y1="${m.t + 10 + i * 18}" y2="${m.t + 10 + i * 18}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    parts.push(`<text x="${W - m.r + 42}" y="${m.t + 14 + i * 18}" font-size="12">${esc(s.name)}</text>`);
  });
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(opts.xLabel)}</text>`);
  parts.push(`<text x="14" y="${(m.t + H - m.b) / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${(m.t + H - m.b) / 2})">${esc(opts.yLabel)}</text>`);
  parts.push(`<text x="${m.l}" y="20" font-size="14" font-weight="bold">${esc(opts.title)}</text>`);
  return `<svg data-plot="${opts.id}" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${parts.join('')}</svg>`;
}

function confusionChart(labels: readonly string[], matrix: readonly (readonly number[])[]): string {
  const cell = Math.min(56, Math.floor(440 / Math.max(1, labels.length)));
  const m = { l: 90, t: 70 };
  const W = m.l + cell * labels.length + 20;
  const H = m.t + cell * labels.length + 20;
  const parts: string[] = [`<text x="10" y="20" font-size="14" font-weight="bold">Confusion matrix (rows: true, columns: predicted)</text>`];
  matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((v, j) => {
      const share = v / total;
      const shade = Math.round(255 - share * 200);
      parts.push(`<rect x="${m.l + j * cell}" y="${m.t + i * cell}" width="${cell}" height="${cell}" fill="rgb(${shade},${shade},255)" stroke="#fff"/>`);
      parts.push(`<text x="${m.l + j * cell + cell / 2}" y="${m.t + i * cell + cell / 2 + 4}" text-anchor="middle" font-size="11">${v}</text>`);
    });
    parts.push(`<text x="${m.l - 6}" y="${m.t + i * cell + cell / 2 + 4}" text-anchor="end" font-size="12">${esc(labels[i]!)}</text>`);
    parts.push(`<text x="${m.l + i * cell + cell / 2}" y="${m.t - 8}" text-anchor="middle" font-size="12">${esc(labels[i]!)}</text>`);
  });
  return `<svg data-plot="confusion" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${parts.join('')}</svg>`;
}

/** Ball paths in the arena with an arrow per frame for the predicted direction. */
function pathChart(trajectories: readonly Trajectory[]): string {
  const S = 560;
  const pad = 30;
  const X = (v: number): number => pad + v * (S - 2 * pad);
  const Y = (v: number): number => S - pad - v * (S - 2 * pad);
  const parts: string[] = [
    `<text x="10" y="20" font-size="14" font-weight="bold">Trajectories: predicted direction per frame (green right, red wrong)</text>`,
    `<rect x="${pad}" y="${pad}" width="${S - 2 * pad}" height="${S - 2 * pad}" fill="none" stroke="#333"/>`,
  ];
  trajectories.forEach((t, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    parts.push(`<polyline points="${t.points.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="1.5" opacity="0.6"/>`);
    for (const p of t.points) {
      const k = COMPASS.indexOf(p.prediction as (typeof COMPASS)[number]);
      if (k < 0) continue;
      const a = (k * Math.PI) / 4;
      const len = 9;
      const x2 = X(p.x) + len * Math.cos(a);
      const y2 = Y(p.y) - len * Math.sin(a);
      parts.push(`<line x1="${X(p.x).toFixed(1)}" y1="${Y(p.y).toFixed(1)}" x2="${x2.toFixed(1)}" y2="${y2.toFixed(1)}" stroke="${p.prediction === p.label ? '#2ca02c' : '#d62728'}" stroke-width="1.5" marker-end="url(#head)"/>`);
    }
    const first = t.points[0];
    if (first) parts.push(`<text x="${X(first.x) + 4}" y="${Y(first.y) - 4}" font-size="10" fill="${color}">${esc(t.key)}</text>`);
  });
  const defs = `<defs><marker id="head" markerWidth="4" markerHeight="4" refX="2" refY="2" orient="auto"><path d="M0,0 L4,2 L0,4 z" fill="#555"/></marker></defs>`;
  return `<svg data-plot="trajectories" xmlns="http://www.w3.org/2000/svg" width="${S}" height="${S}" viewBox="0 0 ${S} ${S}" font-family="sans-serif">${defs}${parts.join('')}</svg>`;
}

/** Price series with the predicted next move as a marker per tick (green right, red wrong). */
function seriesChart(trajectories: readonly Trajectory[]): string {
  const W = 720;
  const rowH = 150;
  const m = { l: 70, r: 20, t: 34 };
  const H = m.t + rowH * trajectories.length + 10;
  const parts: string[] = [`<text x="10" y="20" font-size="14" font-weight="bold">Price series: predicted next move per tick (▲ up, ▼ down; green right, red wrong)</text>`];
  trajectories.forEach((t, i) => {
    const top = m.t + i * rowH;
    const xs = t.points.map((p) => p.x);
    const ys = t.points.map((p) => p.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const X = (v: number): number => m.l + ((v - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
    const Y = (v: number): number => top + rowH - 20 - ((v - y0) / (y1 - y0 || 1)) * (rowH - 36);
    parts.push(`<text x="${m.l}" y="${top + 10}" font-size="12">${esc(t.key)}</text>`);
    parts.push(`<text x="${m.l - 6}" y="${Y(y1) + 4}" text-anchor="end" font-size="10">${num(y1)}</text><text x="${m.l - 6}" y="${Y(y0) + 4}" text-anchor="end" font-size="10">${num(y0)}</text>`);
    parts.push(`<polyline points="${t.points.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' ')}" fill="none" stroke="#555" stroke-width="1"/>`);
    for (const p of t.points) {
      const up = p.prediction === 'up';
      const cx = X(p.x);
      const cy = Y(p.y) + (up ? -6 : 6);
      const d = up ? `M${cx - 3},${cy + 2} L${cx + 3},${cy + 2} L${cx},${cy - 3} z` : `M${cx - 3},${cy - 2} L${cx + 3},${cy - 2} L${cx},${cy + 3} z`;
      parts.push(`<path d="${d}" fill="${p.prediction === p.label ? '#2ca02c' : '#d62728'}"/>`);
    }
  });
  return `<svg data-plot="trajectories" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${parts.join('')}</svg>`;
}

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}section{margin:28px 0}</style>
</head><body>${body}</body></html>`;
}

export function renderEvalReport(r: EvalReport): string {
  const steps = Math.min(r.accuracyByStep.length, 60);
  const toPoints = (v: readonly number[]): [number, number][] => v.slice(0, steps).map((a, k) => [k + 1, a]);
  const series: Series[] = [
    { name: 'model', points: toPoints(r.accuracyByStep) },
    ...Object.entries(r.baselinesByStep).map(([name, v]) => ({ name, points: toPoints(v), dashed: true })),
  ];
  const rows = [
    ['model', r.accuracy, r.accuracyWarmedUp] as const,
    ...Object.keys(r.baselines).map((n) => [n, r.baselines[n]!, r.baselinesWarmedUp[n]!] as const),
  ];
  const body = `<h1>${esc(r.pipeline)}: evaluation</h1>
<p>${esc(r.input)} — ${r.events} events, ${r.keys} keys, ${r.labelled} labelled. Model ${esc(r.model.name)} ${esc(r.model.architecture)}${r.model.trained ? '' : ' (seeded random, untrained)'}, backend ${esc(r.backend.name)}.</p>
<table><tr><th>predictor</th><th>accuracy</th><th>from step ${r.warmedUpFromStep}</th></tr>${rows.map(([n, a, w]) => `<tr><td>${esc(n)}</td><td>${pct(a)}</td><td>${pct(w)}</td></tr>`).join('')}</table>
${r.prequential ? `<p>Prequential (live) accuracy: ${pct(r.prequential.accuracy)} of ${r.prequential.scored} predictions scored by ${r.prequential.scoredBy === 'last event' ? "the key's last event (its final prediction)" : "the key's next event"}.</p>` : ''}
<section>${lineChart({ id: 'accuracy-by-step', title: 'Accuracy by step index (the key’s n-th event)', xLabel: 'step index', yLabel: 'accuracy', series, yMin: 0, yMax: 1 })}</section>
${r.utterances ? utteranceSection(r.utterances) : ''}
<section>${r.confusion.labels.length <= CONFUSION_CHART_MAX_LABELS ? confusionChart(r.confusion.labels, r.confusion.matrix) : confusionTable(r.confusion.labels, r.confusion.matrix)}</section>
${r.plot ? `<section>${r.plot === 'series' ? seriesChart(r.trajectories) : pathChart(r.trajectories)}</section>` : ''}`;
  return page(`${r.pipeline} evaluation`, body);
}

/** Past this many classes a matrix of cells is unreadable: the report lists the frequent confusions instead. */
const CONFUSION_CHART_MAX_LABELS = 24;

function confusionTable(labels: readonly string[], matrix: readonly (readonly number[])[]): string {
  const pairs = matrix.flatMap((row, i) => row.map((n, j) => ({ n, truth: labels[i]!, predicted: labels[j]! })).filter((c) => c.truth !== c.predicted && c.n > 0));
  pairs.sort((a, b) => b.n - a.n || (a.truth < b.truth ? -1 : 1));
  return `<h2>Most frequent confusions (of ${labels.length} classes)</h2><table data-plot="confusion"><tr><th>true</th><th>predicted</th><th>count</th></tr>${pairs
    .slice(0, 20)
    .map((c) => `<tr><td>${esc(c.truth)}</td><td>${esc(c.predicted)}</td><td>${c.n}</td></tr>`)
    .join('')}</table>`;
}

/** Final-word accuracy, out of scope both ways, and early intent as a plot. */
function utteranceSection(u: UtteranceReport): string {
  const oos = u.outOfScopeLabel ?? 'out of scope';
  const rows = [
    ...(u.asClass ? [[`${oos} as a class`, u.asClass] as const] : []),
    ...(u.threshold ? [[`${oos} when the top probability is below ${u.threshold.value.toFixed(2)} (chosen on validation)`, u.threshold] as const] : []),
  ];
  const series: Series[] = [
    { name: 'all utterances', points: u.earlyIntent.map((e) => [100 * e.fraction, e.accuracy]) },
    { name: 'in scope', points: u.earlyIntent.map((e) => [100 * e.fraction, e.inScopeAccuracy]), dashed: true },
  ];
  return `<section><h2>Utterances</h2>
<p>${u.keys} utterances (${u.inScopeKeys} in scope, ${u.outOfScopeKeys} ${esc(oos)}); accuracy of the prediction after the last word: ${pct(u.accuracy)}.</p>
${rows.length > 0 ? `<table><tr><th>rule</th><th>in-scope accuracy</th><th>${esc(oos)} recall</th></tr>${rows.map(([n, v]) => `<tr><td>${esc(n)}</td><td>${pct(v.inScopeAccuracy)}</td><td>${pct(v.outOfScopeRecall)}</td></tr>`).join('')}</table>` : ''}
<table><tr><th>words read</th>${u.earlyIntent.map((e) => `<th>${Math.round(100 * e.fraction)}%</th>`).join('')}</tr><tr><td>accuracy</td>${u.earlyIntent.map((e) => `<td>${pct(e.accuracy)}</td>`).join('')}</tr><tr><td>in scope</td>${u.earlyIntent.map((e) => `<td>${pct(e.inScopeAccuracy)}</td>`).join('')}</tr></table>
${lineChart({ id: 'early-intent', title: 'Early intent: accuracy after a share of each utterance’s words', xLabel: '% of the words read', yLabel: 'accuracy', series, yMin: 0, yMax: 1 })}</section>`;
}

export function renderTrainReport(opts: {
  pipeline: string;
  history: readonly EpochReport[];
  gradientByDistance: Readonly<Record<string, readonly number[]>>;
  seconds: number;
}): string {
  const epochs = (f: (e: EpochReport) => number): [number, number][] => opts.history.map((e) => [e.epoch, f(e)]);
  const body = `<h1>${esc(opts.pipeline)}: training</h1>
<p>${opts.history.length} epochs in ${opts.seconds.toFixed(1)} s.</p>
<section>${lineChart({ id: 'loss', title: 'Cross-entropy per epoch', xLabel: 'epoch', yLabel: 'loss', series: [{ name: 'train', points: epochs((e) => e.trainLoss) }, { name: 'validation', points: epochs((e) => e.valLoss) }] })}</section>
<section>${lineChart({ id: 'accuracy', title: 'Accuracy per epoch', xLabel: 'epoch', yLabel: 'accuracy', series: [{ name: 'train', points: epochs((e) => e.trainAccuracy) }, { name: 'validation', points: epochs((e) => e.valAccuracy) }], yMin: 0, yMax: 1 })}</section>
<section>${lineChart({
    id: 'gradient-by-distance',
    title: '|dL/dh| of the top layer k steps before the scored step (vanishing gradients)',
    xLabel: 'k (steps back)',
    yLabel: 'gradient norm (log10)',
    logY: true,
    series: Object.entries(opts.gradientByDistance).map(([name, v]) => ({ name, points: v.map((g, k) => [k, g] as [number, number]) })),
  })}</section>`;
  return page(`${opts.pipeline} training`, body);
}

/**
 * One stream's partial transcript over time: the words' ends in the audio (dashed, named), the
 * partial transcript after each chunk (a step, its text where it changed), and the count of
 * words in place so far.
 */
function transcriptTimeline(t: StreamTranscript, id: string): string {
  const W = 860;
  const H = 220;
  const m = { l: 40, r: 170, t: 40, b: 40 };
  const end = Math.max(t.partials.at(-1)?.samples ?? 1, ...(t.wordEnds ?? [])) / 16_000;
  const X = (seconds: number): number => m.l + (seconds / (end || 1)) * (W - m.l - m.r);
  const ref = t.reference.split(' ');
  const inPlace = (text: string): number => {
    const got = text.split(' ');
    let n = 0;
    while (n < ref.length && got[n] === ref[n] && (n < got.length - 1 || n === ref.length - 1)) n++;
    return n;
  };
  const Y = (words: number): number => H - m.b - (words / Math.max(1, ref.length)) * (H - m.t - m.b - 60);
  const parts: string[] = [`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`];
  for (let s = 0; s <= Math.floor(end * 2); s++) parts.push(`<text x="${X(s / 2)}" y="${H - m.b + 16}" font-size="11" text-anchor="middle">${(s / 2).toFixed(1)} s</text>`);
  (t.wordEnds ?? []).forEach((sample, k) => {
    const x = X(sample / 16_000);
    parts.push(`<line x1="${x}" x2="${x}" y1="${m.t}" y2="${H - m.b}" stroke="#999" stroke-dasharray="4 3"/><text x="${x}" y="${m.t - 6}" font-size="11" text-anchor="end">${esc(ref[k] ?? '')}</text>`);
  });
  let d = '';
  let shown = '';
  let row = 0;
  t.partials.forEach((p, i) => {
    const x = X(p.samples / 16_000);
    const y = Y(inPlace(p.text));
    // A step: the count holds until the chunk that changes it.
    d += i ? `H${x.toFixed(1)}V${y.toFixed(1)}` : `M${X(0).toFixed(1)},${y.toFixed(1)}H${x.toFixed(1)}`;
    if (p.text !== shown) {
      shown = p.text;
      parts.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3" fill="${PALETTE[0]}"/><text x="${(x + 3).toFixed(1)}" y="${(m.t + 14 + 13 * (row++ % 5)).toFixed(1)}" font-size="11" fill="${PALETTE[1]}">${esc(p.text || '∅')}</text>`);
    }
  });
  parts.push(`<path d="${d}" fill="none" stroke="${PALETTE[0]}" stroke-width="2"/>`);
  const title = `${t.key}: "${t.reference}" → "${t.final}"`;
  return `<figure id="${id}"><figcaption>${esc(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">${parts.join('')}</svg></figure>`;
}

export function renderTranscriptReport(r: TranscriptReport): string {
  const delay = r.delay
    ? `<p>Delay of a word (from its end in the audio to its appearance in the partial transcript, over ${r.delay.words} correctly transcribed words): median ${r.delay.medianFrames.toFixed(1)} frames (${(10 * r.delay.medianFrames).toFixed(0)} ms), 90th percentile ${r.delay.p90Frames.toFixed(1)} frames, mean ${r.delay.meanFrames.toFixed(1)}.</p>`
    : '<p>No alignments in this fixture (wordEnds on the last events): no word delays.</p>';
  const body = `<h1>${esc(r.pipeline)}: evaluation</h1>
<p>${esc(r.input)}: ${r.streams} streams, ${r.events} chunks, ${r.audioSeconds.toFixed(1)} s of audio. Model ${esc(r.model.name)} ${esc(r.model.architecture)}${r.model.trained ? '' : ' (seeded random, untrained)'}, backend ${esc(r.backend.name)}.</p>
<table><tr><th>WER</th><th>CER</th><th>exact strings</th><th>real-time factor</th></tr><tr><td>${pct(r.wer)}</td><td>${pct(r.cer)}</td><td>${pct(r.exact)}</td><td>${r.realTimeFactor.toFixed(0)}x</td></tr></table>
${delay}
<h2>Partial transcripts over time</h2>
<p>Dashed: where each word ends in the audio. Dots: the partial transcript after each chunk where it changed (its text above), at the height of the words in place so far.</p>
${r.examples.map((t, i) => `<section>${transcriptTimeline(t, `stream-${i}`)}</section>`).join('\n')}`;
  return page(`${r.pipeline} evaluation`, body);
}
