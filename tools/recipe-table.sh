#!/usr/bin/env bash
# Measures every built-in recipe on the bundled tiny models in one run (issue 4/5 notes):
# compiles each (model x recipe), then prints per model: parameters, file bytes, held-out perplexity
# (and its ratio to the uncompressed model) and prefill/decode tokens/s from one `onnxmoe bench` run
# with the uncompressed model as the baseline.
# Usage: tools/recipe-table.sh [samples=32] [seq-len=256] [workdir=/tmp/onnxmoe-recipes]
set -euo pipefail
samples=${1:-32}
seq=${2:-256}
work=${3:-/tmp/onnxmoe-recipes}
root=$(cd "$(dirname "$0")/.." && pwd)
dotnet build "$root/src/OnnxMoe.Cli" -c Release -v quiet -nologo >/dev/null
cli() { dotnet "$root/src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll" "$@"; }
heldout="$root/models/data/kjv-heldout.txt"
recipes=(expert-drop layer-drop-4 layer-drop-8 block-drop-4 block-drop-8 block-drop-awq)
rm -rf "$work"; mkdir -p "$work"
for model in tiny-mixtral tiny-deepseek; do
  cli compile "$root/models/$model" -o "$work/$model/none" >/dev/null 2>&1
  for r in "${recipes[@]}"; do
    cli compile "$root/models/$model" -o "$work/$model/$r" --recipe "$r" --samples "$samples" --seq-len "$seq" >/dev/null 2>"$work/$model-$r.log" \
      || { echo "compile $model $r failed:"; cat "$work/$model-$r.log"; exit 1; }
  done
  dirs=("$work/$model/none"); for r in "${recipes[@]}"; do dirs+=("$work/$model/$r"); done
  echo "## $model (calibration $samples x $seq tokens; perplexity on models/data/kjv-heldout.txt, windows 256 / stride 256)"
  printf "%-16s %12s %12s %10s %8s\n" recipe parameters bytes perplexity "ppl x"
  base=""
  for d in "${dirs[@]}"; do
    name=$(basename "$d")
    params=$(sed -n 's/.*"total": *\([0-9]*\).*/\1/p' "$d/compile_report.json" | head -1)
    bytes=$(( $(stat -c %s "$d/model.onnx") + $(stat -c %s "$d/model.onnx.data") ))
    ppl=$(cli eval "$d" --perplexity "$heldout" --seq-len 256 --stride 256 --json 2>/dev/null | sed -n 's/.*"perplexity":\([0-9.]*\).*/\1/p')
    [ -z "$base" ] && base=$ppl
    printf "%-16s %12s %12s %10.3f %8.3f\n" "$name" "$params" "$bytes" "$ppl" "$(awk -v a="$ppl" -v b="$base" 'BEGIN{print a/b}')"
  done
  echo
  cli bench "${dirs[@]}" --prompt-len 128 --gen 64 --repeat 3 2>/dev/null
  echo
done
