/**
 * rnnstream train and eval end to end on small fixtures, and the HTML report opened in headless
 * Chromium (Debian's chromium): the page must render its three plots.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModelFile } from '../src/adapters/model-file.js';
import { headlessChromium, renderedDom } from './support/chromium.js';
import { cli } from './support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'rnnstream-train-'));
const f = (name: string): string => join(dir, name);

beforeAll(() => {
  for (const [kind, name, keys, seed] of [
    ['ball', 'ball-train.jsonl', '60', '11'],
    ['ball', 'ball-val.jsonl', '20', '12'],
    ['ball', 'ball-test.jsonl', '20', '13'],
    ['stock', 'stock-train.jsonl', '6', '21'],
    ['stock', 'stock-val.jsonl', '3', '22'],
  ] as const) {
    const r = cli(['fixtures', kind, '--keys', keys, '--seed', seed, '--out', f(name), ...(kind === 'stock' ? ['--ticks', '120'] : [])]);
    expect(r.code, r.stderr).toBe(0);
  }
});

describe('rnnstream train', () => {
  it('trains with a loss per epoch, reproducibly from a seed, and writes a loadable model', () => {
    const args = ['train', '--pipeline', 'ball-direction', '--train', f('ball-train.jsonl'), '--validation', f('ball-val.jsonl'), '--epochs', '3', '--hidden', '8', '--seed', '5', '--json'];
    const a = cli([...args, '--out', f('a.json')]);
    expect(a.code, a.stderr).toBe(0);
    const result = JSON.parse(a.stdout);
    expect(result.history).toHaveLength(3);
    for (const e of result.history) expect(Number.isFinite(e.trainLoss) && Number.isFinite(e.valLoss)).toBe(true);
    // Learning happens: the training loss falls from the first epoch to the last.
    expect(result.history[2].trainLoss).toBeLessThan(result.history[0].trainLoss);
    const model = loadModelFile(f('a.json'));
    expect(model.layers[0]!.hiddenSize).toBe(8);
    expect((model.file.training as { kind: string }).kind).toBe('bptt');
    const b = cli([...args, '--out', f('b.json')]);
    expect(b.code, b.stderr).toBe(0);
    expect(loadModelFile(f('b.json')).hash).toBe(model.hash);
  });

  it('trains a GRU on stock ticks and rejects bad options with a clear message', () => {
    const ok = cli(['train', '--pipeline', 'stock-moves', '--train', f('stock-train.jsonl'), '--validation', f('stock-val.jsonl'), '--epochs', '1', '--hidden', '6', '--out', f('s.json'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(loadModelFile(f('s.json')).layers[0]!.cell).toBe('gru');
    const bad = cli(['train', '--pipeline', 'stock-moves', '--learning-rate', '-1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--learning-rate must be a positive number, got "-1"');
  });
});

describe('rnnstream train on words', () => {
  it('trains a word model (embedding, dropout, label smoothing), writes its table beside it, chooses the oos threshold on validation, and eval reports early intent', () => {
    const utterances = (n: number, seed: number): string =>
      Array.from({ length: n }, (_, i) => {
        const [intent, text] = [['balance', 'what is my balance'], ['book_flight', 'book a flight to paris'], ['oos', 'tell me a joke'], ['alarm', 'set an alarm for six']][(i + seed) % 4]!;
        return JSON.stringify({ text: `${text}${i % 3 === 0 ? ' please' : ''}`, intent });
      }).join('\n') + '\n';
    for (const [name, n, seed] of [['u-train', 80, 0], ['u-val', 20, 1]] as const) {
      writeFileSync(f(`${name}.jsonl`), utterances(n, seed));
      const r = cli(['fixtures', 'words', '--input', f(`${name}.jsonl`), '--out', f(`${name}.words.jsonl`)]);
      expect(r.code, r.stderr).toBe(0);
    }
    const args = ['train', '--pipeline', 'intent-from-words', '--train', f('u-train.words.jsonl'), '--validation', f('u-val.words.jsonl'), '--epochs', '4', '--hidden', '12', '--embedding-dim', '8', '--buckets', '100', '--dropout', '0.1', '--learning-rate', '0.02', '--out', f('words.json'), '--json'];
    const r = cli(args);
    expect(r.code, r.stderr).toBe(0);
    const history = JSON.parse(r.stdout).history as { trainLoss: number }[];
    expect(history.at(-1)!.trainLoss).toBeLessThan(history[0]!.trainLoss);
    const model = loadModelFile(f('words.json'));
    expect(model.input!.dim).toBe(8);
    expect(existsSync(f('words.words.f32'))).toBe(true);
    const training = model.file.training as { dropout: number; labelSmoothing: number; outOfScope: { label: string; threshold: number } };
    expect(training.dropout).toBe(0.1);
    expect(training.labelSmoothing).toBe(0.1); // the pipeline's default
    expect(training.outOfScope.label).toBe('oos');
    expect(training.outOfScope.threshold).toBeGreaterThanOrEqual(0);

    const report = f('words-report.html');
    const e = cli(['eval', '--pipeline', 'intent-from-words', '--input', f('u-val.words.jsonl'), '--model', f('words.json'), '--backend', 'onnx', '--report', report, '--json']);
    expect(e.code, e.stderr).toBe(0);
    const evaluated = JSON.parse(e.stdout) as { utterances: { keys: number; earlyIntent: { fraction: number }[]; threshold: { value: number } } };
    expect(evaluated.utterances.keys).toBe(20);
    expect(evaluated.utterances.earlyIntent.map((x) => x.fraction)).toEqual([0.25, 0.5, 0.75, 1]);
    expect(evaluated.utterances.threshold.value).toBe(training.outOfScope.threshold);
    const dom = renderedDom(report);
    if (dom) for (const plot of ['accuracy-by-step', 'early-intent', 'confusion']) expect(dom).toContain(`data-plot="${plot}"`);
  });
});

describe('rnnstream eval', () => {
  it('reports accuracy, by step, confusion and the baselines as one JSON object', () => {
    const r = cli(['eval', '--pipeline', 'ball-direction', '--input', f('ball-test.jsonl'), '--backend', 'onnx', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const e = JSON.parse(r.stdout);
    expect(e).toMatchObject({ pipeline: 'ball-direction', keys: 20 });
    expect(e.events).toBeGreaterThan(0);
    expect(Array.isArray(e.accuracyByStep)).toBe(true);
    expect(e.confusion.labels).toEqual(['E', 'NE', 'N', 'NW', 'W', 'SW', 'S', 'SE']);
    const total = e.confusion.matrix.flat().reduce((a: number, b: number) => a + b, 0);
    expect(total).toBe(e.labelled);
    expect(Object.keys(e.baselines)).toEqual(['majority class', 'last displacement', 'mean of last three displacements']);
    // On noisy but smooth trajectories the last displacement is far better than chance.
    expect(e.baselines['last displacement']).toBeGreaterThan(0.5);
    expect(e.prequential.scored).toBe(e.events - e.keys);
  });

  it('writes an HTML report that headless Chromium renders with its three plots', () => {
    const report = f('report.html');
    const r = cli(['eval', '--pipeline', 'ball-direction', '--input', f('ball-test.jsonl'), '--backend', 'onnx', '--report', report]);
    expect(r.code, r.stderr).toBe(0);
    const html = readFileSync(report, 'utf8');
    expect(html.match(/data-plot="/g)).toHaveLength(3);
    const dom = renderedDom(report);
    if (dom === undefined) return;
    for (const plot of ['accuracy-by-step', 'confusion', 'trajectories']) expect(dom).toContain(`data-plot="${plot}"`);
    const chromium = headlessChromium()!;
    const png = f('report.png');
    const shot = spawnSync(chromium.path, [...chromium.flags, `--screenshot=${png}`, '--window-size=1280,2200', `file://${report}`], { encoding: 'utf8', timeout: 60_000 });
    expect(shot.status, shot.stderr).toBe(0);
    expect(statSync(png).size).toBeGreaterThan(20_000);
  });
});
