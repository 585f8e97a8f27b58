/**
 * `rnnstream import` on real PyTorch exports (test/onnx/, made by scripts/export_onnx.py with
 * torch.onnx.export): every importable file reproduces onnxruntime on the original within 1e-5
 * through rnnstream's streaming path; every refused one names the node and the reason; and
 * truncated or corrupted files end in an ImportError, never a crash or a hang.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRng } from '../src/core/prng.js';
import { ImportError, importOnnx } from '../src/import/onnx-import.js';
import { IMPORT_TOLERANCE, verifyImport } from '../src/import/verify-import.js';
import { projectPath } from '../src/paths.js';
import { cli } from './support/cli.js';

const dir = projectPath('test', 'onnx');
const importable = readdirSync(dir).filter((f) => f.endsWith('.onnx')).sort();
const bytes = (f: string): Uint8Array => readFileSync(join(dir, f));

describe('rnnstream import: PyTorch exports, checked against onnxruntime on the original file', () => {
  it('has the exports to check', () => {
    expect(importable.length).toBeGreaterThanOrEqual(9);
  });

  it.each(importable)('%s: imported, and within 1e-5 of onnxruntime over 5 interleaved keys x 50 steps', async (f) => {
    const imported = importOnnx(bytes(f), { name: f, source: f });
    const cells = f.split('-')[0] === 'ball' ? 'lstm' : f.split('-')[0]!;
    expect(imported.model.layers.every((l) => l.cell === cells)).toBe(true);
    const layers = /-(\d)x/.exec(f);
    if (layers) expect(imported.model.layers).toHaveLength(Number(layers[1]));
    expect(imported.model.head.kind).toBe(/softmax|ball/.test(f) ? 'softmax' : 'linear');
    const report = await verifyImport(bytes(f), imported, { backend: 'onnx' });
    process.stderr.write(`import ${f}: ${imported.model.layers.map((l) => `${l.cell}(${l.inputSize}->${l.hiddenSize})`).join(' > ')} > ${imported.model.head.kind}[${report.outputs}], worst ${report.worst.toExponential(2)}\n`);
    expect(report.worst).toBeLessThanOrEqual(IMPORT_TOLERANCE);
  });

  it('the float64 reference backend agrees too (the import, not one backend, is what is checked)', async () => {
    const f = 'gru-3x16-softmax4.onnx';
    const report = await verifyImport(bytes(f), importOnnx(bytes(f), { name: f }), { backend: 'reference', keys: 3 });
    expect(report.worst).toBeLessThanOrEqual(IMPORT_TOLERANCE);
  });
});

describe('rnnstream import: what it refuses, naming the node and why', () => {
  const cases: [string, RegExp][] = [
    ['bidirectional.onnx', /node "[^"]+" \(LSTM\): direction "bidirectional"/],
    ['relu-rnn.onnx', /node "[^"]+" \(RNN\): activations Relu; rnnstream's rnn cell uses Tanh/],
    ['op-between-layers.onnx', /node "[^"]+" \(Relu\): cannot be imported/],
    ['peepholes.onnx', /node "the_lstm" \(LSTM\): peephole weights/],
    ['clip.onnx', /node "the_lstm" \(LSTM\): clip 3/],
    ['initial-state.onnx', /node "the_lstm" \(LSTM\): initial_h is not zeros/],
    ['gru-reset-before.onnx', /node "keras_gru" \(GRU\): linear_before_reset=0/],
  ];
  it.each(cases)('%s', (f, message) => {
    const file = readFileSync(join(dir, 'refused', f));
    expect(() => importOnnx(file, { name: f })).toThrow(ImportError);
    expect(() => importOnnx(file, { name: f })).toThrow(message);
  });

  it('refuses feature names or labels that do not fit the model', () => {
    const f = bytes('rnn-1x8-softmax3.onnx');
    expect(() => importOnnx(f, { name: 'm', features: ['x', 'y', 'z'] })).toThrow(/reads 2 features per event, but 3 are named/);
    expect(() => importOnnx(f, { name: 'm', labels: ['a', 'b'] })).toThrow(/has 3 outputs, but 2 labels were given/);
  });
});

describe('rnnstream import: fuzzed files', () => {
  it('truncated and corrupted files end in a clear ImportError or a valid model, never a crash', () => {
    const rng = createRng(20261202);
    const sources = importable.map(bytes);
    let tried = 0;
    let refused = 0;
    const crashes: string[] = [];
    for (let i = 0; i < 600; i++) {
      const original = sources[i % sources.length]!;
      const file = Uint8Array.from(original);
      let cut = file;
      if (i % 3 === 0) cut = file.subarray(0, rng.int(0, file.length - 1));
      else for (let k = rng.int(1, 8); k > 0; k--) file[rng.int(0, file.length - 1)] = rng.int(0, 255);
      tried++;
      try {
        importOnnx(cut, { name: 'fuzz' });
      } catch (err) {
        if (err instanceof ImportError) refused++;
        else crashes.push(`${(err as Error).name}: ${(err as Error).message}`);
      }
    }
    process.stderr.write(`import fuzz: ${tried} files, ${refused} refused with an ImportError, ${tried - refused - crashes.length} imported, ${crashes.length} crashes\n`);
    expect(crashes).toEqual([]);
    expect(refused).toBeGreaterThan(tried / 2);
  });
});

describe('rnnstream import (the command)', () => {
  it('writes a model that replay runs, with --verify; a refused file exits 2 with the reason', () => {
    const out = join(projectPath('dist'), 'imported-ball.json');
    const ok = cli(['import', join(dir, 'ball-trained.onnx'), '--pipeline', 'ball-direction', '--out', out, '--verify']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/verify: 5 keys x 50 steps, interleaved, on \w+, against onnxruntime on ball-trained\.onnx: worst difference \S+ \(tolerance 0\.00001\)/);
    expect(ok.stderr).toMatch(/wrote .*imported-ball\.json: lstm\(2->32\) > softmax\[8\], hash [0-9a-f]{12}/);
    const replay = cli(['replay', '--pipeline', 'ball-direction', '--model', out, '--backend', 'onnx', '--json']);
    expect(replay.code, replay.stderr).toBe(0);
    expect((JSON.parse(replay.stdout) as { accuracy: { accuracy: number } }).accuracy.accuracy).toBeGreaterThan(0.5);
    const refused = cli(['import', join(dir, 'refused', 'bidirectional.onnx'), '--out', out]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^rnnstream: node "[^"]+" \(LSTM\): direction "bidirectional"/);
    const garbage = cli(['import', projectPath('package.json'), '--out', out]);
    expect(garbage.code).toBe(2);
    expect(garbage.stderr).toMatch(/^rnnstream: not an ONNX model/);
  });
});
