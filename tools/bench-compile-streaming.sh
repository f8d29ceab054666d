#!/usr/bin/env bash
# Streaming benchmark for `onnxmoe compile` (issue 3): generates a random Mixtral-shaped checkpoint
# (default 4 GiB of fp32 weights, never committed), then in one run times a plain `cp` of the
# checkpoint, `onnxmoe compile`, and a plain `cp` of the artifact's data file (the same bytes the
# compile wrote; equal to the checkpoint's size for fp32 -> fp32), and prints the ratios:
#   compile time / cp time, and compile peak RSS / model size.
# Usage: tools/bench-compile-streaming.sh [size=4GiB] [workdir=/tmp/onnxmoe-bench-compile] [checkpoint dtype=fp32] [artifact dtype=fp32]
# Needs about 3x the size (checkpoint + artifact + one copy at a time) of free disk in workdir.
set -euo pipefail
size=${1:-4GiB}
work=${2:-/tmp/onnxmoe-bench-compile}
src_dtype=${3:-fp32}
dst_dtype=${4:-fp32}
root=$(cd "$(dirname "$0")/.." && pwd)
# ONNXMOE_CLI overrides the command (e.g. to compare an older build: ONNXMOE_CLI="dotnet /path/onnxmoe.dll").
if [ -n "${ONNXMOE_CLI:-}" ]; then cli=$ONNXMOE_CLI; else
  cli="dotnet $root/src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll"
  dotnet build "$root/src/OnnxMoe.Cli" -c Release -v quiet -nologo >/dev/null
fi
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
echo "generating a $size $src_dtype mixtral checkpoint in $work/ckpt ..."
$cli synth mixtral -o "$work/ckpt" --size "$size" --dtype "$src_dtype"
bytes=$(du -cb "$work"/ckpt/*.safetensors | tail -1 | cut -f1)
settle() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
settle
/usr/bin/time -f "%e %M" -o "$work/cp.time" cp -r "$work/ckpt" "$work/copy"
rm -rf "$work/copy"; settle
/usr/bin/time -f "%e %M" -o "$work/compile.time" $cli compile "$work/ckpt" -o "$work/out" --dtype "$dst_dtype"
settle
/usr/bin/time -f "%e %M" -o "$work/cpout.time" cp "$work/out/model.onnx.data" "$work/copy.data"
rm -f "$work/copy.data"
read -r cp_s cp_kb < "$work/cp.time"
read -r c_s c_kb < "$work/compile.time"
read -r co_s co_kb < "$work/cpout.time"
out_bytes=$(du -cb "$work/out/model.onnx" "$work/out/model.onnx.data" | tail -1 | cut -f1)
awk -v b="$bytes" -v o="$out_bytes" -v cs="$cp_s" -v ck="$cp_kb" -v s="$c_s" -v k="$c_kb" -v os="$co_s" -v sd="$src_dtype" -v dd="$dst_dtype" 'BEGIN {
  printf "checkpoint (%s) bytes %15.0f (%.2f GiB)\n", sd, b, b / 2^30
  printf "artifact (%s) bytes   %15.0f (%.2f GiB)\n", dd, o, o / 2^30
  printf "cp -r checkpoint      %8.1f s  %7.1f MiB/s  peak RSS %6.0f MiB\n", cs, b / 2^20 / cs, ck / 1024
  printf "onnxmoe compile       %8.1f s  %7.1f MiB/s  peak RSS %6.0f MiB  (MiB/s of checkpoint read)\n", s, b / 2^20 / s, k / 1024
  printf "cp artifact data      %8.1f s  %7.1f MiB/s\n", os, o / 2^20 / os
  printf "ratio compile/cp time %8.2f  (vs cp of the checkpoint)\n", s / cs
  printf "ratio compile/cp time %8.2f  (vs cp of the artifact data)\n", s / os
  printf "ratio peak RSS/model  %8.3f\n", k * 1024 / b
}'
