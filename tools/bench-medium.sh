#!/usr/bin/env bash
# Speed/memory benchmark on a medium synthetic MoE (issue 5): a Mixtral-shaped random checkpoint
# (hidden 1024, 16 layers, 8 experts top-2, expert width 2816, vocab 32000: about 1.2 B parameters,
# generated locally, never committed), compiled three ways and measured in ONE `onnxmoe bench` run:
#   fp32 baseline | int4 (RTN, block 128) | block drop 25% + int4 AWQ (the paper's combined recipe).
# Calibration uses the bundled tokenizer (ids fit the 32000 vocabulary) on models/data/kjv-calibration.txt.
# Usage: tools/bench-medium.sh [workdir=/tmp/onnxmoe-medium] [calibration samples=8] [seq-len=128]
set -euo pipefail
work=${1:-/tmp/onnxmoe-medium}
samples=${2:-8}
seq=${3:-128}
root=$(cd "$(dirname "$0")/.." && pwd)
dotnet build "$root/src/OnnxMoe.Cli" -c Release -v quiet -nologo >/dev/null
cli() { dotnet "$root/src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll" "$@"; }
rm -rf "$work"; mkdir -p "$work"
cli synth mixtral -o "$work/ckpt" --layers 16 --hidden 1024 --intermediate 2816 --experts 8 --top-k 2 --dtype bf16
cp "$root/models/tiny-mixtral/tokenizer.json" "$root/models/tiny-mixtral/tokenizer_config.json" "$work/ckpt/"
time cli compile "$work/ckpt" -o "$work/fp32"
time cli compile "$work/ckpt" -o "$work/int4" --pipeline "quantize-int4{method=rtn,block-size=128}"
time cli compile "$work/ckpt" -o "$work/bd-awq" --recipe block-drop-awq --samples "$samples" --seq-len "$seq"
cli bench "$work/fp32" "$work/int4" "$work/bd-awq" --prompt-len 128 --gen 64 --repeat 3
