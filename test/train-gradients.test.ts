/**
 * Finite-difference gradient checks of backpropagation through time, for each cell type, single
 * and stacked: the analytic gradient of a window's summed cross-entropy (from a fixed, non-zero
 * initial state) against central differences, on every parameter.
 */
import { describe, expect, it } from 'vitest';
import type { CellKind } from '../src/core/model.js';
import { createRng } from '../src/core/prng.js';
import { TrainableNetwork, type RecurrentState } from '../src/train/network.js';

const I = 3;
const K = 3;
const T = 6;

function setup(cells: CellKind[]) {
  const net = new TrainableNetwork(
    cells.map((cell, k) => ({ cell, inputSize: k === 0 ? I : 4, hiddenSize: 4 })),
    K,
  );
  const rng = createRng(cells.length * 7 + cells[0]!.length);
  for (let i = 0; i < net.theta.length; i++) net.theta[i] = rng.uniform(-0.8, 0.8);
  const input = Float64Array.from({ length: T * I }, () => rng.normal());
  const labels = Int32Array.from({ length: T }, (_, t) => (t === 2 ? -1 : rng.int(0, K - 1)));
  const initial = net.zeroState();
  initial.h.forEach((h) => h.forEach((_, j) => (h[j] = rng.uniform(-0.5, 0.5))));
  initial.c.forEach((c) => c.forEach((_, j) => (c[j] = rng.uniform(-0.5, 0.5))));
  return { net, input, labels, initial };
}

/** The worst relative error of `analytic` against central differences of `loss`, over every parameter. */
function worstRelativeError(net: TrainableNetwork, analytic: Float64Array, loss: () => number): number {
  const eps = 1e-5;
  let worst = 0;
  for (let i = 0; i < net.theta.length; i++) {
    const saved = net.theta[i]!;
    net.theta[i] = saved + eps;
    const up = loss();
    net.theta[i] = saved - eps;
    const down = loss();
    net.theta[i] = saved;
    const numeric = (up - down) / (2 * eps);
    worst = Math.max(worst, Math.abs(numeric - analytic[i]!) / Math.max(1e-3, Math.abs(numeric) + Math.abs(analytic[i]!)));
  }
  return worst;
}

const copy = (s: RecurrentState): RecurrentState => ({ h: s.h.map((v) => v.slice()), c: s.c.map((v) => v.slice()) });

describe.each<[string, CellKind[]]>([
  ['rnn', ['rnn']],
  ['lstm', ['lstm']],
  ['gru', ['gru']],
  ['lstm over gru', ['gru', 'lstm']],
])('BPTT gradient of %s', (_label, cells) => {
  it('matches central differences on every parameter (relative error < 1e-6)', () => {
    const { net, input, labels, initial } = setup(cells);
    const loss = (): number => net.window(input, labels, 0, T, copy(initial), { backward: false }).loss;
    net.grad.fill(0);
    net.window(input, labels, 0, T, copy(initial), { backward: true });
    const analytic = net.grad.slice();
    expect(worstRelativeError(net, analytic, loss)).toBeLessThan(1e-6);
    // The check would mean nothing on an all-zero gradient.
    expect(Math.max(...Array.from(analytic, Math.abs))).toBeGreaterThan(1e-3);
  });

  it('truncates at the window start: a later window does not touch the gradient of earlier steps', () => {
    const { net, input, labels, initial } = setup(cells);
    const state = copy(initial);
    net.window(input, labels, 0, 3, state, { backward: false });
    const carried = copy(state);
    net.grad.fill(0);
    net.window(input, labels, 3, T, state, { backward: true });
    const windowed = net.grad.slice();
    // The same window from the same carried state, computed on its own, gives the same gradient.
    const shifted = { input: input.slice(3 * I), labels: labels.slice(3) };
    net.grad.fill(0);
    net.window(shifted.input, shifted.labels, 0, T - 3, copy(carried), { backward: true });
    for (let i = 0; i < windowed.length; i++) expect(windowed[i]).toBeCloseTo(net.grad[i]!, 12);
  });
});

describe('BPTT gradient with word input (embedding rows averaged), dropout and label smoothing', () => {
  it.each<CellKind>(['gru', 'lstm'])('%s: matches central differences on every parameter, the embedding table included', (cell) => {
    const dim = 3;
    const net = new TrainableNetwork([{ cell, inputSize: dim, hiddenSize: 4 }], K, { rows: 7, dim });
    const rng = createRng(99);
    for (let i = 0; i < net.theta.length; i++) net.theta[i] = rng.uniform(-0.8, 0.8);
    // Five words: one row, three rows (a word and two n-grams), a repeated row, ...
    const words = { starts: Int32Array.from([0, 1, 4, 6, 7, 9]), rows: Int32Array.from([0, 1, 2, 3, 4, 4, 6, 2, 5]) };
    const labels = Int32Array.from([1, 0, -1, 2, 1]);
    // The same dropout masks for every evaluation: a generator restarted each time.
    const options = (backward: boolean) => {
      const masks = createRng(5);
      return { backward, dropout: { p: 0.3, random: () => masks.next() }, labelSmoothing: 0.1 };
    };
    const loss = (): number => net.window(words, labels, 0, 5, net.zeroState(), options(false)).loss;
    net.grad.fill(0);
    net.window(words, labels, 0, 5, net.zeroState(), options(true));
    const analytic = net.grad.slice();
    expect(worstRelativeError(net, analytic, loss)).toBeLessThan(1e-6);
    const table = analytic.subarray(net.embedding!.offset);
    // The words use every row of the table (0..6), so every row has a gradient of its own.
    expect(Array.from({ length: 7 }, (_, r) => table.subarray(r * dim, (r + 1) * dim).some((g) => Math.abs(g) > 1e-6)).filter(Boolean).length).toBe(7);
  });
});
