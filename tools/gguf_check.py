"""Checks tools/gguf_export.py against llama.cpp: the logits llama.cpp computes from the exported GGUF files
must match an independent reference forward (tools/onnxmoe_ref) of the same weights.

  /usr/bin/python3 tools/gguf_check.py [CHECKPOINT] [--threads 2]     (default models/tiny-mixtral)

- f32 GGUF vs the checkpoint's golden logits (golden.safetensors: the reference forward in fp32), every prompt
  position: max |diff| <= 1e-4 and the same argmax everywhere, with llama.cpp's KV cache in F32 and flash
  attention off (its CPU flash attention rounds to F16). Its defaults (F16 cache, flash attention auto, as the
  benchmark runs) are reported too, not checked.
- q4_0 GGUF vs the reference forward on the weights exactly as stored (each matrix quantized and dequantized by
  the exporter's own Q4_0/Q8_0 code): llama.cpp also rounds activations to 8 bits inside its quantized dot
  products, so this is not exact; the check is that llama.cpp is at least 4x closer to this reference than to
  the unquantized one and picks the same argmax at 95% of positions or more. A wrong block layout, scale or
  nibble order fails both.
Needs node and `npm install --prefix tools/llamacpp --omit=optional`. Exit 0 when every check passes, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_export as gx  # noqa: E402
from onnxmoe_ref import safetensors_io as st  # noqa: E402
from onnxmoe_ref.model import MoeForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
F32_TOLERANCE = 1e-4


def llama_logits(gguf: str, ids: List[int], threads: int, exact: bool) -> torch.Tensor:
    """exact: F32 KV cache and no flash attention; else llama.cpp's defaults."""
    cmd = ["node", os.path.join(HERE, "bench_llamacpp.mjs"), "logits", gguf, "--ids", ",".join(map(str, ids)),
           "--threads", str(threads)]
    if exact:
        cmd += ["--kv-type", "F32", "--flash-attention", "off"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return torch.tensor(json.loads(out)["logits"], dtype=torch.float32)


def reference(folder: str, weights: Dict[str, torch.Tensor], prompts: List[List[int]]) -> List[torch.Tensor]:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        model = MoeForCausalLM(json.load(f))
    model.load_hf_state_dict(weights)
    model.eval()
    with torch.no_grad():
        return [model(torch.tensor([ids]))[0][0].float() for ids in prompts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="?", default=os.path.join(HERE, "..", "models", "tiny-mixtral"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    golden_path = os.path.join(args.checkpoint, "golden.safetensors")
    try:
        golden = st.load_file(golden_path)
        weights = {k: v.float() for k, v in st.load_checkpoint(args.checkpoint).items()}
    except (OSError, st.SafetensorsError) as e:
        print(f"gguf_check: error: {e}", file=sys.stderr)
        return 2
    n_prompts = len([k for k in golden if k.endswith(".input_ids")])
    prompts = [golden[f"prompt_{i}.input_ids"][0].tolist() for i in range(n_prompts)]
    float_ref = [golden[f"prompt_{i}.logits"][0].float() for i in range(n_prompts)]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for qtype in ("f32", "q4_0"):
            files[qtype] = os.path.join(tmp, f"{qtype}.gguf")
            gx.export(args.checkpoint, files[qtype], qtype, log=lambda m: None)

        for exact in (True, False):
            worst, agree, total = 0.0, 0, 0
            for ids, ref in zip(prompts, float_ref):
                got = llama_logits(files["f32"], ids, args.threads, exact)
                worst = max(worst, (got - ref).abs().max().item())
                agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
                total += len(ids)
            passed = worst <= F32_TOLERANCE and agree == total
            label = "f32 GGUF, " + ("F32 KV cache, no flash attention" if exact else "llama.cpp defaults")
            verdict = ("PASS" if passed else "FAIL") if exact else "info"
            bound = f" (tolerance {F32_TOLERANCE:g})" if exact else ""
            print(f"{label}: max |logit - golden| = {worst:.2e}{bound}, argmax equal at {agree}/{total} positions [{verdict}]")
            ok &= passed or not exact

        _, _, tensors = gx.plan(args.checkpoint, "q4_0")
        stored = dict(weights)
        for t in tensors:
            for name in t.sources:
                stored[name] = gx.dequantized(weights[name], t.ggml_type)
        quant_ref = reference(args.checkpoint, stored, prompts)
        to_quant, to_float, agree, total = 0.0, 0.0, 0, 0
        for ids, qref, fref in zip(prompts, quant_ref, float_ref):
            got = llama_logits(files["q4_0"], ids, args.threads, True)
            to_quant = max(to_quant, (got - qref).abs().max().item())
            to_float = max(to_float, (got - fref).abs().max().item())
            agree += int((got.argmax(-1) == qref.argmax(-1)).sum())
            total += len(ids)
        passed = to_quant * 4 <= to_float and agree >= 0.95 * total
        print(f"q4_0 GGUF, F32 KV cache, no flash attention: max |logit - reference on the stored weights| = {to_quant:.2e}, "
              f"vs the unquantized reference {to_float:.2e}; argmax equal at {agree}/{total} positions "
              f"[{'PASS' if passed else 'FAIL'}]")
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
