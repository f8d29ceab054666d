#!/usr/bin/env bash
# Streaming benchmark for `onnxmoe compile` (issue 3): generates a random Mixtral-shaped checkpoint
# (default 4 GiB of fp32 weights, never committed), then in one run times a plain `cp` of the same
# bytes and `onnxmoe compile` to fp32 (same byte count out), and prints the ratios:
#   compile time / cp time, and compile peak RSS / model size.
# Usage: tools/bench-compile-streaming.sh [size=4GiB] [workdir=/tmp/onnxmoe-bench-compile]
set -euo pipefail
size=${1:-4GiB}
work=${2:-/tmp/onnxmoe-bench-compile}
root=$(cd "$(dirname "$0")/.." && pwd)
cli="dotnet $root/src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll"
dotnet build "$root/src/OnnxMoe.Cli" -c Release -v quiet -nologo >/dev/null
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
echo "generating a $size fp32 mixtral checkpoint in $work/ckpt ..."
$cli synth mixtral -o "$work/ckpt" --size "$size" --dtype fp32
bytes=$(du -cb "$work"/ckpt/*.safetensors | tail -1 | cut -f1)
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
/usr/bin/time -f "%e %M" -o "$work/cp.time" cp -r "$work/ckpt" "$work/copy"
rm -rf "$work/copy"; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
/usr/bin/time -f "%e %M" -o "$work/compile.time" $cli compile "$work/ckpt" -o "$work/out" --dtype fp32
read -r cp_s cp_kb < "$work/cp.time"
read -r c_s c_kb < "$work/compile.time"
out_bytes=$(du -cb "$work/out/model.onnx" "$work/out/model.onnx.data" | tail -1 | cut -f1)
awk -v b="$bytes" -v o="$out_bytes" -v cs="$cp_s" -v ck="$cp_kb" -v s="$c_s" -v k="$c_kb" 'BEGIN {
  printf "checkpoint bytes      %15d (%.2f GiB)\n", b, b / 2^30
  printf "artifact bytes        %15d\n", o
  printf "cp -r                 %8.1f s  %7.1f MiB/s  peak RSS %6.0f MiB\n", cs, b / 2^20 / cs, ck / 1024
  printf "onnxmoe compile       %8.1f s  %7.1f MiB/s  peak RSS %6.0f MiB\n", s, b / 2^20 / s, k / 1024
  printf "ratio compile/cp time %8.2f\n", s / cs
  printf "ratio peak RSS/model  %8.3f\n", k * 1024 / b
}'
