#!/usr/bin/env bash
# Quantization quality where activation outliers exist (issue 10 item 5): for each model and its outlier
# version (tools/make_outliers.py: N hidden channels' norm weights x S, the linears reading them / S),
# fp32, int4 RTN and int4 AWQ at blocks 32/64/128: held-out perplexity, the built-in tasks' mean acc, and
# the share of RTN's perplexity increase that AWQ recovers, (ppl_rtn - ppl_awq) / (ppl_rtn - ppl_fp32).
# quantize-int4 runs at its defaults besides method and block size (accuracy level 4, fuse on).
# Usage: tools/quant-outliers.sh [task limit=100] [AWQ samples=32] [AWQ seq-len=256] [scale=40] [channels=4] [workdir=/tmp/onnxmoe-outliers]
# MODELS="tiny-mixtral small-mixtral" picks the models under models/ (each is followed by its outlier version);
# VERSIONS=outliers measures the outlier versions only (VERSIONS=base: the models as they are);
# LEVEL=1 adds accuracy-level=1 (fp32 activations) to every quantize-int4, to separate weight error from int8 activations.
set -euo pipefail
limit=${1:-100}
samples=${2:-32}
seq=${3:-256}
scale=${4:-40}
channels=${5:-4}
work=${6:-/tmp/onnxmoe-outliers}
models=${MODELS:-tiny-mixtral small-mixtral}
versions=${VERSIONS:-base outliers}
level=${LEVEL:+,accuracy-level=$LEVEL}
root=$(cd "$(dirname "$0")/.." && pwd)
dotnet build "$root/src/OnnxMoe.Cli" -c Release -v quiet -nologo >/dev/null
cli() { dotnet "$root/src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll" "$@"; }
ppl() { cli eval "$1" --perplexity "$root/models/data/kjv-heldout.txt" --seq-len 256 --stride 256 --json 2>/dev/null | sed -n 's/.*"perplexity":\([0-9.]*\).*/\1/p'; }
acc() {
  cli eval "$1" --tasks onnxmoe --limit "$limit" --batch-size 8 --output-path "$1-tasks" >/dev/null 2>&1
  /usr/bin/python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["groups"]["onnxmoe"]["acc,none"])' "$1-tasks/results.json"
}
share() { awk -v f="$1" -v r="$2" -v a="$3" 'BEGIN{ if (r - f <= 0) print "n/a"; else printf "%.0f%%", 100 * (r - a) / (r - f) }'; }
rm -rf "$work"; mkdir -p "$work"

echo "outlier versions: tools/make_outliers.py --channels $channels --scale $scale --seed 0"
for model in $models; do
  /usr/bin/python3 "$root/tools/make_outliers.py" "$root/models/$model" "$work/$model-outliers" \
    --channels "$channels" --scale "$scale" --seed 0 > "$work/$model-outliers.log"
  awk -v m="$model" '$1 ~ /norm/ && NF == 3 && $2 ~ /^[0-9]/ { b = b sep $2; a = a sep $3; sep = " " }
    /max \|logit diff\|/ { d = $0 }
    END { n = split(b, bb, " "); split(a, aa, " "); minb = maxb = bb[1]; mina = maxa = aa[1]
          for (i = 2; i <= n; i++) { if (bb[i] < minb) minb = bb[i]; if (bb[i] > maxb) maxb = bb[i]; if (aa[i] < mina) mina = aa[i]; if (aa[i] > maxa) maxa = aa[i] }
          printf "  %s: outlier ratio of the norm outputs %s-%s -> %s-%s; %s\n", m, minb, maxb, mina, maxa, d }' "$work/$model-outliers.log"
done
echo "held-out perplexity (models/data/kjv-heldout.txt, windows 256 / stride 256); tasks: --tasks onnxmoe --limit $limit, mean acc;"
echo "quantize-int4{method=rtn|awq,block-size=B$level} (other options at their defaults), compile's default fuse"
echo "AWQ calibration $samples x $seq tokens of models/data/kjv-calibration.txt; recovered = (rtn - awq) / (rtn - fp32) in perplexity"
printf "| %-22s | %5s | %9s | %9s | %9s | %9s | %8s | %8s | %8s |\n" model block "fp32 ppl" "rtn ppl" "awq ppl" recovered "fp32 acc" "rtn acc" "awq acc"
printf "|%s|\n" "------------------------|------:|----------:|----------:|----------:|----------:|---------:|---------:|---------:"
for model in $models; do
  for version in $versions; do
    case $version in
      base) ckpt="$root/models/$model" ;;
      outliers) ckpt="$work/$model-outliers" ;;
      *) echo "quant-outliers.sh: VERSIONS: unknown version '$version' (base or outliers)" >&2; exit 1 ;;
    esac
    name=$(basename "$ckpt")
    cli compile "$ckpt" -o "$work/$name-fp32" >/dev/null 2>&1
    base=$(ppl "$work/$name-fp32"); base_acc=$(acc "$work/$name-fp32")
    for bs in 32 64 128; do
      cli compile "$ckpt" -o "$work/$name-rtn-$bs" --pipeline "quantize-int4{method=rtn,block-size=$bs$level}" >/dev/null 2>&1
      cli compile "$ckpt" -o "$work/$name-awq-$bs" --pipeline "quantize-int4{method=awq,block-size=$bs$level}" --samples "$samples" --seq-len "$seq" >/dev/null 2>&1
      rtn=$(ppl "$work/$name-rtn-$bs"); awq=$(ppl "$work/$name-awq-$bs")
      printf "| %-22s | %5s | %9.3f | %9.3f | %9.3f | %9s | %8s | %8s | %8s |\n" "$name" "$bs" "$base" "$rtn" "$awq" \
        "$(share "$base" "$rtn" "$awq")" "$base_acc" "$(acc "$work/$name-rtn-$bs")" "$(acc "$work/$name-awq-$bs")"
    done
  done
done
