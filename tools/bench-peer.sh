#!/usr/bin/env bash
# Decode/prefill speed of our artifacts beside llama.cpp on the same checkpoint and machine (issue 11's targets).
#
#   tools/bench-peer.sh CHECKPOINT [PROMPT=128] [GEN=32] [THREADS=2]
#
# Compiles four artifacts (fp32, fused as compile does by default; int4 RTN block 128 accuracy_level 4 with an 8-bit
# lm_head, fused: one QMoE node per MoE layer, GroupQueryAttention, SimplifiedLayerNormalization; int4 RTN block 128
# accuracy_level 4 with standard ops, --fuse off; block drop 25% + the fused int4, the combined recipe's shape) and two GGUFs (tools/gguf_export.py: f32, q4_0), then runs
# `onnxmoe bench` (one folder per process) and tools/bench_llamacpp.mjs one after another, in two rounds (the second
# in reverse order), and prints one table: decode and prefill tok/s per round and the decode ratios of each artifact
# against llama.cpp q4_0 and f32 measured in the same round.
# Environment: OUT (default out/bench-peer; artifacts are reused when newer than the checkpoint), REPEAT (measured
# repeats per run, default 3), GENAI=1 (the fused artifacts also run in ONNX Runtime GenAI), PAUSE_NICE10=1 (stop every process at nice 10 during each round, resumed on exit:
# other jobs of a shared machine). Compiles and exports run at nice 10, the measurements at the script's own
# niceness. Needs a Release build, node + `npm install --prefix tools/llamacpp --omit=optional`, Debian's python3-torch.
set -euo pipefail
cd "$(dirname "$0")/.."

CKPT=${1:?usage: tools/bench-peer.sh CHECKPOINT [PROMPT] [GEN] [THREADS]}
PROMPT=${2:-128}; GEN=${3:-32}; THREADS=${4:-2}
OUT=${OUT:-out/bench-peer}; REPEAT=${REPEAT:-3}
[ -f "$CKPT/config.json" ] || { echo "bench-peer: $CKPT/config.json: no such file" >&2; exit 2; }
BIN=src/OnnxMoe.Cli/bin/Release/net10.0
[ -f "$BIN/onnxmoe.dll" ] || { echo "bench-peer: $BIN/onnxmoe.dll missing: run dotnet build OnnxMoe.sln -c Release" >&2; exit 2; }
[ -d tools/llamacpp/node_modules/node-llama-cpp ] || { echo "bench-peer: run npm install --prefix tools/llamacpp --omit=optional first" >&2; exit 2; }

if [ "${PAUSE_NICE10:-0}" = 1 ] && [ "$(ps -o ni= -p $$)" -eq 10 ]; then
    echo "bench-peer: PAUSE_NICE10=1 would stop this script itself: run it at nice 0" >&2; exit 2
fi
mkdir -p "$OUT"
# A private copy of the CLI: a rebuild of the tree while this runs would change the dll under it.
rm -rf "$OUT/cli" && cp -r "$BIN" "$OUT/cli"
ONNXMOE=(dotnet "$OUT/cli/onnxmoe.dll")
NEWEST=$(ls -t "$CKPT"/config.json "$CKPT"/*.safetensors "$CKPT"/tokenizer*.json 2>/dev/null | head -1 || true)

stale() { [ ! -e "$1" ] || [ "$NEWEST" -nt "$1" ]; }
compile() {  # name fuse(on|off) pipeline [compile options...]
    if stale "$OUT/$1"; then
        echo "compile $1: --fuse $2 ${3:-(no passes)}" >&2
        nice -n 10 "${ONNXMOE[@]}" compile "$CKPT" -o "$OUT/$1" --overwrite --fuse "$2" ${3:+--pipeline "$3"} "${@:4}" >/dev/null
    fi
}
compile fp32 on ""
compile int4-fused on "quantize-int4{accuracy-level=4,lm-head-bits=8}"
compile int4 off "quantize-int4{accuracy-level=4}"
# The combined recipe's shape (block drop 25%, then int4 with an 8-bit lm_head) with RTN: AWQ changes the weights, not
# the work per token. Which blocks go depends on calibration, their cost does not: 4 short samples pick them.
compile bd25-int4-fused on "drop-blocks{n=25%},quantize-int4{accuracy-level=4,lm-head-bits=8}" --samples 4 --seq-len 128
for t in f32 q4_0; do
    if stale "$OUT/llamacpp-$t.gguf"; then
        echo "export llamacpp-$t.gguf" >&2
        nice -n 10 /usr/bin/python3 tools/gguf_export.py "$CKPT" -o "$OUT/llamacpp-$t.gguf" --type "$t" >&2
    fi
done

RUNS=(ours:fp32 llama:f32 ours:int4 ours:int4-fused ours:bd25-int4-fused llama:q4_0)
# GENAI=1: the fused artifacts also run in ONNX Runtime GenAI (onnxmoe bench --engine genai)
[ "${GENAI:-0}" = 1 ] && RUNS+=(genai:fp32 genai:int4-fused genai:bd25-int4-fused)
RESULTS="$OUT/results.jsonl"; : > "$RESULTS"
PAUSED=""
# CPU seconds the whole machine spent busy (user, nice, system, irq, softirq, steal; USER_HZ = 100)
busy_seconds() { awk '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8+$9)/100}' /proc/stat; }
resume() { if [ -n "$PAUSED" ]; then kill -CONT $PAUSED 2>/dev/null || true; PAUSED=""; fi; }
trap resume EXIT
trap 'resume; exit 130' INT TERM
for round in 1 2; do
    order=("${RUNS[@]}")
    [ "$round" = 2 ] && order=($(printf '%s\n' "${RUNS[@]}" | tac))
    if [ "${PAUSE_NICE10:-0}" = 1 ]; then
        PAUSED=$(ps -eo pid,ni --no-headers | awk '$2==10{print $1}' | tr '\n' ' ')
        [ -n "$PAUSED" ] && kill -STOP $PAUSED 2>/dev/null || true
    fi
    for run in "${order[@]}"; do
        kind=${run%%:*}; name=${run#*:}
        echo "round $round: $kind $name" >&2
        if [ "$kind" = ours ] || [ "$kind" = genai ]; then
            engine=ort; [ "$kind" = genai ] && engine=genai
            cmd=("${ONNXMOE[@]}" bench "$OUT/$name" --prompt-len "$PROMPT" --gen "$GEN" --repeat "$REPEAT" --threads "$THREADS"
                 --engine "$engine" --json)
        else
            cmd=(node tools/bench_llamacpp.mjs bench "$OUT/llamacpp-$name.gguf" --threads "$THREADS" --prompt-len "$PROMPT"
                 --gen "$GEN" --repeat "$REPEAT")
        fi
        # the machine's busy CPU time during the run minus the run's own: the load other processes put beside it
        before=$(busy_seconds)
        json=$(/usr/bin/time -f '%e %U %S' -o "$OUT/.time" "${cmd[@]}")
        after=$(busy_seconds)
        printf '%s\n' "$json" | /usr/bin/python3 -c '
import json, sys
e, u, s = map(float, open(sys.argv[4]).read().split()[-3:])
others = max(0.0, float(sys.argv[6]) - float(sys.argv[5]) - u - s) / e
print(json.dumps({"round": int(sys.argv[1]), "kind": sys.argv[2], "name": sys.argv[3], "others_cores": others,
                  "result": json.load(sys.stdin)}))
' "$round" "$kind" "$name" "$OUT/.time" "$before" "$after" >> "$RESULTS"
    done
    resume
done

/usr/bin/python3 - "$RESULTS" "$PROMPT" "$GEN" "$THREADS" "$REPEAT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def speeds(r):
    res = r["result"]
    if r["kind"] in ("ours", "genai"):
        x = res["rows"][0]["result"]
        return x["decode_tokens_per_second"], x["prefill_tokens_per_second"], r["others_cores"]
    return res["decode_tok_s"], res["prefill_tok_s"], r["others_cores"]
table = {}
for r in rows:
    table.setdefault((r["kind"], r["name"]), {})[r["round"]] = speeds(r)
labels = {("ours", "fp32"): "onnxmoe fp32 (default compile: GQA, SimplifiedLayerNorm fused; float experts standard)", ("ours", "int4"): "onnxmoe int4 RTN b128 level 4, standard ops (--fuse off)",
          ("ours", "int4-fused"): "onnxmoe int4 RTN b128 level 4, lm_head 8-bit, fused (QMoE, GQA, SimplifiedLayerNorm)",
          ("ours", "bd25-int4-fused"): "onnxmoe block drop 25% + int4 RTN b128 level 4, lm_head 8-bit, fused",
          ("genai", "fp32"): "ORT GenAI: fp32 artifact", ("genai", "int4-fused"): "ORT GenAI: int4 fused artifact",
          ("genai", "bd25-int4-fused"): "ORT GenAI: block drop 25% + int4 fused artifact",
          ("llama", "f32"): "llama.cpp f32", ("llama", "q4_0"): "llama.cpp q4_0"}
rounds = (1, 2)
def pair(key, i, fmt):
    return " / ".join(fmt.format(table[key][r][i]) for r in rounds)
def ratio(key, ref):
    return " / ".join(f"{table[key][r][0] / table[ref][r][0]:.2f}" for r in rounds)
print(f"prompt {sys.argv[2]}, {sys.argv[3]} generated tokens, {sys.argv[4]} threads, batch 1, median of {sys.argv[5]} repeats "
      "after 1 warm-up; each cell: round 1 / round 2; ratios are decode tok/s over llama.cpp's (or the same engine's fp32) in the same round; "
      "others' load: cores other processes kept busy during the run (machine busy time minus the run's own CPU time)")
print()
print("| artifact | decode tok/s | prefill tok/s | decode vs llama.cpp q4_0 | decode vs llama.cpp f32 | decode vs the same engine's fp32 | others' load (cores) |")
print("|---|---|---|---|---|---|---|")
for key in [k for k in labels if k in table]:   # in the labels' order
    print(f"| {labels[key]} | {pair(key, 0, '{:.1f}')} | {pair(key, 1, '{:.0f}')} | "
          f"{ratio(key, ('llama', 'q4_0'))} | {ratio(key, ('llama', 'f32'))} | {ratio(key, (key[0], 'f32' if key[0] == 'llama' else 'fp32'))} | "
          f"{pair(key, 2, '{:.2f}')} |")
PY
