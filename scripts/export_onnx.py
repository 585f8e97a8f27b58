#!/usr/bin/python3
"""
ONNX files exported by PyTorch (torch.onnx.export), for `rnnstream import` and its tests.

Run with Debian's python3-torch and python3-onnx (/usr/bin/python3, not a pyenv python):

    /usr/bin/python3 scripts/export_onnx.py [--out test/onnx]

Writes, into --out:
- importable models: each cell (rnn, lstm, gru), one and several layers, with and without a
  Linear head, with and without Softmax, batch-first and time-first, a head on the final
  hidden state (h_n), several sizes;
- ball-trained.onnx: a 1-layer LSTM(32) with a Linear+Softmax head, trained for a few seconds
  on fixtures/ball-train.jsonl.gz (direction from x, y), as a user's own model would be;
- refused/*.onnx: what the importer must refuse, each with a reason it must name: a
  bidirectional LSTM, a ReLU RNN, an op between two layers, and (built with onnx.helper, as
  PyTorch does not export them) an LSTM with peepholes, one with clip, a GRU with
  linear_before_reset=0, and an initial state that is not zeros.

The output is stable: seeded weights and inputs, and the files are rewritten only when their
bytes change. CI needs none of this: the .onnx files are committed (each under 60 KB).
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper, TensorProto

torch.set_num_threads(1)


class Stack(torch.nn.Module):
    """A recurrent stack, an optional Linear head on every step (or on h_n), an optional softmax."""

    def __init__(self, cell, inputs, hidden, layers, outputs=None, softmax=False, batch_first=False, head_on_final=False, nonlinearity='tanh', bidirectional=False):
        super().__init__()
        kwargs = dict(input_size=inputs, hidden_size=hidden, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional)
        if cell == 'rnn':
            self.rnn = torch.nn.RNN(nonlinearity=nonlinearity, **kwargs)
        elif cell == 'lstm':
            self.rnn = torch.nn.LSTM(**kwargs)
        else:
            self.rnn = torch.nn.GRU(**kwargs)
        width = hidden * (2 if bidirectional else 1)
        self.head = torch.nn.Linear(width, outputs) if outputs else None
        self.softmax = softmax
        self.head_on_final = head_on_final

    def forward(self, x):
        y, state = self.rnn(x)
        if self.head_on_final:
            h = state[0] if isinstance(state, tuple) else state
            y = h[-1]
        if self.head is not None:
            y = self.head(y)
        if self.softmax:
            y = torch.softmax(y, dim=-1)
        return y


class ReluBetween(torch.nn.Module):
    """Two LSTMs with a ReLU between them: an op between layers, which rnnstream cannot stream."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.LSTM(2, 4)
        self.b = torch.nn.LSTM(4, 4)

    def forward(self, x):
        y, _ = self.a(x)
        y, _ = self.b(torch.relu(y))
        return y


def export(model, path, inputs, batch_first):
    model.eval()
    x = torch.randn((2, 7, inputs) if batch_first else (7, 2, inputs))
    axes = {0: 'batch', 1: 'time'} if batch_first else {0: 'time', 1: 'batch'}
    tmp = path + '.tmp'
    torch.onnx.export(model, (x,), tmp, input_names=['x'], output_names=['y'], dynamic_axes={'x': axes, 'y': {}}, opset_version=14, do_constant_folding=True)
    write_if_changed(path, open(tmp, 'rb').read())
    os.remove(tmp)


def write_if_changed(path, data):
    if os.path.exists(path) and open(path, 'rb').read() == data:
        return
    with open(path, 'wb') as f:
        f.write(data)


def importable(out):
    cases = [
        # name, cell, inputs, hidden, layers, outputs, softmax, batch_first, head_on_final
        ('rnn-1x8-softmax3', 'rnn', 2, 8, 1, 3, True, False, False),
        ('rnn-2x6-nohead', 'rnn', 3, 6, 2, None, False, False, False),
        ('lstm-1x16-linear2', 'lstm', 2, 16, 1, 2, False, False, False),
        ('lstm-2x12-softmax5-batchfirst', 'lstm', 4, 12, 2, 5, True, True, False),
        ('lstm-1x10-final-softmax3', 'lstm', 2, 10, 1, 3, True, True, True),
        ('gru-1x8-nohead-batchfirst', 'gru', 2, 8, 1, None, False, True, False),
        ('gru-3x16-softmax4', 'gru', 3, 16, 3, 4, True, False, False),
        ('gru-2x32-linear1-batchfirst', 'gru', 5, 32, 2, 1, False, True, False),
    ]
    for k, (name, cell, inputs, hidden, layers, outputs, softmax, batch_first, final) in enumerate(cases):
        torch.manual_seed(100 + k)
        export(Stack(cell, inputs, hidden, layers, outputs, softmax, batch_first, final), os.path.join(out, name + '.onnx'), inputs, batch_first)


def ball_trained(out, root):
    """An LSTM(2->32) + Linear(8) + Softmax, trained for a few epochs on the ball training fixture."""
    compass = ['E', 'NE', 'N', 'NW', 'W', 'SW', 'S', 'SE']
    seqs = {}
    with gzip.open(os.path.join(root, 'fixtures', 'ball-train.jsonl.gz'), 'rt') as f:
        for line in f:
            e = json.loads(line)
            if 'direction' not in e:
                continue
            seqs.setdefault(e['ballId'], []).append(([e['x'], e['y']], compass.index(e['direction'])))
    data = [s for s in seqs.values() if len(s) >= 16][:1200]
    torch.manual_seed(7)
    model = Stack('lstm', 2, 32, 1, 8, softmax=False, batch_first=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(25):
        for i in range(0, len(data), 32):
            batch = data[i:i + 32]
            n = min(len(s) for s in batch)
            x = torch.tensor([[p for p, _ in s[:n]] for s in batch], dtype=torch.float32)
            y = torch.tensor([[c for _, c in s[:n]] for s in batch])
            opt.zero_grad()
            loss = loss_fn(model(x).reshape(-1, 8), y.reshape(-1))
            loss.backward()
            opt.step()
    model.softmax = True
    export(model, os.path.join(out, 'ball-trained.onnx'), 2, True)
    print(f'ball-trained: final loss {loss.item():.3f}', file=sys.stderr)


def helper_lstm(path, hidden=4, inputs=2, attributes=None, extra_inputs=(), initial_h=None):
    """A one-LSTM graph written with onnx.helper: what PyTorch never exports (peepholes, clip, ...)."""
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, inputs)).astype(np.float32), 'W')
    r = numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, hidden)).astype(np.float32), 'R')
    b = numpy_helper.from_array(rng.normal(size=(1, 8 * hidden)).astype(np.float32), 'B')
    inits = [w, r, b]
    lstm_inputs = ['x', 'W', 'R', 'B', '', '', '', '']
    if initial_h is not None:
        inits.append(numpy_helper.from_array(initial_h, 'h0'))
        lstm_inputs[5] = 'h0'
    for name, array in extra_inputs:
        inits.append(numpy_helper.from_array(array, name))
        lstm_inputs[7] = name
    while lstm_inputs and lstm_inputs[-1] == '':
        lstm_inputs.pop()
    node = helper.make_node('LSTM', lstm_inputs, ['Y'], name='the_lstm', hidden_size=hidden, **(attributes or {}))
    squeeze = helper.make_node('Squeeze', ['Y', 'axes'], ['y'], name='squeeze')
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), 'axes'))
    graph = helper.make_graph([node, squeeze], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['time', 'batch', inputs])], [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], inits)
    write_if_changed(path, helper.make_model(graph, opset_imports=[helper.make_opsetid('', 14)], producer_name='rnnstream export_onnx.py').SerializeToString())


def helper_gru_reset_before(path, hidden=4, inputs=2):
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in (('W', (1, 3 * hidden, inputs)), ('R', (1, 3 * hidden, hidden)), ('B', (1, 6 * hidden)))]
    node = helper.make_node('GRU', ['x', 'W', 'R', 'B'], ['Y'], name='keras_gru', hidden_size=hidden, linear_before_reset=0)
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), 'axes'))
    squeeze = helper.make_node('Squeeze', ['Y', 'axes'], ['y'], name='squeeze')
    graph = helper.make_graph([node, squeeze], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['time', 'batch', inputs])], [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], inits)
    write_if_changed(path, helper.make_model(graph, opset_imports=[helper.make_opsetid('', 14)], producer_name='rnnstream export_onnx.py').SerializeToString())


def refused(out):
    d = os.path.join(out, 'refused')
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(11)
    export(Stack('lstm', 2, 4, 1, bidirectional=True), os.path.join(d, 'bidirectional.onnx'), 2, False)
    torch.manual_seed(12)
    export(Stack('rnn', 2, 4, 1, nonlinearity='relu'), os.path.join(d, 'relu-rnn.onnx'), 2, False)
    torch.manual_seed(13)
    export(ReluBetween(), os.path.join(d, 'op-between-layers.onnx'), 2, False)
    helper_lstm(os.path.join(d, 'peepholes.onnx'), extra_inputs=[('P', np.ones((1, 12), dtype=np.float32))])
    helper_lstm(os.path.join(d, 'clip.onnx'), attributes={'clip': 3.0})
    helper_lstm(os.path.join(d, 'initial-state.onnx'), initial_h=np.full((1, 1, 4), 0.5, dtype=np.float32))
    helper_gru_reset_before(os.path.join(d, 'gru-reset-before.onnx'))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), '..', 'test', 'onnx'))
    args = parser.parse_args()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    os.makedirs(args.out, exist_ok=True)
    importable(args.out)
    ball_trained(args.out, root)
    refused(args.out)
    print(f'torch {torch.__version__}, onnx {onnx.__version__}: wrote {args.out}', file=sys.stderr)


if __name__ == '__main__':
    main()
