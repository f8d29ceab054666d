"""Gives a checkpoint real-LLM-like activation outliers by a function-preserving rescale.

    /usr/bin/python3 tools/make_outliers.py SRC DST --channels N --scale S [--seed K]

For N hidden channels c (drawn from --seed, the same channels in every layer, as real LLMs have
them), every RMSNorm weight's entry c is multiplied by S and input column c of every linear that
reads that norm's output is divided by S:
  input_layernorm          -> q_proj, k_proj, v_proj
  post_attention_layernorm -> router gate, each expert's gate/up projection, the shared expert's
                              gate/up projection and Qwen2-MoE's shared_expert_gate (dense MLP
                              layers: gate_proj, up_proj)
  model.norm               -> lm_head (left alone when lm_head is tied to the embedding: dividing
                              the shared matrix would change the embedding too)
RMSNorm is x * rsqrt(mean(x^2) + eps) * w, so its output channel c grows by S and the linear sees
the same product: the float function is unchanged up to fp32 rounding (exactly, when S is a power
of two). DST is written in float32 with SRC's config, tokenizer and generation files and an
outliers.json naming the channels and the scale.

It prints, per layer, the outlier ratio of each norm's output (max channel RMS / median channel
RMS over a few calibration sequences) before and after, and the largest logit difference between
SRC (upcast to fp32) and DST on held-out text, which must stay within --tolerance (relative to the
largest logit) or the tool exits 1 without writing DST.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnxmoe_ref import MoeForCausalLM  # noqa: E402
from onnxmoe_ref import safetensors_io as st  # noqa: E402
from onnxmoe_ref.families import ArchSpec, spec_from_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALIBRATION_TEXT = os.path.join(ROOT, "models", "data", "kjv-calibration.txt")
HELDOUT_TEXT = os.path.join(ROOT, "models", "data", "kjv-heldout.txt")
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json")


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit 1."""


def pick_channels(hidden: int, count: int, seed: int) -> List[int]:
    if not 1 <= count <= hidden // 2:
        raise UserError(f"--channels {count} must be in 1..{hidden // 2} (hidden size {hidden})")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(hidden, generator=g)[:count].tolist())


def norm_readers(spec: ArchSpec) -> List[Tuple[str, List[str]]]:
    """(norm weight name, names of the linear weights that read its output) for every RMSNorm over the hidden size."""
    groups = []
    for i in range(spec.num_layers):
        p = f"model.layers.{i}"
        groups.append((f"{p}.input_layernorm.weight",
                       [f"{p}.self_attn.{n}_proj.weight" for n in ("q", "k", "v")]))
        if spec.moe_layers[i]:
            m = f"{p}.{spec.moe_prefix}"
            readers = [f"{m}.gate.weight"]
            readers += [f"{m}.experts.{e}.{n}.weight" for e in range(spec.num_experts) for n in spec.expert_proj[:2]]
            if spec.shared_intermediate:
                readers += [f"{m}.{spec.shared_name}.{n}.weight" for n in ("gate_proj", "up_proj")]
            if spec.shared_gate:
                readers.append(f"{m}.shared_expert_gate.weight")
        else:
            readers = [f"{p}.mlp.{n}.weight" for n in ("gate_proj", "up_proj")]
        groups.append((f"{p}.post_attention_layernorm.weight", readers))
    if not spec.tie_word_embeddings:
        groups.append(("model.norm.weight", ["lm_head.weight"]))
    return groups


def rescale(tensors: Dict[str, torch.Tensor], spec: ArchSpec, channels: Sequence[int], scale: float,
            skip: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """fp32 copy of the checkpoint with the outlier rescale applied. `skip` names readers left
    uncompensated (only for tests that show the preservation check catches a missed reader)."""
    if not scale > 0 or scale != scale or scale == float("inf"):
        raise UserError(f"--scale {scale} must be a positive finite number")
    out = {k: v.float().clone() for k, v in tensors.items()}
    idx = torch.tensor(list(channels), dtype=torch.int64)
    for norm, readers in norm_readers(spec):
        for name in [norm] + readers:
            if name not in out:
                raise UserError(f"checkpoint has no tensor {name}")
        out[norm][idx] *= scale
        for r in readers:
            if r not in skip:
                out[r][:, idx] /= scale
    return out


def build_model(config: dict, tensors: Dict[str, torch.Tensor]) -> MoeForCausalLM:
    model = MoeForCausalLM(config)
    model.load_hf_state_dict({k: v.float() for k, v in tensors.items()})
    model.eval()
    return model


def token_windows(folder: str, vocab: int, text_path: str, count: int, length: int, seed: int) -> List[List[int]]:
    """`count` consecutive windows of `length` tokens of the text, tokenized with the folder's tokenizer;
    a folder without tokenizer.json (the random test checkpoints) gets random ids from `seed`."""
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        import bpe
        tok = bpe.Tokenizer.load(folder)
        need = count * length
        ids: List[int] = []
        with open(text_path, encoding="utf-8") as f:
            for line in f:
                ids += tok.encode(line.rstrip("\n") + "\n", add_special_tokens=False)
                if len(ids) >= need:
                    break
        if len(ids) < need:
            raise UserError(f"{text_path}: only {len(ids)} tokens, {need} needed")
        ids = [i for i in ids[:need]]
    else:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab, (count * length,), generator=g).tolist()
    return [ids[k * length:(k + 1) * length] for k in range(count)]


def outlier_ratios(model: MoeForCausalLM, windows: List[List[int]]) -> Dict[str, float]:
    """Norm name -> max channel RMS / median channel RMS of that norm's output over all window tokens."""
    sums: Dict[str, torch.Tensor] = {}
    count = [0]
    hooks = []
    norms = [(f"model.layers.{i}.{n}", getattr(layer, n)) for i, layer in enumerate(model.model.layers)
             for n in ("input_layernorm", "post_attention_layernorm")] + [("model.norm", model.model.norm)]

    def hook(name):
        def fn(_module, _inputs, y):
            sq = y.detach().float().reshape(-1, y.shape[-1]).pow(2).sum(0)
            sums[name] = sums[name] + sq if name in sums else sq
        return fn

    for name, module in norms:
        hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            for ids in windows:
                model(torch.tensor([ids], dtype=torch.int64))
                count[0] += len(ids)
    finally:
        for h in hooks:
            h.remove()
    ratios = {}
    for name, _ in norms:
        rms = (sums[name] / count[0]).sqrt()
        ratios[name] = float(rms.max() / rms.median())
    return ratios


def max_logit_diff(a: MoeForCausalLM, b: MoeForCausalLM, windows: List[List[int]]) -> Tuple[float, float]:
    """(max |logit difference|, max |logit| of a) over the windows."""
    diff, peak = 0.0, 0.0
    with torch.no_grad():
        for ids in windows:
            x = torch.tensor([ids], dtype=torch.int64)
            la, lb = a(x)[0], b(x)[0]
            diff = max(diff, float((la - lb).abs().max()))
            peak = max(peak, float(la.abs().max()))
    return diff, peak


def read_checkpoint(folder: str) -> Tuple[dict, Dict[str, torch.Tensor]]:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found (SRC must be a Hugging Face checkpoint folder)")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        spec_from_config(config)
    except (ValueError, KeyError) as e:
        raise UserError(f"{path}: {e}") from e
    try:
        tensors = st.load_checkpoint(folder)
    except (st.SafetensorsError, OSError) as e:
        raise UserError(f"{folder}: {e}") from e
    return config, tensors


def write_checkpoint(dst: str, src: str, config: dict, tensors: Dict[str, torch.Tensor], meta: dict) -> None:
    """Writes DST next to its final place and renames it when complete."""
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".outliers-", dir=parent)
    try:
        st.save_checkpoint(tensors, tmp, 1)
        cfg = dict(config)
        cfg["torch_dtype"] = "float32"
        st.write_json(os.path.join(tmp, "config.json"), cfg)
        for name in COPIED_FILES:
            if os.path.exists(os.path.join(src, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
        st.write_json(os.path.join(tmp, "outliers.json"), meta)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run(src: str, dst: str, channels: int, scale: float, seed: int, windows: int, seq_len: int,
        tolerance: float) -> dict:
    torch.manual_seed(0)
    config, tensors = read_checkpoint(src)
    spec = spec_from_config(config)
    chosen = pick_channels(spec.hidden_size, channels, seed)
    new = rescale(tensors, spec, chosen, scale)
    before, after = build_model(config, tensors), build_model(config, new)

    calib = token_windows(src, spec.vocab_size, CALIBRATION_TEXT, windows, seq_len, seed + 1)
    r0, r1 = outlier_ratios(before, calib), outlier_ratios(after, calib)
    held = token_windows(src, spec.vocab_size, HELDOUT_TEXT, windows, seq_len, seed + 2)
    diff, peak = max_logit_diff(before, after, held)
    rel = diff / peak
    print(f"{src} -> {dst}: channels {chosen} x {scale:g} (seed {seed})"
          + ("; model.norm left alone: lm_head is tied to the embedding" if spec.tie_word_embeddings else ""))
    print(f"outlier ratio (max / median channel RMS of the norm output, {windows} x {seq_len} calibration tokens)")
    print(f"{'norm':<44} {'before':>9} {'after':>9}")
    for name in r0:
        print(f"{name:<44} {r0[name]:9.2f} {r1[name]:9.2f}")
    print(f"max |logit diff| on {windows} x {seq_len} held-out tokens: {diff:.3e} "
          f"(max |logit| {peak:.2f}, relative {rel:.2e}, tolerance {tolerance:g})")
    if not rel <= tolerance:
        raise UserError(f"{dst}: not written: the rescale changed the logits by {rel:.2e} of the largest "
                        f"logit, above the tolerance {tolerance:g}")
    meta = {"source": os.path.basename(os.path.normpath(src)), "channels": chosen, "scale": scale, "seed": seed,
            "generated_by": "tools/make_outliers.py",
            "ratio_before": {k: round(v, 4) for k, v in r0.items()},
            "ratio_after": {k: round(v, 4) for k, v in r1.items()},
            "max_abs_logit_diff": diff, "max_abs_logit": peak}
    write_checkpoint(dst, src, config, new, meta)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--channels", type=int, required=True, help="hidden channels made outliers")
    ap.add_argument("--scale", type=float, required=True, help="factor on those channels' norm weights")
    ap.add_argument("--seed", type=int, default=0, help="picks the channels (default 0)")
    ap.add_argument("--windows", type=int, default=4, help="calibration / held-out sequences measured (default 4)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest logit difference allowed, relative to the largest logit (default 1e-4)")
    args = ap.parse_args(argv)
    try:
        run(args.src, args.dst, args.channels, args.scale, args.seed, args.windows, args.seq_len, args.tolerance)
    except UserError as e:
        print(f"make_outliers: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
