"""Reads a Hugging Face config.json of one of the five MoE families into one normalised ArchSpec.

The spec says, per family, which HF field names hold each quantity, which layers are MoE,
how routing weights are normalised, and how the weights are named in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

SUPPORTED = {
    "MixtralForCausalLM": "mixtral",
    "DeepseekForCausalLM": "deepseek",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "OlmoeForCausalLM": "olmoe",
}


@dataclass
class ArchSpec:
    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    qkv_bias: bool               # q/k/v projections carry a bias (o_proj never does here)
    qk_norm: Optional[str]       # None | "per_head" (Qwen3-MoE) | "full" (OLMoE)
    clip_qkv: Optional[float]    # OLMoE only
    num_experts: int
    top_k: int
    norm_topk_prob: bool
    expert_intermediate: int
    dense_intermediate: int      # width of dense (non-MoE) MLP layers
    moe_layers: List[bool]
    shared_intermediate: int     # 0 = no shared expert
    shared_gate: bool            # Qwen2-MoE: sigmoid(shared_expert_gate(x)) scales the shared expert
    # weight naming inside a decoder layer
    moe_prefix: str              # "block_sparse_moe" (Mixtral) or "mlp"
    expert_proj: tuple           # names of (gate, up, down) projections of one expert
    shared_name: str = ""        # "shared_experts" (DeepSeek) or "shared_expert" (Qwen2-MoE)
    extra: Dict[str, object] = field(default_factory=dict)


def _rope_theta(cfg: dict) -> float:
    if "rope_theta" in cfg:
        return float(cfg["rope_theta"])
    params = cfg.get("rope_parameters") or {}
    return float(params.get("rope_theta", 10000.0))


def spec_from_config(cfg: dict) -> ArchSpec:
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED:
        raise ValueError(f"config.json: unsupported architecture {arch!r}; supported: {', '.join(SUPPORTED)}")
    family = SUPPORTED[arch]
    H = int(cfg["hidden_size"])
    L = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or H // heads)
    common = dict(
        family=family, vocab_size=int(cfg["vocab_size"]), hidden_size=H, num_layers=L,
        num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=_rope_theta(cfg),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act {cfg.get('hidden_act')!r} is not supported (silu only)")

    if family == "mixtral":
        return ArchSpec(**common, qkv_bias=bool(cfg.get("attention_bias", False)), qk_norm=None, clip_qkv=None,
                        num_experts=int(cfg["num_local_experts"]), top_k=int(cfg["num_experts_per_tok"]),
                        norm_topk_prob=True, expert_intermediate=int(cfg["intermediate_size"]),
                        dense_intermediate=0, moe_layers=[True] * L, shared_intermediate=0, shared_gate=False,
                        moe_prefix="block_sparse_moe", expert_proj=("w1", "w3", "w2"))
    if family == "deepseek":
        n_routed = cfg.get("n_routed_experts")
        first_dense = int(cfg.get("first_k_dense_replace", 0))
        freq = int(cfg.get("moe_layer_freq", 1))
        moe = [n_routed is not None and i >= first_dense and i % freq == 0 for i in range(L)]
        if cfg.get("scoring_func", "softmax") != "softmax":
            raise ValueError("config.json: DeepSeek scoring_func other than softmax is not supported")
        moe_inter = int(cfg["moe_intermediate_size"])
        return ArchSpec(**common, qkv_bias=bool(cfg.get("attention_bias", False)), qk_norm=None, clip_qkv=None,
                        num_experts=int(n_routed or 0), top_k=int(cfg.get("num_experts_per_tok") or 0),
                        norm_topk_prob=bool(cfg.get("norm_topk_prob", False)), expert_intermediate=moe_inter,
                        dense_intermediate=int(cfg["intermediate_size"]), moe_layers=moe,
                        shared_intermediate=moe_inter * int(cfg.get("n_shared_experts") or 0), shared_gate=False,
                        moe_prefix="mlp", expert_proj=("gate_proj", "up_proj", "down_proj"),
                        shared_name="shared_experts")
    if family in ("qwen2_moe", "qwen3_moe"):
        step = int(cfg.get("decoder_sparse_step", 1))
        only_mlp = set(cfg.get("mlp_only_layers") or [])
        E = int(cfg["num_experts"])
        moe = [(i not in only_mlp) and E > 0 and (i + 1) % step == 0 for i in range(L)]
        if family == "qwen2_moe":
            bias = bool(cfg.get("qkv_bias", True))
            shared = int(cfg.get("shared_expert_intermediate_size", 0))
            qk_norm = None
        else:
            bias = bool(cfg.get("attention_bias", False))
            shared = 0
            qk_norm = "per_head"
        return ArchSpec(**common, qkv_bias=bias, qk_norm=qk_norm, clip_qkv=None,
                        num_experts=E, top_k=int(cfg["num_experts_per_tok"]),
                        norm_topk_prob=bool(cfg.get("norm_topk_prob", family == "qwen3_moe")),
                        expert_intermediate=int(cfg["moe_intermediate_size"]),
                        dense_intermediate=int(cfg["intermediate_size"]), moe_layers=moe,
                        shared_intermediate=shared, shared_gate=shared > 0,
                        moe_prefix="mlp", expert_proj=("gate_proj", "up_proj", "down_proj"),
                        shared_name="shared_expert" if shared > 0 else "")
    # olmoe
    if cfg.get("head_dim") not in (None, H // heads):
        raise ValueError("config.json: OLMoE derives head_dim from hidden_size / num_attention_heads")
    return ArchSpec(**common, qkv_bias=bool(cfg.get("attention_bias", False)), qk_norm="full",
                    clip_qkv=cfg.get("clip_qkv"), num_experts=int(cfg["num_experts"]),
                    top_k=int(cfg["num_experts_per_tok"]), norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
                    expert_intermediate=int(cfg["intermediate_size"]), dense_intermediate=0,
                    moe_layers=[True] * L, shared_intermediate=0, shared_gate=False,
                    moe_prefix="mlp", expert_proj=("gate_proj", "up_proj", "down_proj"))


def make_config(family: str, **kw) -> dict:
    """Builds a config.json dict with the family's real HF field names.

    Keyword arguments use the HF names and override the defaults below.
    """
    base = {
        "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 2048,
        "initializer_range": 0.02, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "use_cache": True, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    if family == "mixtral":
        base.update({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
                     "intermediate_size": 32, "num_local_experts": 8, "num_experts_per_tok": 2,
                     "router_aux_loss_coef": 0.02, "output_router_logits": False,
                     "router_jitter_noise": 0.0, "sliding_window": None, "rms_norm_eps": 1e-5})
    elif family == "deepseek":
        base.update({"architectures": ["DeepseekForCausalLM"], "model_type": "deepseek",
                     "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekConfig",
                                  "AutoModel": "modeling_deepseek.DeepseekModel",
                                  "AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM"},
                     "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 8,
                     "n_shared_experts": 2, "num_experts_per_tok": 3, "first_k_dense_replace": 1,
                     "moe_layer_freq": 1, "norm_topk_prob": False, "scoring_func": "softmax",
                     "aux_loss_alpha": 0.001, "seq_aux": True, "attention_bias": False,
                     "pretraining_tp": 1, "rope_scaling": None})
    elif family == "qwen2_moe":
        base.update({"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
                     "intermediate_size": 96, "moe_intermediate_size": 32, "num_experts": 8,
                     "num_experts_per_tok": 2, "shared_expert_intermediate_size": 64,
                     "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": False,
                     "router_aux_loss_coef": 0.001, "output_router_logits": False,
                     "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28})
    elif family == "qwen3_moe":
        base.update({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                     "head_dim": 16, "intermediate_size": 96, "moe_intermediate_size": 32, "num_experts": 8,
                     "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [],
                     "norm_topk_prob": True, "attention_bias": False, "router_aux_loss_coef": 0.001,
                     "output_router_logits": False, "use_sliding_window": False, "sliding_window": None,
                     "max_window_layers": 28, "rope_scaling": None})
    elif family == "olmoe":
        base.update({"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe",
                     "intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
                     "norm_topk_prob": False, "attention_bias": False, "clip_qkv": None,
                     "router_aux_loss_coef": 0.01, "output_router_logits": False,
                     "rms_norm_eps": 1e-5, "rope_scaling": None})
    else:
        raise ValueError(f"unknown family {family!r}")
    base.update(kw)
    return base
