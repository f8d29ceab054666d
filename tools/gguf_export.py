"""Converts a Mixtral-family HF checkpoint (config.json + safetensors) into a GGUF v3 file for llama.cpp.

A measuring tool (tools/bench-peer.sh runs llama.cpp on the same weights as our artifacts), not part
of onnxmoe. The file uses llama.cpp's `llama` architecture with the experts stacked per layer
(blk.N.ffn_{gate,up,down}_exps), as llama.cpp's own converter writes Mixtral.

  /usr/bin/python3 tools/gguf_export.py CHECKPOINT -o OUT.gguf [--type f32|q4_0]

Tensor types:
  f32   every tensor F32 (bf16/fp16 weights are upcast exactly).
  q4_0  llama.cpp's Q4_0 mix (llama-quantize ... Q4_0): matrices Q4_0, router (ffn_gate_inp) and norms
        F32; with 8 experts attn_k/attn_v Q8_0 (llama.cpp's rule for 8-expert models); output Q8_0
        where llama.cpp picks Q6_K (Q8_0 when the row length is not a multiple of 256): Q6_K's
        super-blocks are not written here, and the output matrix is a small part of the bytes.

q/k projection rows are permuted from HF's rotate-half RoPE layout to GGUF's interleaved pairs.
Reads one tensor at a time; writes OUT through a temporary file renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnxmoe_ref import safetensors_io as st  # noqa: E402
from onnxmoe_ref.families import spec_from_config  # noqa: E402

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

# GGUF metadata value types
_U32, _I32, _F32, _BOOL, _STRING, _ARRAY = 4, 5, 6, 7, 8, 9

# ggml tensor types
F32, Q4_0, Q8_0 = 0, 2, 8
TYPE_NAMES = {F32: "f32", Q4_0: "q4_0", Q8_0: "q8_0"}
FILE_TYPE = {"f32": 0, "q4_0": 2}  # llama_ftype: ALL_F32, MOSTLY_Q4_0
QK = 32  # elements per Q4_0 / Q8_0 block

# llama.cpp token types
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 5, 6


class ExportError(ValueError):
    """A problem with the input; the message names the file."""


def quantize_q4_0(x: torch.Tensor) -> Tuple[np.ndarray, torch.Tensor]:
    """ggml's reference Q4_0 of rows (length a multiple of 32): blocks of 32, fp16 d = (signed
    max-magnitude value) / -8, codes min(15, floor(x / d + 8.5)); byte j holds element j in the low
    nibble and element j + 16 in the high nibble. Returns (18-byte blocks, dequantized values)."""
    b = x.reshape(-1, QK).float()
    mx = b.gather(1, b.abs().argmax(dim=1, keepdim=True))  # first element of largest magnitude
    d = mx / -8
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.clamp(torch.floor(b * inv + 8.5), 0, 15).to(torch.uint8)
    blocks = np.empty((b.shape[0], 2 + QK // 2), dtype=np.uint8)
    d16 = d.squeeze(1).half()
    blocks[:, :2] = d16.numpy().view(np.uint8).reshape(-1, 2)
    blocks[:, 2:] = (q[:, : QK // 2] | (q[:, QK // 2:] << 4)).numpy()
    deq = (q.float() - 8) * d16.float()[:, None]
    return blocks, deq.reshape(x.shape)


def quantize_q8_0(x: torch.Tensor) -> Tuple[np.ndarray, torch.Tensor]:
    """ggml's reference Q8_0: blocks of 32, fp16 d = max|x| / 127, codes round-half-away(x / d) as int8."""
    b = x.reshape(-1, QK).float()
    d = b.abs().amax(dim=1, keepdim=True) / 127
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    v = b * inv
    q = (torch.sign(v) * torch.floor(v.abs() + 0.5)).to(torch.int8)
    blocks = np.empty((b.shape[0], 2 + QK), dtype=np.uint8)
    d16 = d.squeeze(1).half()
    blocks[:, :2] = d16.numpy().view(np.uint8).reshape(-1, 2)
    blocks[:, 2:] = q.numpy().view(np.uint8)
    deq = q.float() * d16.float()[:, None]
    return blocks, deq.reshape(x.shape)


def encode(x: torch.Tensor, ggml_type: int) -> bytes:
    if ggml_type == F32:
        return x.float().contiguous().numpy().astype("<f4").tobytes()
    if ggml_type == Q4_0:
        return quantize_q4_0(x)[0].tobytes()
    if ggml_type == Q8_0:
        return quantize_q8_0(x)[0].tobytes()
    raise ValueError(f"unsupported ggml type {ggml_type}")


def dequantized(x: torch.Tensor, ggml_type: int) -> torch.Tensor:
    """The values llama.cpp reads back for x stored as ggml_type (tools/gguf_check.py uses this)."""
    if ggml_type == F32:
        return x.float()
    return (quantize_q4_0 if ggml_type == Q4_0 else quantize_q8_0)(x)[1]


def nbytes(ne: List[int], ggml_type: int) -> int:
    n = 1
    for d in ne:
        n *= d
    if ggml_type == F32:
        return 4 * n
    return n // QK * (2 + (QK // 2 if ggml_type == Q4_0 else QK))


def permute_rope_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF rotate-half rows (dim i pairs with i + d/2 in each head) -> GGUF's interleaved pairs (2i, 2i+1)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


@dataclass
class PlannedTensor:
    name: str
    ne: List[int]          # ggml order: ne[0] is the contiguous (input) dimension
    ggml_type: int
    sources: List[str]     # checkpoint tensors, row-major pieces concatenated in order (one per expert)
    rope_heads: int = 0    # > 0: rows permuted from HF's RoPE layout with this many heads

    @property
    def nbytes(self) -> int:
        return nbytes(self.ne, self.ggml_type)

    def parts(self, index) -> Iterator[torch.Tensor]:
        for name in self.sources:
            t = st.read_tensor(index[name])
            yield permute_rope_rows(t, self.rope_heads) if self.rope_heads else t


def _gguf_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, vtype: int, value) -> bytes:
    out = _gguf_str(key) + struct.pack("<I", vtype)
    if vtype == _U32:
        return out + struct.pack("<I", value)
    if vtype == _F32:
        return out + struct.pack("<f", value)
    if vtype == _BOOL:
        return out + struct.pack("<B", 1 if value else 0)
    if vtype == _STRING:
        return out + _gguf_str(value)
    raise ValueError(vtype)


def _kv_array(key: str, etype: int, values) -> bytes:
    out = _gguf_str(key) + struct.pack("<IIQ", _ARRAY, etype, len(values))
    if etype == _STRING:
        return out + b"".join(_gguf_str(v) for v in values)
    fmt = {_F32: "<f", _I32: "<i"}[etype]
    return out + b"".join(struct.pack(fmt, v) for v in values)


def read_vocab(folder: str, vocab_size: int) -> Tuple[List[str], List[float], List[int], str]:
    """Tokens, SentencePiece-style scores and llama.cpp token types for vocab_size ids, and where they came from.

    From tokenizer.json (BPE): score = -(rank of the merge that makes the token), so llama.cpp's
    score-ordered merging follows the BPE ranks. Ids past the tokenizer's vocabulary (a checkpoint
    whose embedding is larger) become unused placeholder tokens. Without tokenizer.json the whole
    vocabulary is a placeholder (<unk>, <s>, </s>, the 256 byte tokens, then <placeholder_N>): the
    ids are what the benchmarks feed, so only their count matters there.
    """
    path = os.path.join(folder, "tokenizer.json")
    tokens: List[Optional[str]] = [None] * vocab_size
    scores = [0.0] * vocab_size
    types = [TOKEN_UNUSED] * vocab_size
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            tok = json.load(f)
        model = tok.get("model") or {}
        if model.get("type") != "BPE":
            raise ExportError(f"{path}: only BPE tokenizers are converted (found {model.get('type')!r})")
        specials = {a["content"] for a in tok.get("added_tokens", []) if a.get("special")}
        ranks = {}
        for r, m in enumerate(model.get("merges", [])):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            ranks.setdefault(a + b, r)
        entries = dict(model["vocab"])
        for a in tok.get("added_tokens", []):
            entries[a["content"]] = a["id"]
        for text, i in entries.items():
            if i >= vocab_size:
                raise ExportError(f"{path}: token id {i} is outside the checkpoint's vocab_size {vocab_size}")
            tokens[i] = text
            if text == model.get("unk_token"):
                types[i] = TOKEN_UNKNOWN
            elif text in specials:
                types[i] = TOKEN_CONTROL
            elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                types[i] = TOKEN_BYTE
            else:
                types[i] = TOKEN_NORMAL
            scores[i] = -float(ranks[text]) - 1.0 if text in ranks else 0.0
        source = f"{len(entries)} tokens from tokenizer.json"
    else:
        base = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        for i, text in enumerate(base[:vocab_size]):
            tokens[i] = text
            types[i] = TOKEN_UNKNOWN if i == 0 else TOKEN_CONTROL if i < 3 else TOKEN_BYTE
        source = "no tokenizer.json"
    missing = [i for i in range(vocab_size) if tokens[i] is None]
    for i in missing:
        tokens[i] = f"<placeholder_{i}>"
    if missing:
        source += f", {len(missing)} placeholder tokens"
    return tokens, scores, types, source


def plan(folder: str, qtype: str) -> Tuple[dict, dict, List[PlannedTensor]]:
    """(config.json, checkpoint index, the GGUF tensors in file order); checks every source tensor's shape."""
    cfg_path = os.path.join(folder, "config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{cfg_path}: cannot read ({e})") from e
    try:
        spec = spec_from_config(cfg)
    except (ValueError, KeyError) as e:
        raise ExportError(f"{cfg_path}: {e}") from e
    if spec.family != "mixtral":
        raise ExportError(f"{cfg_path}: only MixtralForCausalLM converts to llama.cpp's llama architecture "
                          f"(found {cfg['architectures'][0]})")
    if spec.qkv_bias:
        raise ExportError(f"{cfg_path}: attention_bias is not supported")
    if spec.head_dim % 2:
        raise ExportError(f"{cfg_path}: head_dim {spec.head_dim} must be even for RoPE")
    if qtype == "q4_0":
        for what, n in (("hidden_size", spec.hidden_size), ("intermediate_size", spec.expert_intermediate)):
            if n % QK:
                raise ExportError(f"{cfg_path}: {what} {n} is not a multiple of {QK} (Q4_0 blocks)")
    try:
        index = st.checkpoint_index(folder)
    except (OSError, st.SafetensorsError, KeyError, json.JSONDecodeError) as e:
        raise ExportError(f"{folder}: cannot read the safetensors checkpoint ({e})") from e

    H, V, I, E = spec.hidden_size, spec.vocab_size, spec.expert_intermediate, spec.num_experts
    q_rows, kv_rows = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim

    def source(name: str, shape: List[int]) -> str:
        if name not in index:
            raise ExportError(f"{folder}: tensor {name} is missing from the checkpoint")
        path, entry, _ = index[name]
        if list(entry["shape"]) != shape:
            raise ExportError(f"{path}: tensor {name} has shape {entry['shape']}, config.json implies {shape}")
        return name

    def mat(default: int) -> int:
        return F32 if qtype == "f32" else default

    tensors: List[PlannedTensor] = [
        PlannedTensor("token_embd.weight", [H, V], mat(Q4_0), [source("model.embed_tokens.weight", [V, H])]),
        PlannedTensor("output_norm.weight", [H], F32, [source("model.norm.weight", [H])]),
    ]
    if not spec.tie_word_embeddings:  # tied: llama.cpp reads token_embd as the output matrix
        tensors.append(PlannedTensor("output.weight", [H, V], mat(Q8_0), [source("lm_head.weight", [V, H])]))
    kv_type = mat(Q8_0 if E == 8 else Q4_0)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        moe = p + "block_sparse_moe."
        tensors += [
            PlannedTensor(f"blk.{i}.attn_norm.weight", [H], F32, [source(p + "input_layernorm.weight", [H])]),
            PlannedTensor(f"blk.{i}.attn_q.weight", [H, q_rows], mat(Q4_0),
                          [source(p + "self_attn.q_proj.weight", [q_rows, H])], rope_heads=spec.num_heads),
            PlannedTensor(f"blk.{i}.attn_k.weight", [H, kv_rows], kv_type,
                          [source(p + "self_attn.k_proj.weight", [kv_rows, H])], rope_heads=spec.num_kv_heads),
            PlannedTensor(f"blk.{i}.attn_v.weight", [H, kv_rows], kv_type,
                          [source(p + "self_attn.v_proj.weight", [kv_rows, H])]),
            PlannedTensor(f"blk.{i}.attn_output.weight", [q_rows, H], mat(Q4_0),
                          [source(p + "self_attn.o_proj.weight", [H, q_rows])]),
            PlannedTensor(f"blk.{i}.ffn_norm.weight", [H], F32, [source(p + "post_attention_layernorm.weight", [H])]),
            PlannedTensor(f"blk.{i}.ffn_gate_inp.weight", [H, E], F32, [source(moe + "gate.weight", [E, H])]),
            PlannedTensor(f"blk.{i}.ffn_gate_exps.weight", [H, I, E], mat(Q4_0),
                          [source(moe + f"experts.{e}.w1.weight", [I, H]) for e in range(E)]),
            PlannedTensor(f"blk.{i}.ffn_down_exps.weight", [I, H, E], mat(Q4_0),
                          [source(moe + f"experts.{e}.w2.weight", [H, I]) for e in range(E)]),
            PlannedTensor(f"blk.{i}.ffn_up_exps.weight", [H, I, E], mat(Q4_0),
                          [source(moe + f"experts.{e}.w3.weight", [I, H]) for e in range(E)]),
        ]
    return cfg, index, tensors


def metadata(folder: str, cfg: dict, qtype: str) -> Tuple[bytes, str]:
    """The metadata key/value section (with its count) and where the vocabulary came from."""
    spec = spec_from_config(cfg)
    tokens, scores, types, vocab_source = read_vocab(folder, spec.vocab_size)
    a = "llama"
    kvs = [
        _kv("general.architecture", _STRING, a),
        _kv("general.name", _STRING, os.path.basename(os.path.normpath(folder))),
        _kv("general.file_type", _U32, FILE_TYPE[qtype]),
        _kv("general.alignment", _U32, ALIGNMENT),
        _kv(f"{a}.vocab_size", _U32, spec.vocab_size),
        _kv(f"{a}.context_length", _U32, int(cfg.get("max_position_embeddings", 4096))),
        _kv(f"{a}.embedding_length", _U32, spec.hidden_size),
        _kv(f"{a}.block_count", _U32, spec.num_layers),
        _kv(f"{a}.feed_forward_length", _U32, spec.expert_intermediate),
        _kv(f"{a}.attention.head_count", _U32, spec.num_heads),
        _kv(f"{a}.attention.head_count_kv", _U32, spec.num_kv_heads),
        _kv(f"{a}.attention.key_length", _U32, spec.head_dim),
        _kv(f"{a}.attention.value_length", _U32, spec.head_dim),
        _kv(f"{a}.rope.dimension_count", _U32, spec.head_dim),
        _kv(f"{a}.rope.freq_base", _F32, spec.rope_theta),
        _kv(f"{a}.attention.layer_norm_rms_epsilon", _F32, spec.rms_norm_eps),
        _kv(f"{a}.expert_count", _U32, spec.num_experts),
        _kv(f"{a}.expert_used_count", _U32, spec.top_k),
        _kv("tokenizer.ggml.model", _STRING, "llama"),
        _kv_array("tokenizer.ggml.tokens", _STRING, tokens),
        _kv_array("tokenizer.ggml.scores", _F32, scores),
        _kv_array("tokenizer.ggml.token_type", _I32, types),
        _kv("tokenizer.ggml.bos_token_id", _U32, int(cfg.get("bos_token_id", 1))),
        _kv("tokenizer.ggml.eos_token_id", _U32, int(cfg.get("eos_token_id", 2))),
        _kv("tokenizer.ggml.unknown_token_id", _U32, 0),
        _kv("tokenizer.ggml.add_bos_token", _BOOL, True),
        _kv("tokenizer.ggml.add_eos_token", _BOOL, False),
    ]
    if qtype != "f32":
        kvs.append(_kv("general.quantization_version", _U32, 2))
    return struct.pack("<Q", len(kvs)) + b"".join(kvs), vocab_source


def _pad(n: int) -> int:
    return (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT


def export(folder: str, out: str, qtype: str, log=print) -> None:
    cfg, index, tensors = plan(folder, qtype)
    kv_bytes, vocab_source = metadata(folder, cfg, qtype)
    infos = []
    offset = 0
    for t in tensors:
        infos.append(_gguf_str(t.name) + struct.pack("<I", len(t.ne)) + struct.pack(f"<{len(t.ne)}Q", *t.ne)
                     + struct.pack("<IQ", t.ggml_type, offset))
        offset += t.nbytes + _pad(t.nbytes)
    header = GGUF_MAGIC + struct.pack("<IQ", GGUF_VERSION, len(tensors)) + kv_bytes + b"".join(infos)
    header += b"\0" * _pad(len(header))
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for t in tensors:
                written = 0
                for part in t.parts(index):
                    data = encode(part, t.ggml_type)
                    f.write(data)
                    written += len(data)
                if written != t.nbytes:
                    raise ExportError(f"{folder}: {t.name} gave {written} bytes, expected {t.nbytes}")
                f.write(b"\0" * _pad(t.nbytes))
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    counts: Dict[str, int] = {}
    for t in tensors:
        counts[TYPE_NAMES[t.ggml_type]] = counts.get(TYPE_NAMES[t.ggml_type], 0) + 1
    log(f"wrote {out}: {len(tensors)} tensors ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}), "
        f"{os.path.getsize(out)} bytes; vocabulary: {vocab_source}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="HF checkpoint folder (config.json + safetensors)")
    ap.add_argument("-o", "--output", required=True, help="GGUF file to write")
    ap.add_argument("--type", choices=sorted(FILE_TYPE), default="f32")
    args = ap.parse_args(argv)
    try:
        export(args.checkpoint, args.output, args.type)
    except (ExportError, OSError, st.SafetensorsError) as e:
        print(f"gguf_export: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
