#!/usr/bin/python3
"""Export PyTorch recurrent models to rnnstream's model file, and make the PyTorch test vectors.

Run with Debian's python3 and python3-torch (PyTorch 1.13):

    /usr/bin/python3 scripts/export_pytorch.py --vectors test/vectors/pytorch.json

The mapping (see the README, "Model file"): rnnstream's layers use PyTorch's own gate order and
weight layout, so each layer k of an nn.RNN / nn.LSTM / nn.GRU maps by name:

    weight_ih_l{k} -> layers[k].weightIh    weight_hh_l{k} -> layers[k].weightHh
    bias_ih_l{k}   -> layers[k].biasIh      bias_hh_l{k}   -> layers[k].biasHh

and a final nn.Linear maps to head.weight / head.bias. Only unidirectional, batch-agnostic,
tanh-nonlinearity modules with biases are supported (what rnnstream runs).

CI does not need PyTorch: the vectors this writes are committed.
"""
import argparse
import json

import torch
from torch import nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def export_model(rnn, head, *, name, features, labels=None, outputs=None, mean=None, std=None, training=None):
    """An rnnstream model file (a dict) from an nn.RNN/nn.LSTM/nn.GRU and an nn.Linear head."""
    if isinstance(rnn, nn.LSTM):
        cell = "lstm"
    elif isinstance(rnn, nn.GRU):
        cell = "gru"
    elif isinstance(rnn, nn.RNN):
        cell = "rnn"
        if rnn.nonlinearity != "tanh":
            raise ValueError("rnnstream's rnn cell is tanh; got nonlinearity=%s" % rnn.nonlinearity)
    else:
        raise TypeError("expected nn.RNN, nn.LSTM or nn.GRU, got %s" % type(rnn).__name__)
    if rnn.bidirectional or not rnn.bias or getattr(rnn, "proj_size", 0):
        raise ValueError("only unidirectional layers with biases and no projection are supported")
    sd = {k: v.detach().double().tolist() for k, v in rnn.state_dict().items()}
    layers = []
    for k in range(rnn.num_layers):
        layers.append({
            "cell": cell,
            "inputSize": rnn.input_size if k == 0 else rnn.hidden_size,
            "hiddenSize": rnn.hidden_size,
            "weightIh": sd["weight_ih_l%d" % k],
            "weightHh": sd["weight_hh_l%d" % k],
            "biasIh": sd["bias_ih_l%d" % k],
            "biasHh": sd["bias_hh_l%d" % k],
        })
    weight = head.weight.detach().double().tolist()
    bias = head.bias.detach().double().tolist()
    if labels is not None:
        head_doc = {"kind": "softmax", "labels": labels, "weight": weight, "bias": bias}
    else:
        head_doc = {"kind": "linear", "outputs": outputs, "weight": weight, "bias": bias}
    doc = {
        "format": "rnnstream-model",
        "version": 1,
        "name": name,
        "features": features,
        "normalization": {"mean": mean or [0.0] * len(features), "std": std or [1.0] * len(features)},
        "layers": layers,
        "head": head_doc,
    }
    if training is not None:
        doc["training"] = training
    return doc


def make_vectors(seed=1234, steps=20, batch=3, input_size=3, hidden=5, classes=4):
    torch.manual_seed(seed)
    cases = []
    for cell, cls in CELLS.items():
        for num_layers in (1, 2):
            rnn = cls(input_size, hidden, num_layers=num_layers).double()
            head = nn.Linear(hidden, classes).double()
            # Larger than default weights so gates saturate and differences would show.
            with torch.no_grad():
                for p in list(rnn.parameters()) + list(head.parameters()):
                    p.mul_(2.0)
            x = torch.randn(steps, batch, input_size, dtype=torch.float64)
            with torch.no_grad():
                y, _ = rnn(x)  # [steps, batch, hidden] of the last layer
                probs = torch.softmax(head(y), dim=-1)
                # The same module in float32, for the float32 backends.
                rnn32, head32 = rnn.float(), head.float()
                y32, _ = rnn32(x.float())
                probs32 = torch.softmax(head32(y32), dim=-1)
                rnn.double(), head.double()
            model = export_model(
                rnn, head, name="torch-%s-x%d" % (cell, num_layers),
                features=["f%d" % i for i in range(input_size)], labels=["c%d" % i for i in range(classes)],
                training={"kind": "pytorch", "torch": torch.__version__, "seed": seed},
            )
            cases.append({
                "label": "%s x%d" % (cell, num_layers),
                "model": model,
                "inputs": x.tolist(),
                "lastHidden": y.tolist(),
                "probabilities": probs.tolist(),
                "probabilitiesFloat32": probs32.double().tolist(),
            })
    return {"torch": torch.__version__, "steps": steps, "batch": batch, "cases": cases}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", required=True, help="where to write the test vectors (JSON)")
    args = parser.parse_args()
    with open(args.vectors, "w") as f:
        json.dump(make_vectors(), f)
    print("wrote", args.vectors)


if __name__ == "__main__":
    main()
