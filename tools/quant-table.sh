#!/usr/bin/env bash
# Expert Slimming quality on the bundled tiny models (issue 5): held-out perplexity of fp32, int4 RTN
# and int4 AWQ at block sizes 32, 64 and 128 (AWQ also with accuracy-level 4: int8 activations), all measured in one run.
# Usage: tools/quant-table.sh [calibration samples=32] [seq-len=256] [workdir=/tmp/onnxmoe-quant]
set -euo pipefail
samples=${1:-32}
seq=${2:-256}
work=${3:-/tmp/onnxmoe-quant}
root=$(cd "$(dirname "$0")/.." && pwd)
dotnet build "$root/src/OnnxMoe.Cli" -c Release -v quiet -nologo >/dev/null
cli() { dotnet "$root/src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll" "$@"; }
ppl() { cli eval "$1" --perplexity "$root/models/data/kjv-heldout.txt" --seq-len 256 --stride 256 --json 2>/dev/null | sed -n 's/.*"perplexity":\([0-9.]*\).*/\1/p'; }
rm -rf "$work"; mkdir -p "$work"
echo "held-out perplexity (models/data/kjv-heldout.txt, windows 256 / stride 256); AWQ calibration $samples x $seq tokens"
printf "%-14s %6s %10s %10s %10s %12s %14s\n" model block fp32 rtn awq "awq<=rtn" "awq acc-lvl 4"
for model in tiny-mixtral tiny-deepseek; do
  cli compile "$root/models/$model" -o "$work/$model-fp32" >/dev/null 2>&1
  base=$(ppl "$work/$model-fp32")
  for bs in 32 64 128; do
    cli compile "$root/models/$model" -o "$work/$model-rtn-$bs" --pipeline "quantize-int4{method=rtn,block-size=$bs}" >/dev/null 2>&1
    cli compile "$root/models/$model" -o "$work/$model-awq-$bs" --pipeline "quantize-int4{method=awq,block-size=$bs}" --samples "$samples" --seq-len "$seq" >/dev/null 2>&1
    cli compile "$root/models/$model" -o "$work/$model-awq4-$bs" --pipeline "quantize-int4{method=awq,block-size=$bs,accuracy-level=4}" --samples "$samples" --seq-len "$seq" >/dev/null 2>&1
    rtn=$(ppl "$work/$model-rtn-$bs"); awq=$(ppl "$work/$model-awq-$bs"); awq4=$(ppl "$work/$model-awq4-$bs")
    printf "%-14s %6s %10.3f %10.3f %10.3f %12s %14.3f\n" "$model" "$bs" "$base" "$rtn" "$awq" "$(awk -v a="$awq" -v r="$rtn" 'BEGIN{print (a<=r)?"yes":"no"}')" "$awq4"
  done
done
