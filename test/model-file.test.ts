/** A bad model file ends with a message that names the field and the shape it should have. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelFileError } from '../src/core/errors.js';
import { parseModel, type ModelFile } from '../src/core/model.js';
import { loadModelFile } from '../src/adapters/model-file.js';
import { randomModelFile } from '../src/core/random-model.js';

const good = (): ModelFile =>
  randomModelFile({ features: ['x', 'y'], layers: [{ cell: 'lstm', hiddenSize: 3 }, { cell: 'gru', hiddenSize: 2 }], head: { kind: 'softmax', labels: ['a', 'b'] }, seed: 1 });

function messageOf(doc: unknown): string {
  try {
    parseModel(doc, 'm.json');
  } catch (err) {
    expect(err).toBeInstanceOf(ModelFileError);
    return (err as Error).message;
  }
  throw new Error('expected the model to be rejected');
}

describe('model file validation', () => {
  it('accepts a consistent model and hashes its numbers', () => {
    const m = parseModel(good());
    expect(m.stateSize).toBe(3 + 3 + 2);
    expect(m.hash).toMatch(/^[0-9a-f]{64}$/);
    const renamed = { ...good(), name: 'other name' };
    expect(parseModel(renamed).hash).toBe(m.hash);
    const changed = good();
    changed.head.bias[0]! += 1e-3;
    expect(parseModel(changed).hash).not.toBe(m.hash);
  });

  it('names a gate matrix with the wrong shape and the shape it should have', () => {
    const doc = good();
    doc.layers[0]!.weightIh = doc.layers[0]!.weightIh.slice(0, 10);
    expect(messageOf(doc)).toContain('layers[0].weightIh: expected shape [12, 2] (4 gate blocks x hiddenSize 3 for a lstm cell, by inputSize), got [10, 2]');
  });

  it('names a ragged matrix, a bias of the wrong length and a broken layer chain', () => {
    const doc = good();
    doc.layers[1]!.weightHh[1] = [1];
    doc.layers[1]!.biasHh.pop();
    doc.layers[1]!.inputSize = 4;
    const msg = messageOf(doc);
    expect(msg).toContain('layers[1].inputSize: expected 3 (layers[0].hiddenSize), got 4');
    expect(msg).toContain('layers[1].weightHh: expected shape [6, 2]');
    expect(msg).toContain('ragged');
    expect(msg).toContain('layers[1].biasHh: expected length 6');
  });

  it('names missing fields, wrong types, unknown cells and non-positive std', () => {
    const doc = good() as unknown as Record<string, unknown>;
    delete doc.head;
    (doc.layers as Record<string, unknown>[])[0]!.cell = 'transformer';
    (doc.normalization as { std: number[] }).std[1] = 0;
    const msg = messageOf(doc);
    expect(msg).toMatch(/head: .*expected/i);
    expect(msg).toMatch(/layers\[0\]\.cell: .*"rnn"\|"lstm"\|"gru"/);
    expect(msg).toContain('normalization.std[1]: expected a std > 0');
  });

  it('checks the head against the last layer and its labels', () => {
    const doc = good();
    doc.head.weight = [[1, 2, 3], [4, 5, 6]];
    if (doc.head.kind === 'softmax') doc.head.labels = ['a', 'a'];
    const msg = messageOf(doc);
    expect(msg).toContain("head.weight: expected shape [2, 2] (one row per head labels entry, by the last layer's hiddenSize), got [2, 3]");
    expect(msg).toContain('head.labels: expected unique names');
  });

  it('reports a missing file and invalid JSON with the file name', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rnnstream-'));
    expect(() => loadModelFile(join(dir, 'nope.json'))).toThrow(/invalid model file .*nope\.json:\n  - cannot read the file/);
    writeFileSync(join(dir, 'bad.json'), '{"format": ');
    expect(() => loadModelFile(join(dir, 'bad.json'))).toThrow(/bad\.json:\n  - not valid JSON/);
  });
});
