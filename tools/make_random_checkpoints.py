#!/usr/bin/python3
"""Writes tiny random HF checkpoints of all five MoE families with golden fp32 logits.

    /usr/bin/python3 tools/make_random_checkpoints.py [--out tests/data/families]

Each folder <out>/<family>/ holds config.json, model.safetensors (or shards + index),
golden.safetensors (prompt_{i}.input_ids I64 [1, seq], prompt_{i}.logits F32 [1, seq, vocab])
and golden.json (description). Deterministic: seeded per family.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnxmoe_ref import MoeForCausalLM, golden_logits, load_pretrained, make_config, save_pretrained, write_golden  # noqa: E402

# family -> (config overrides, storage dtype, shards, seed)
FAMILIES = {
    # f32, sharded in 2 files, GQA 4:2, every layer MoE, top-2 renormalised
    "mixtral": (dict(vocab_size=160, num_hidden_layers=2, num_local_experts=8, num_experts_per_tok=2,
                     intermediate_size=24, rope_theta=1000000.0), torch.float32, 2, 101),
    # bf16; layer 0 dense (first_k_dense_replace=1), 2 shared experts, top-3 of 8, no renormalisation
    "deepseek": (dict(vocab_size=128, num_hidden_layers=3, num_key_value_heads=4, n_routed_experts=8,
                      num_experts_per_tok=3, n_shared_experts=2, first_k_dense_replace=1,
                      moe_layer_freq=1, norm_topk_prob=False, bos_token_id=0, eos_token_id=1),
                 torch.bfloat16, 1, 102),
    # fp16; q/k/v bias; decoder_sparse_step=2 -> layers 1 and 3 MoE, 0 and 2 dense; gated shared expert
    "qwen2_moe": (dict(vocab_size=192, num_hidden_layers=4, decoder_sparse_step=2, num_experts=6,
                       num_experts_per_tok=2, norm_topk_prob=False, rope_theta=1000000.0),
                  torch.float16, 1, 103),
    # f32; tied embeddings; head_dim 16 with 6 heads (q width 96 != hidden 64); per-head q/k norm;
    # mlp_only_layers=[1] -> layer 1 dense
    "qwen3_moe": (dict(vocab_size=256, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                       head_dim=16, mlp_only_layers=[1], moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                       norm_topk_prob=True, tie_word_embeddings=True), torch.float32, 1, 104),
    # f32; full-width q/k norm (k_norm width = kv_heads * head_dim), top-2 of 8 without renormalisation
    "olmoe": (dict(vocab_size=200, num_hidden_layers=2, intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                   norm_topk_prob=False), torch.float32, 1, 105),
}

PROMPT_LENGTHS = (5, 13, 29)


def init_random(model: MoeForCausalLM, seed: int) -> None:
    """Scaled so that activations stay O(1), logits have std ~1-2 and routing is visibly diverse."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):                 # all RMSNorm weights, incl. q_norm/k_norm
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # a tied embedding doubles as lm_head: scale it like one
                std = 2.0 / math.sqrt(p.shape[1]) if model.spec.tie_word_embeddings else 1.0
                p.copy_(std * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[1]
                gain = 2.0 if (name.endswith("gate.weight") or name == "lm_head.weight") else 1.0
                p.copy_(gain / math.sqrt(fan_in) * torch.randn(p.shape, generator=g))


def expert_usage(model: MoeForCausalLM, prompts):
    """Per MoE layer: how many (token, slot) assignments each expert gets over all prompts."""
    counts = None
    with torch.no_grad():
        for ids in prompts:
            _, routers = model(torch.tensor([ids]))
            per = []
            for logits in routers:
                top = torch.topk(torch.softmax(logits.float(), -1), model.spec.top_k, -1).indices
                per.append(torch.bincount(top.flatten(), minlength=model.spec.num_experts))
            counts = per if counts is None else [a + b for a, b in zip(counts, per)]
    return [c.tolist() for c in counts]


def make_family(family: str, out_root: str) -> str:
    overrides, dtype, shards, seed = FAMILIES[family]
    torch.manual_seed(seed)
    cfg = make_config(family, **overrides)
    model = MoeForCausalLM(cfg)
    init_random(model, seed)
    folder = os.path.join(out_root, family)
    save_pretrained(model, folder, dtype=dtype, shards=shards)

    # Golden logits come from the checkpoint as stored (bf16/fp16 weights upcast to fp32).
    ref = load_pretrained(folder)
    g = torch.Generator().manual_seed(seed + 1000)
    prompts = [torch.randint(0, cfg["vocab_size"], (n,), generator=g).tolist() for n in PROMPT_LENGTHS]
    logits = golden_logits(ref, prompts)
    s = ref.spec
    desc = {
        "family": family,
        "architecture": cfg["architectures"][0],
        "weights_dtype": {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[dtype],
        "sharded": shards > 1,
        "tie_word_embeddings": s.tie_word_embeddings,
        "moe_layers": [i for i, m in enumerate(s.moe_layers) if m],
        "dense_layers": [i for i, m in enumerate(s.moe_layers) if not m],
        "generated_by": "tools/make_random_checkpoints.py (reference forward tools/onnxmoe_ref)",
        "compute": "fp32: stored weights upcast to fp32, every op in fp32; batch 1, position_ids 0..seq-1, "
                   "no padding, causal attention",
        "tensors": "prompt_{i}.input_ids I64 [1, seq]; prompt_{i}.logits F32 [1, seq, vocab]",
        "tolerance_hint": {"fp32_artifact_max_abs": 1e-4, "fp16_artifact_max_abs": 2e-2},
        "prompts": [{"name": f"prompt_{i}", "length": len(p), "input_ids": p,
                     "argmax_last": int(lg[0, -1].argmax()),
                     "logits_std": round(float(lg.std()), 4)} for i, (p, lg) in enumerate(zip(prompts, logits))],
        "expert_usage_per_moe_layer": expert_usage(ref, prompts),
    }
    write_golden(folder, prompts, logits, desc)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/data/families")
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES), help="only these (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    for family in args.family or sorted(FAMILIES):
        folder = make_family(family, args.out)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"{family:10s} -> {folder} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
