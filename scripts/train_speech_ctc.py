#!/usr/bin/python3
"""
Trains the speech-digits model: unidirectional LSTM layers over the pipeline's log-mel rows,
then a Linear head and Softmax over the CTC blank plus characters, with a CTC loss. Exports it
to ONNX for `rnnstream import`, and the normalisation beside it.

Run with Debian's python3-torch (/usr/bin/python3). The rows come from the pipeline's own front
end (`rnnstream frames`), so the model trains on exactly what it reads when it serves:

    node dist/src/cli/main.js frames --pipeline speech-digits --input train.jsonl --out train
    node dist/src/cli/main.js frames --pipeline speech-digits --input val.jsonl --out val
    /usr/bin/python3 scripts/train_speech_ctc.py --train train --validation val --out speech

writes speech.onnx, speech.normalization.json ({"mean","std"}) and speech.training.json (the
epochs' losses, validation WER/CER/exact and the time taken). scripts/train-speech.sh runs it
all. Everything is chosen on the validation set; the model with the lowest validation WER is
kept. Augmentation, on the rows (the audio was already varied in speed, pitch, gain and
noise when it was synthesised):
- vocal tract length: the mel axis stretched or squeezed by up to 12 % (other voices' formants),
- gain: a constant added to every log-mel value (a louder or quieter channel),
- SpecAugment: up to two bands of up to 6 mel channels masked, and up to two spans of up to
  4 rows.
"""
import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch

LABELS = ['_', ' ', 'e', 'f', 'g', 'h', 'i', 'n', 'o', 'r', 's', 't', 'u', 'v', 'w', 'x', 'z']
MEL = 40
STACK = 3


def load(prefix):
    rows = np.fromfile(prefix + '.f32', dtype='<f4')
    index = [json.loads(line) for line in open(prefix + '.index.jsonl')]
    width = MEL * STACK
    rows = rows.reshape(-1, width)
    utterances = []
    for u in index:
        if u['text'] is None or u['rows'] == 0:
            continue
        x = rows[u['offset']:u['offset'] + u['rows']]
        y = [LABELS.index(c) for c in u['text']]
        utterances.append((x, y, u['text']))
    return utterances


class Model(torch.nn.Module):
    def __init__(self, inputs, hidden, layers, classes):
        super().__init__()
        self.rnn = torch.nn.LSTM(input_size=inputs, hidden_size=hidden, num_layers=layers)
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


class Exported(torch.nn.Module):
    """What rnnstream imports: the LSTM stack, the head on every step, and Softmax."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=-1)


def augment(x, rng):
    """x: [T, STACK*MEL] normalised rows (numpy); a copy, augmented."""
    t = x.shape[0]
    frames = x.reshape(t, STACK, MEL).copy()
    # Vocal tract length: resample the mel axis by a factor around 1.
    alpha = rng.uniform(0.88, 1.12)
    src = np.clip(np.arange(MEL) * alpha, 0, MEL - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, MEL - 1)
    w = src - lo
    frames = frames[:, :, lo] * (1 - w) + frames[:, :, hi] * w
    frames += rng.normal(0, 0.3)
    for _ in range(rng.integers(0, 3)):
        width = rng.integers(1, 7)
        start = rng.integers(0, MEL - width)
        frames[:, :, start:start + width] = 0
    for _ in range(rng.integers(0, 3)):
        width = rng.integers(1, 5)
        if t > width + 1:
            start = rng.integers(0, t - width)
            frames[start:start + width] = 0
    return frames.reshape(t, STACK * MEL).astype(np.float32)


def greedy(probs):
    """probs: [T, C] -> text (repeats collapsed, blanks dropped, spaces trimmed), as core/ctc.ts."""
    best = probs.argmax(-1)
    out = []
    previous = 0
    for b in best:
        if b != 0 and b != previous:
            out.append(LABELS[b])
        previous = b
    return ' '.join(''.join(out).split())


DIGIT_WORDS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']


def lexicon_beam(probs, beam=8):
    """
    CTC prefix beam search constrained to the digit lexicon: a hypothesis may only spell digit
    words, a space only after a whole word, and it must end on one. probs: [T, C] -> text.
    """
    def allowed(prefix, c):
        words = ''.join(LABELS[i] for i in prefix).split(' ')
        current = words[-1]
        if LABELS[c] == ' ':
            return current in DIGIT_WORDS
        return any(w.startswith(current + LABELS[c]) for w in DIGIT_WORDS)

    beams = {(): (1.0, 0.0)}  # prefix -> (p ending in blank, p ending in a symbol)
    for t in range(probs.shape[0]):
        p = probs[t]
        nxt = {}

        def add(prefix, pb, pnb):
            ob, onb = nxt.get(prefix, (0.0, 0.0))
            nxt[prefix] = (ob + pb, onb + pnb)

        for prefix, (pb, pnb) in beams.items():
            add(prefix, (pb + pnb) * p[0], 0.0)
            last = prefix[-1] if prefix else None
            for c in range(1, len(LABELS)):
                if p[c] < 1e-4:
                    continue
                if c == last:
                    add(prefix, 0.0, pnb * p[c])
                    if allowed(prefix, c):
                        add(prefix + (c,), 0.0, pb * p[c])
                elif allowed(prefix, c):
                    add(prefix + (c,), 0.0, (pb + pnb) * p[c])
        top = sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam]
        total = sum(a + b for _, (a, b) in top) or 1.0
        beams = {k: (a / total, b / total) for k, (a, b) in top}
    complete = [(k, a + b) for k, (a, b) in beams.items() if ''.join(LABELS[i] for i in k).split(' ')[-1] in DIGIT_WORDS]
    best = max(complete or [(k, a + b) for k, (a, b) in beams.items()], key=lambda kv: kv[1])[0]
    return ' '.join(''.join(LABELS[i] for i in best).split())


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev = cur
    return d[len(b)]


def evaluate(model, data, mean, std, batch=64, decode=None):
    decode = decode or greedy
    model.eval()
    words = chars = word_errors = char_errors = exact = 0
    with torch.no_grad():
        for i in range(0, len(data), batch):
            chunk = data[i:i + batch]
            xs = [torch.from_numpy((x - mean) / std) for x, _, _ in chunk]
            padded = torch.nn.utils.rnn.pad_sequence(xs)
            probs = torch.softmax(model(padded), dim=-1).numpy()
            for k, (x, _, text) in enumerate(chunk):
                hyp = decode(probs[:x.shape[0], k])
                word_errors += edit_distance(hyp.split(), text.split())
                char_errors += edit_distance(hyp, text)
                words += len(text.split())
                chars += len(text)
                exact += hyp == text
    model.train()
    return {'wer': word_errors / words, 'cer': char_errors / chars, 'exact': exact / len(data)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--train', required=True)
    parser.add_argument('--validation', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--hidden', type=int, default=128)
    parser.add_argument('--layers', type=int, default=2)
    parser.add_argument('--epochs', type=int, default=40)
    parser.add_argument('--minutes', type=float, default=50, help='stop after this long (the issue allows 60 on this machine)')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--seed', type=int, default=28)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    random.seed(args.seed)
    started = time.time()
    train, val = load(args.train), load(args.validation)
    stacked = np.concatenate([x for x, _, _ in train])
    mean = stacked.mean(0).astype(np.float32)
    std = (stacked.std(0) + 1e-3).astype(np.float32)
    print(f'train {len(train)} utterances ({len(stacked)} rows), validation {len(val)}', flush=True)

    model = Model(MEL * STACK, args.hidden, args.layers, len(LABELS))
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=2)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    best = None
    history = []
    for epoch in range(args.epochs):
        order = list(range(len(train)))
        random.shuffle(order)
        # Batches of similar length: less padding.
        order = sorted(order, key=lambda i: train[i][0].shape[0] + random.random() * 20)
        batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
        random.shuffle(batches)
        total = 0.0
        for b in batches:
            xs = [torch.from_numpy(augment((train[i][0] - mean) / std, rng)) for i in b]
            lengths = torch.tensor([x.shape[0] for x in xs])
            targets = torch.tensor([c for i in b for c in train[i][1]])
            target_lengths = torch.tensor([len(train[i][1]) for i in b])
            logits = model(torch.nn.utils.rnn.pad_sequence(xs))
            loss = ctc(logits.log_softmax(-1), targets, lengths, target_lengths)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            total += loss.item()
        metrics = evaluate(model, val, mean, std)
        scheduler.step(metrics['wer'])
        minutes = (time.time() - started) / 60
        history.append({'epoch': epoch + 1, 'loss': total / len(batches), **metrics, 'minutes': minutes})
        print(f"epoch {epoch + 1}: loss {total / len(batches):.4f}, validation WER {metrics['wer']:.4f} CER {metrics['cer']:.4f} exact {metrics['exact']:.4f} ({minutes:.1f} min)", flush=True)
        if best is None or metrics['wer'] < best[0]['wer']:
            best = (metrics, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
        if minutes > args.minutes:
            print('time budget reached', flush=True)
            break

    model.load_state_dict(best[1])
    model.eval()
    # The digit-lexicon beam search, on the same validation set: kept only if it pays.
    lexicon = evaluate(model, val, mean, std, decode=lexicon_beam)
    print(f"digit-lexicon beam search on validation: WER {lexicon['wer']:.4f} CER {lexicon['cer']:.4f} exact {lexicon['exact']:.4f} (greedy: WER {best[0]['wer']:.4f})", flush=True)
    exported = Exported(model)
    example = torch.zeros(5, 1, MEL * STACK)
    torch.onnx.export(exported, example, args.out + '.onnx', input_names=['x'], output_names=['y'], dynamic_axes={'x': {0: 'time', 1: 'batch'}, 'y': {0: 'time', 1: 'batch'}}, opset_version=14)
    with open(args.out + '.normalization.json', 'w') as f:
        json.dump({'mean': [float(v) for v in mean], 'std': [float(v) for v in std]}, f)
    summary = {'best_epoch': best[2], 'validation': best[0], 'validation_lexicon_beam': lexicon, 'epochs': history, 'minutes': (time.time() - started) / 60, 'hidden': args.hidden, 'layers': args.layers, 'seed': args.seed, 'train_utterances': len(train), 'validation_utterances': len(val)}
    with open(args.out + '.training.json', 'w') as f:
        json.dump(summary, f, indent=1)
    print(f"best epoch {best[2]}: validation WER {best[0]['wer']:.4f} CER {best[0]['cer']:.4f} exact {best[0]['exact']:.4f}; {summary['minutes']:.1f} min", flush=True)


if __name__ == '__main__':
    main()
