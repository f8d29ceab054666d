"""Readable torch reference forward for the five HF MoE families.

The module tree mirrors the HF one, so `state_dict()` names are the HF checkpoint names
(model.layers.{i}.self_attn.q_proj.weight, ...). The same module is used for training
(tools/train_tiny.py) and for golden logits. For golden logits all weights are upcast to fp32
and every step is computed in fp32.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .families import ArchSpec, spec_from_config
from . import safetensors_io as st


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * w, computed in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [seq, head_dim] for rotate-half RoPE (the two halves share frequencies)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, s: ArchSpec):
        super().__init__()
        self.s = s
        q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        self.q_proj = nn.Linear(s.hidden_size, q_dim, bias=s.qkv_bias)
        self.k_proj = nn.Linear(s.hidden_size, kv_dim, bias=s.qkv_bias)
        self.v_proj = nn.Linear(s.hidden_size, kv_dim, bias=s.qkv_bias)
        self.o_proj = nn.Linear(q_dim, s.hidden_size, bias=False)
        if s.qk_norm == "per_head":      # Qwen3-MoE: RMSNorm over head_dim, per head
            self.q_norm = RMSNorm(s.head_dim, s.rms_norm_eps)
            self.k_norm = RMSNorm(s.head_dim, s.rms_norm_eps)
        elif s.qk_norm == "full":        # OLMoE: RMSNorm over the whole q / k projection
            self.q_norm = RMSNorm(q_dim, s.rms_norm_eps)
            self.k_norm = RMSNorm(kv_dim, s.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s = self.s
        B, S, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if s.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        if s.clip_qkv is not None:
            c = float(s.clip_qkv)
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q = q.view(B, S, s.num_heads, s.head_dim)
        k = k.view(B, S, s.num_kv_heads, s.head_dim)
        v = v.view(B, S, s.num_kv_heads, s.head_dim)
        if s.qk_norm == "per_head":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)   # [B, heads, S, hd]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = s.num_heads // s.num_kv_heads    # GQA: kv head j serves query heads j*g .. j*g+g-1
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(s.head_dim)
        causal = torch.ones(S, S, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (probs @ v).transpose(1, 2).reshape(B, S, s.num_heads * s.head_dim)
        return self.o_proj(out)


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)); the three projections carry the family's names."""

    def __init__(self, hidden: int, inter: int, names=("gate_proj", "up_proj", "down_proj")):
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Linear(hidden, inter, bias=False))
        setattr(self, names[1], nn.Linear(hidden, inter, bias=False))
        setattr(self, names[2], nn.Linear(inter, hidden, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u, d = (getattr(self, n) for n in self.names)
        return d(F.silu(g(x)) * u(x))


class SparseMoe(nn.Module):
    """Router (softmax in fp32, top-k, optional renormalisation) + routed SwiGLU experts
    (+ shared experts, optionally sigmoid-gated)."""

    def __init__(self, s: ArchSpec):
        super().__init__()
        self.s = s
        self.gate = nn.Linear(s.hidden_size, s.num_experts, bias=False)
        self.experts = nn.ModuleList(
            GatedMLP(s.hidden_size, s.expert_intermediate, s.expert_proj) for _ in range(s.num_experts))
        if s.shared_intermediate:
            setattr(self, s.shared_name, GatedMLP(s.hidden_size, s.shared_intermediate))
            if s.shared_gate:
                self.shared_expert_gate = nn.Linear(s.hidden_size, 1, bias=False)

    def route(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [T, H] -> (router logits [T, E], top-k weights [T, k], top-k expert ids [T, k])."""
        logits = self.gate(x)
        probs = torch.softmax(logits.float(), dim=-1)
        weights, ids = torch.topk(probs, self.s.top_k, dim=-1)
        if self.s.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, weights.to(x.dtype), ids

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits, weights, ids = self.route(x)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (ids == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y = expert(x[tok]) * weights[tok, slot, None]
            out = out.index_add(0, tok, y)
        if self.s.shared_intermediate:
            shared = getattr(self, self.s.shared_name)(x)
            if self.s.shared_gate:
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared
            out = out + shared
        return out.reshape(shape), logits


class DecoderLayer(nn.Module):
    def __init__(self, s: ArchSpec, i: int):
        super().__init__()
        self.is_moe = s.moe_layers[i]
        self.ffn_name = s.moe_prefix if self.is_moe else "mlp"
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.self_attn = Attention(s)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        if self.is_moe:
            setattr(self, self.ffn_name, SparseMoe(s))
        else:
            setattr(self, self.ffn_name, GatedMLP(s.hidden_size, s.dense_intermediate))

    def forward(self, h, cos, sin):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        ffn = getattr(self, self.ffn_name)
        y = ffn(self.post_attention_layernorm(h))
        router_logits = None
        if self.is_moe:
            y, router_logits = y
        return h + y, router_logits


class Backbone(nn.Module):
    def __init__(self, s: ArchSpec):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(s, i) for i in range(s.num_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps)


class MoeForCausalLM(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.spec = spec_from_config(config)
        s = self.spec
        self.model = Backbone(s)
        self.lm_head = nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        if s.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, position_offset: int = 0,
                hidden_out: Optional[List[torch.Tensor]] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """input_ids [B, S] -> (logits [B, S, V], router logits of each MoE layer [B*S, E]).
        hidden_out, when given, receives the residual stream entering every layer and the final one."""
        s = self.spec
        S = input_ids.shape[1]
        cos, sin = rope_cos_sin(torch.arange(position_offset, position_offset + S), s.head_dim, s.rope_theta)
        h = self.model.embed_tokens(input_ids)
        routers = []
        for layer in self.model.layers:
            if hidden_out is not None:
                hidden_out.append(h)
            h, r = layer(h, cos.to(h.dtype), sin.to(h.dtype))
            if r is not None:
                routers.append(r)
        if hidden_out is not None:
            hidden_out.append(h)
        return self.lm_head(self.model.norm(h)), routers

    # ---- HF checkpoint I/O -------------------------------------------------------------------
    def hf_state_dict(self) -> Dict[str, torch.Tensor]:
        sd = {k: v.detach() for k, v in self.state_dict().items()}
        if self.spec.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return sd

    def load_hf_state_dict(self, tensors: Dict[str, torch.Tensor]) -> None:
        expected = set(self.hf_state_dict())
        got = set(tensors)
        if expected != got:
            raise ValueError(f"checkpoint tensors differ: missing {sorted(expected - got)[:5]}, "
                             f"unexpected {sorted(got - expected)[:5]}")
        own = self.state_dict()
        with torch.no_grad():
            for name, t in tensors.items():
                if tuple(own[name].shape) != tuple(t.shape):
                    raise ValueError(f"tensor {name}: shape {tuple(t.shape)}, expected {tuple(own[name].shape)}")
                own[name].copy_(t.to(own[name].dtype))


def moe_aux_loss(router_logits: List[torch.Tensor], top_k: int) -> torch.Tensor:
    """Switch-style load-balancing loss averaged over MoE layers: E * sum_e f_e * P_e, where f_e is
    the fraction of top-k assignments that go to expert e and P_e the mean router probability.
    Equals 1 for perfectly balanced routing."""
    losses = []
    for logits in router_logits:
        E = logits.shape[-1]
        probs = torch.softmax(logits.float(), dim=-1)
        ids = torch.topk(probs, top_k, dim=-1).indices
        f = F.one_hot(ids, E).float().mean(dim=(0, 1))
        losses.append(E * (f * probs.mean(0)).sum())
    return torch.stack(losses).mean() if losses else torch.zeros(())


def save_pretrained(model: MoeForCausalLM, folder: str, dtype: torch.dtype = torch.float32,
                    shards: int = 1) -> None:
    """config.json + model.safetensors (or shards + index) in `dtype`."""
    os.makedirs(folder, exist_ok=True)
    cfg = dict(model.config)
    cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    tensors = {k: v.to(dtype) for k, v in model.hf_state_dict().items()}
    index = os.path.join(folder, "model.safetensors.index.json")
    for stale in ("model.safetensors", "model.safetensors.index.json"):
        if os.path.exists(os.path.join(folder, stale)):
            os.remove(os.path.join(folder, stale))
    st.save_checkpoint(tensors, folder, shards)
    st.write_json(os.path.join(folder, "config.json"), cfg)


def load_pretrained(folder: str) -> MoeForCausalLM:
    """Loads an HF folder; weights are upcast to fp32 (the reference computes in fp32)."""
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    model = MoeForCausalLM(cfg)
    model.load_hf_state_dict({k: v.float() for k, v in st.load_checkpoint(folder).items()})
    model.eval()
    return model


def golden_logits(model: MoeForCausalLM, prompts: List[List[int]]) -> List[torch.Tensor]:
    """fp32 logits [1, seq, vocab] for each prompt (batch 1, positions 0..seq-1)."""
    out = []
    with torch.no_grad():
        for ids in prompts:
            logits, _ = model(torch.tensor([ids], dtype=torch.int64))
            out.append(logits.float().contiguous())
    return out


def write_golden(folder: str, prompts: List[List[int]], logits: List[torch.Tensor], description: dict) -> None:
    tensors = {}
    for i, (ids, lg) in enumerate(zip(prompts, logits)):
        tensors[f"prompt_{i}.input_ids"] = torch.tensor([ids], dtype=torch.int64)
        tensors[f"prompt_{i}.logits"] = lg
    st.save_file(tensors, os.path.join(folder, "golden.safetensors"), {"format": "pt"})
    st.write_json(os.path.join(folder, "golden.json"), description)
