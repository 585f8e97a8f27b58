#!/usr/bin/env bash
# Trains the speech-digits model from scratch, as committed (issue 28). About 50 minutes on the
# 2-core development machine; CI never runs it. Needs espeak-ng and Debian's PyTorch with an
# optimised BLAS:
#
#   apt-get install espeak-ng python3-torch python3-onnx libopenblas0-pthread
#
# Debian's python3-torch calls the system's libblas.so.3; without OpenBLAS that is the reference
# BLAS, and an epoch took 18 minutes instead of 1.4. One OpenBLAS thread: the LSTM's per-step
# products are small, and OpenBLAS's own threads beside PyTorch's made it 6x slower here.
#
#   bash scripts/train-speech.sh [work-dir]
#
# 1. Synthesises the training and validation fixtures with the training voices only (en-us,
#    en-gb, en-gb-x-rp; variants m1-m4, f1-f3). Training: 8,000 strings, wider speeds, pitches,
#    gains and noise than the evaluation ranges; validation: 400 strings at 120-220 words per
#    minute, pitch 25-75, half with white noise at 15-30 dB, with word alignments.
# 2. Makes their rows with the pipeline's own front end (rnnstream frames).
# 3. Trains in PyTorch (scripts/train_speech_ctc.py), keeping the epoch with the lowest
#    validation WER, and exports ONNX.
# 4. Imports it (rnnstream import --normalization --verify) as pipelines/speech-digits/model.json
#    and evaluates it on the validation fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d /tmp/rnnstream-speech-XXXX)}"
mkdir -p "$work"
rnnstream() { node dist/src/cli/main.js "$@"; }
[ -f dist/src/cli/main.js ] || npm run build --silent
[ -f "$work/train.jsonl" ] || rnnstream fixtures speech --count 8000 --seed 101 --speed 100:240 --pitch 10:90 --noisy 0.6 --snr 5:40 --gain 0.1:1 --out "$work/train.jsonl"
[ -f "$work/val.jsonl" ] || rnnstream fixtures speech --count 400 --seed 202 --alignments --out "$work/val.jsonl"
[ -f "$work/train.f32" ] || rnnstream frames --pipeline speech-digits --input "$work/train.jsonl" --out "$work/train"
[ -f "$work/val.f32" ] || rnnstream frames --pipeline speech-digits --input "$work/val.jsonl" --out "$work/val"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /usr/bin/python3 scripts/train_speech_ctc.py --threads 1 --train "$work/train" --validation "$work/val" --out "$work/speech" "${@:2}"
rnnstream import "$work/speech.onnx" --pipeline speech-digits --normalization "$work/speech.normalization.json" --verify --backend onnx --out pipelines/speech-digits/model.json
rnnstream eval --pipeline speech-digits --input "$work/val.jsonl" --backend onnx
echo "work files in $work"
