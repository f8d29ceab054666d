#!/usr/bin/env bash
# Calibration at scale: the combined recipe on a synthetic Mixtral-shaped checkpoint, under a memory limit.
# Prints the peak RSS, the wall time and the calibration report, then runs the artifact in ORT.
#   tools/bench-calibration.sh [layers] [hidden] [intermediate] [memory limit] [work folder]
# Defaults: the 3.3 B model of issue 9 (12 layers, hidden 2048, experts of 5632) under 3 GiB.
# The memory limit is a cgroup-v1 memory cgroup when /sys/fs/cgroup/memory is writable (root), else none.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${1:-12}; hidden=${2:-2048}; inter=${3:-5632}; limit=${4:-3G}; work=${5:-/tmp/onnxmoe-bench-calibration}
# ONNXMOE_CLI: the onnxmoe.dll to run (e.g. a copy, so a rebuild meanwhile does not touch the running one).
dll=${ONNXMOE_CLI:-src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll}
[ -f "$dll" ] || dotnet build src/OnnxMoe.Cli -c Release >/dev/null
cli="dotnet $dll"
ckpt=$work/ckpt-$layers-$hidden-$inter
if [ ! -f "$ckpt/config.json" ]; then
  $cli synth mixtral -o "$ckpt" --layers "$layers" --hidden "$hidden" --intermediate "$inter" --dtype bf16
  cp models/tiny-mixtral/tokenizer.json models/tiny-mixtral/tokenizer_config.json "$ckpt"/
fi
out=$work/out-$layers-$hidden-$inter
run=()
cg=/sys/fs/cgroup/memory/onnxmoe-bench-$$
if mkdir "$cg" 2>/dev/null; then
  bytes=$(numfmt --from=iec "$limit")
  echo "$bytes" > "$cg/memory.limit_in_bytes"
  echo 0 > "$cg/memory.swappiness" 2>/dev/null || true
  run=(bash -c "echo \$\$ > $cg/cgroup.procs && exec \"\$@\"" _)
  echo "memory cgroup $cg: limit $limit"
  trap 'rmdir "$cg" 2>/dev/null || true' EXIT
else
  echo "no writable memory cgroup: running without a limit"
fi
/usr/bin/time -f "peak RSS %M KB, wall %e s, exit %x" "${run[@]}" $cli compile "$ckpt" -o "$out" --recipe block-drop-awq \
  --samples 8 --seq-len 128 --overwrite --json > "$work/report.json"
[ -d "$cg" ] && echo "cgroup peak (RSS + page cache): $(( $(cat "$cg/memory.max_usage_in_bytes") >> 20 )) MiB, OOM kills: $(grep -c . "$cg/memory.failcnt" >/dev/null; cat "$cg/memory.failcnt") limit hits"
python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["timings"]; c = r.get("calibration") or {}
params = r["parameters"]
print(f"passes {t['passes_seconds']:.0f} s of {t['total_seconds']:.0f} s; " + ", ".join(f"{p['name']} {p['seconds']:.0f} s" for p in r["passes"]))
print("calibration: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" if k.endswith("bytes") else f"{k} {v}" for k, v in c.items()))
print("parameters:", params)
PY
$cli generate "$out" --prompt "And God said" --max-new-tokens 4 >/dev/null && echo "the artifact runs in ORT (generate: 4 tokens)"
