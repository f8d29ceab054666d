#!/usr/bin/python3
"""Trains the MoE models in models/ from scratch: the tiny ones on the KJV text (Debian bible-kjv), small-mixtral on
the KJV plus WordNet glosses, GCIDE definitions and fortunes (tools/text_sources.py).

    /usr/bin/python3 tools/train_tiny.py data                 # models/data/kjv-*.txt splits + models/data/corpus/*.txt
    /usr/bin/python3 tools/train_tiny.py tokenizers           # tokenizer.json of every model (+ test tokenizer)
    /usr/bin/python3 tools/train_tiny.py tokenizers small-mixtral   # one model's tokenizer
    /usr/bin/python3 tools/train_tiny.py train tiny-mixtral   # or tiny-deepseek, small-mixtral; [--steps N]
    /usr/bin/python3 tools/train_tiny.py readme               # models/README.md from the training logs
    /usr/bin/python3 tools/train_tiny.py all                  # everything above, in order

Each model folder gets config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
tokenizer_golden.json, generation_config.json, golden.safetensors/golden.json (fixed prompts' ids and
fp32 logits of the reference forward on the weights as stored) and training_log.json.
Deterministic: fixed seeds, torch.use_deterministic_algorithms, a fixed thread count (--threads, recorded in the log).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import kjv_data  # noqa: E402
import text_sources  # noqa: E402
from onnxmoe_ref import MoeForCausalLM, golden_logits, load_pretrained, make_config, moe_aux_loss  # noqa: E402
from onnxmoe_ref import save_pretrained, write_golden  # noqa: E402
from onnxmoe_ref.safetensors_io import write_json  # noqa: E402

DATA = "models/data"
CORPUS = "models/data/corpus"   # the filtered training sources, one record a line (not committed: `data` writes them)
TEST_TOKENIZER = "tests/data/tokenizers/bytelevel-gpt2"
SEQ_LEN = 128
EVAL_SEQ_LEN = 256
GOLDEN_PROMPTS = ["In the beginning God created",
                  "And the LORD spake unto Moses, saying, Speak unto the children of Israel",
                  "Blessed are the poor in spirit: for theirs is the kingdom of heaven. Blessed are they that mourn"]
SAMPLE_PROMPTS = ["And God said,", "The LORD is my shepherd;", "Jesus answered and said unto them,"]

STEPS_SMALL = 1400  # 78 min wall measured on one core of the 2-core machine (3.3 s per step, 2.8 s CPU; the other core busy)
MODELS = {
    "tiny-mixtral": {
        "tokenizer": dict(style="sentencepiece", vocab_size=2048),
        "config": dict(family="mixtral", vocab_size=2048, hidden_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, intermediate_size=256,
                       num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=1024,
                       rope_theta=10000.0, bos_token_id=1, eos_token_id=2),
        "dtype": torch.bfloat16, "steps": 400, "batch": 8, "lr": 3e-3, "seed": 7,
    },
    "tiny-deepseek": {
        "tokenizer": dict(style="bytelevel", vocab_size=2048),
        "config": dict(family="deepseek", vocab_size=2048, hidden_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, intermediate_size=512,
                       moe_intermediate_size=64, n_routed_experts=16, num_experts_per_tok=4,
                       n_shared_experts=2, first_k_dense_replace=1, moe_layer_freq=1, norm_topk_prob=False,
                       max_position_embeddings=1024, rope_theta=10000.0),
        "dtype": torch.float32, "steps": 400, "batch": 8, "lr": 3e-3, "seed": 11,
    },
    "small-mixtral": {
        "tokenizer": dict(style="sentencepiece", vocab_size=4096),
        "config": dict(family="mixtral", vocab_size=4096, hidden_size=256, num_hidden_layers=8,
                       num_attention_heads=8, num_key_value_heads=4, intermediate_size=448,
                       num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=2048,
                       rope_theta=10000.0, bos_token_id=1, eos_token_id=2),
        "dtype": torch.bfloat16, "steps": STEPS_SMALL, "batch": 8, "seq_len": 256, "lr": 2e-3, "seed": 13,
        # Share of each batch's rows drawn from each source of models/data/corpus/ (KJV = the train books).
        "corpus": {"kjv": 0.5, "wordnet": 0.2, "gcide": 0.2, "fortunes": 0.1},
    },
}
AUX_COEF = 0.01


def setup_torch(threads: int = 1) -> None:
    # One thread by default: on a shared, loaded machine two BLAS threads spin and run slower.
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def stage_data() -> Dict[str, str]:
    paths = kjv_data.write_splits(DATA)
    for name, p in paths.items():
        print(f"{name:12s} {os.path.getsize(p) / 1024:8.0f} KiB  {p}")
    stage_corpus()
    return paths


def protected_text() -> str:
    """The text no model may train on: the held-out books (the built-in tasks come from them) and the calibration books."""
    return read("heldout") + read("calibration")


def stage_corpus() -> None:
    """models/data/corpus/<source>.txt: the KJV train books and the other sources, each without the records that share
    a run of text_sources.OVERLAP_WORDS words with the held-out or calibration books; then checks the result."""
    protected = text_sources.shingles(protected_text())
    raw = {"kjv": read("train").splitlines()}
    raw.update(text_sources.sources())
    os.makedirs(CORPUS, exist_ok=True)
    for name, lines in raw.items():
        kept, dropped = text_sources.filter_overlap(lines, protected)
        path = os.path.join(CORPUS, f"{name}.txt")
        with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(kept) + "\n")
        os.replace(path + ".tmp", path)
        print(f"corpus {name:9s} {len(kept):7d} records ({dropped} dropped: overlap with held-out/calibration) "
              f"{os.path.getsize(path) / 1024:8.0f} KiB  {path}")
    problems = corpus_overlap(read_corpus(list(raw)), protected_text())
    if problems:
        raise SystemExit(f"{CORPUS}: overlaps the held-out/calibration text: {problems[:3]}")


def corpus_overlap(corpus: Dict[str, str], protected: str) -> List[str]:
    """Problems found: a protected verse that is a training line, or a shared run of OVERLAP_WORDS words."""
    verses = {v.strip() for v in protected.splitlines() if v.strip()}
    shingles = text_sources.shingles(protected)
    problems = []
    for name, text in corpus.items():
        for line in text.splitlines():
            if line.strip() in verses:
                problems.append(f"{name}: verse {line.strip()[:60]!r}")
            elif text_sources.shingles(line) & shingles:
                problems.append(f"{name}: shares {text_sources.OVERLAP_WORDS} words with {line[:60]!r}")
    return problems


def read_corpus(sources: List[str]) -> Dict[str, str]:
    missing = [s for s in sources if not os.path.exists(os.path.join(CORPUS, f"{s}.txt"))]
    if missing:
        stage_corpus()
    out = {}
    for s in sources:
        with open(os.path.join(CORPUS, f"{s}.txt"), encoding="utf-8") as f:
            out[s] = f.read()
    return out


def training_text(name: str) -> Dict[str, str]:
    """source -> text a model trains on (and its tokenizer learns from)."""
    corpus = MODELS[name].get("corpus")
    return read_corpus(list(corpus)) if corpus else {"kjv": read("train")}


def read(name: str) -> str:
    path = os.path.join(DATA, f"kjv-{name}.txt")
    if not os.path.exists(path):
        stage_data()
    with open(path, encoding="utf-8") as f:
        return f.read()


def stage_tokenizers(only: str = "") -> None:
    for name, m in MODELS.items():
        if only and name != only:
            continue
        t0 = time.time()
        text = "\n".join(t.rstrip("\n") for t in training_text(name).values()) + "\n"
        tok = bpe.train(m["tokenizer"]["style"], text, m["tokenizer"]["vocab_size"])
        folder = os.path.join("models", name)
        tok.save(folder)
        bpe.write_golden(tok, folder)
        print(f"{name}: {tok.style} tokenizer, vocab {len(tok.vocab)} ({time.time() - t0:.1f}s)")
    if only:
        return
    tok = bpe.train("bytelevel", read("train"), 1024, pretok="gpt2")
    tok.save(TEST_TOKENIZER)
    bpe.write_golden(tok, TEST_TOKENIZER)
    print(f"{TEST_TOKENIZER}: GPT-2 style ByteLevel(use_regex) tokenizer, vocab {len(tok.vocab)}")


def model_config(name: str, tok: bpe.Tokenizer) -> dict:
    c = dict(MODELS[name]["config"])
    family = c.pop("family")
    if tok.style == "bytelevel":
        eot = tok.vocab["<|endoftext|>"]
        c.update(bos_token_id=eot, eos_token_id=eot)
    assert c["vocab_size"] == len(tok.vocab), (c["vocab_size"], len(tok.vocab))
    c["initializer_range"] = 0.02
    return make_config(family, **c)


def init_weights(model: MoeForCausalLM, seed: int) -> None:
    """GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers)."""
    g = torch.Generator().manual_seed(seed)
    resid = 0.02 / math.sqrt(2 * model.spec.num_layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                std = resid if name.endswith(("o_proj.weight", "down_proj.weight", "w2.weight")) else 0.02
                p.copy_(std * torch.randn(p.shape, generator=g))


def perplexity(model: MoeForCausalLM, ids: List[int], seq_len: int = EVAL_SEQ_LEN) -> Dict[str, float]:
    """Non-overlapping windows of seq_len tokens (the last one shorter); inside each window every token
    but the first is predicted from the ones before it in the window. Returns nll, ppl, tokens."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids) - 1, seq_len):
            window = torch.tensor([ids[start:start + seq_len]])
            if window.shape[1] < 2:
                break
            logits, _ = model(window)
            nll = F.cross_entropy(logits[0, :-1].float(), window[0, 1:], reduction="sum")
            total += float(nll)
            count += window.shape[1] - 1
    return {"nll_per_token": total / count, "perplexity": math.exp(total / count), "tokens_predicted": count}


def expert_usage(model: MoeForCausalLM, ids: List[int], n_tokens: int = 4096) -> List[List[float]]:
    """Fraction of top-k assignments each routed expert gets, per MoE layer."""
    model.eval()
    counts = None
    with torch.no_grad():
        for start in range(0, min(len(ids), n_tokens), EVAL_SEQ_LEN):
            _, routers = model(torch.tensor([ids[start:start + EVAL_SEQ_LEN]]))
            per = [torch.bincount(torch.topk(r.float().softmax(-1), model.spec.top_k, -1).indices.flatten(),
                                  minlength=model.spec.num_experts) for r in routers]
            counts = per if counts is None else [a + b for a, b in zip(counts, per)]
    return [[round(float(x) / float(c.sum()), 4) for x in c] for c in counts]


def generate(model: MoeForCausalLM, tok: bpe.Tokenizer, prompt: str, n: int, temperature: float = 0.0,
             top_k: int = 40, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt)
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids[-EVAL_SEQ_LEN:]]))
            last = logits[0, -1].float()
            if temperature <= 0:
                nxt = int(last.argmax())
            else:
                v, i = torch.topk(last / temperature, top_k)
                nxt = int(i[torch.multinomial(torch.softmax(v, -1), 1, generator=g)])
            ids.append(nxt)
    return tok.decode(ids)


def draw_batch(streams: List[torch.Tensor], weights: torch.Tensor, batch: int, seq_len: int,
               g: torch.Generator) -> torch.Tensor:
    """[batch, seq_len + 1] windows at random offsets; with several sources each row's source is drawn by weight."""
    if len(streams) == 1:
        starts = torch.randint(0, len(streams[0]) - seq_len - 1, (batch,), generator=g)
        return torch.stack([streams[0][s:s + seq_len + 1] for s in starts.tolist()])
    rows = []
    for src in torch.multinomial(weights, batch, replacement=True, generator=g).tolist():
        start = int(torch.randint(0, len(streams[src]) - seq_len - 1, (1,), generator=g))
        rows.append(streams[src][start:start + seq_len + 1])
    return torch.stack(rows)


def stage_train(name: str, steps_override: int = 0) -> None:
    spec = MODELS[name]
    folder = os.path.join("models", name)
    if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        stage_tokenizers(name)
    tok = bpe.Tokenizer.load(folder)
    seq_len = spec.get("seq_len", SEQ_LEN)
    t0 = time.time()
    sources = training_text(name)
    weights = spec.get("corpus", {"kjv": 1.0})
    streams = [torch.tensor(tok.encode(sources[s]), dtype=torch.int64) for s in weights]
    source_weights = torch.tensor(list(weights.values()), dtype=torch.float64)
    heldout_ids = tok.encode(read("heldout"))
    calib_ids = tok.encode(read("calibration"))
    train_tokens = {s: len(t) for s, t in zip(weights, streams)}
    print(f"{name}: train {train_tokens} tokens, held-out {len(heldout_ids)}, calibration {len(calib_ids)} "
          f"(tokenized in {time.time() - t0:.0f}s)", flush=True)

    torch.manual_seed(spec["seed"])
    cfg = model_config(name, tok)
    model = MoeForCausalLM(cfg)
    init_weights(model, spec["seed"])
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed_tokens" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=spec["lr"], betas=(0.9, 0.95), eps=1e-8)
    steps = steps_override or spec["steps"]
    warmup = max(1, steps // 20)
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    log = []
    t_train, cpu_train = time.time(), time.process_time()
    model.train()
    for step in range(1, steps + 1):
        lr = spec["lr"] * (step / warmup if step <= warmup
                           else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup))))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = draw_batch(streams, source_weights, spec["batch"], seq_len, g)
        logits, routers = model(batch[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        aux = moe_aux_loss(routers, model.spec.top_k)
        loss = ce + AUX_COEF * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == 1 or step == steps:
            elapsed = time.time() - t_train
            log.append({"step": step, "lr": round(lr, 6), "ce": round(float(ce), 4), "aux": round(float(aux), 4),
                        "elapsed_s": round(elapsed, 1), "cpu_s": round(time.process_time() - cpu_train, 1)})
            print(f"{name} step {step:4d}/{steps} ce {float(ce):.3f} aux {float(aux):.3f} lr {lr:.2e} "
                  f"{elapsed:.0f}s", flush=True)
    train_s, train_cpu_s = time.time() - t_train, time.process_time() - cpu_train

    # Save in the storage dtype, then evaluate the checkpoint as stored (reloaded, fp32 compute).
    save_pretrained(model, folder, dtype=spec["dtype"])
    write_json(os.path.join(folder, "generation_config.json"),
               {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                "do_sample": True, "temperature": 0.8, "top_k": 40, "max_new_tokens": 64})
    ref = load_pretrained(folder)
    held = perplexity(ref, heldout_ids)
    calib = perplexity(ref, calib_ids)
    prompts = [tok.encode(p) for p in GOLDEN_PROMPTS]
    logits = golden_logits(ref, prompts)
    write_golden(folder, prompts, logits, {
        "model": name,
        "architecture": cfg["architectures"][0],
        "weights_dtype": {torch.float32: "F32", torch.bfloat16: "BF16"}[spec["dtype"]],
        "generated_by": "tools/train_tiny.py (reference forward tools/onnxmoe_ref)",
        "compute": "fp32: stored weights upcast to fp32, every op in fp32; batch 1, position_ids 0..seq-1",
        "tensors": "prompt_{i}.input_ids I64 [1, seq]; prompt_{i}.logits F32 [1, seq, vocab]",
        "tolerance_hint": {"fp32_artifact_max_abs": 1e-4, "fp16_artifact_max_abs": 5e-2},
        "prompts": [{"name": f"prompt_{i}", "text": t, "input_ids": p,
                     "argmax_last": int(lg[0, -1].argmax()),
                     "argmax_last_token": tok.id_to_token[int(lg[0, -1].argmax())]}
                    for i, (t, p, lg) in enumerate(zip(GOLDEN_PROMPTS, prompts, logits))],
    })
    samples = [{"prompt": p, "greedy": generate(ref, tok, p, 32),
                "sampled_t0.8_topk40_seed0": generate(ref, tok, p, 32, temperature=0.8, seed=0)}
               for p in SAMPLE_PROMPTS]
    st_bytes = os.path.getsize(os.path.join(folder, "model.safetensors"))
    summary = {
        "model": name,
        "command": f"/usr/bin/python3 tools/train_tiny.py train {name}" + (f" --steps {steps}" if steps_override else "")
                   + (f" --threads {torch.get_num_threads()}" if torch.get_num_threads() != 1 else ""),
        "parameters": n_params,
        "active_parameters_note": "per token: attention + dense MLP + top-k routed experts + shared experts + embeddings",
        "safetensors_bytes": st_bytes,
        "weights_dtype": str(spec["dtype"]).replace("torch.", ""),
        "tokenizer": {"style": tok.style, "vocab_size": len(tok.vocab)},
        "data": {"train_tokens": sum(train_tokens.values()), "train_tokens_by_source": train_tokens,
                 "source_weights": weights, "heldout_tokens": len(heldout_ids),
                 "calibration_tokens": len(calib_ids), "heldout_books": list(kjv_data.HELDOUT_BOOKS),
                 "calibration_books": list(kjv_data.CALIBRATION_BOOKS)},
        "training": {"steps": steps, "batch": spec["batch"], "seq_len": seq_len, "optimizer": "AdamW(0.9, 0.95), wd 0.1",
                     "lr": spec["lr"], "schedule": f"linear warmup {warmup} steps, cosine to 10%",
                     "aux_loss": f"{AUX_COEF} x switch load-balancing loss", "tokens_seen": steps * spec["batch"] * seq_len,
                     "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu_s, 1),
                     "threads": torch.get_num_threads()},
        "eval": {"method": f"non-overlapping {EVAL_SEQ_LEN}-token windows, fp32 forward on the stored weights",
                 "heldout": held, "calibration": calib, "uniform_perplexity": len(tok.vocab)},
        "expert_usage_heldout": expert_usage(ref, heldout_ids),
        "samples": samples,
        "loss_log": log,
    }
    write_json(os.path.join(folder, "training_log.json"), summary)
    print(json.dumps({k: summary[k] for k in ("parameters", "safetensors_bytes", "eval")}, indent=1))
    for s in samples:
        print(json.dumps(s, ensure_ascii=False))


def stage_readme() -> None:
    """models/README.md from the models' training_log.json (numbers as measured by stage_train)."""
    out = ["# Tiny trained MoE models", "",
           "Trained from scratch on the King James Bible (Debian `bible-kjv`) by `tools/train_tiny.py`",
           "(Debian's python3-torch, CPU). The text is split by book: held-out = "
           + ", ".join(kjv_data.HELDOUT_BOOKS) + "; calibration = " + ", ".join(kjv_data.CALIBRATION_BOOKS)
           + "; train = all other books.",
           "`data/kjv-heldout.txt` and `data/kjv-calibration.txt` are committed; `data/kjv-train.txt` is",
           "regenerated by `/usr/bin/python3 tools/train_tiny.py data`.", "",
           "Each folder: config.json, model.safetensors, tokenizer.json, tokenizer_config.json,",
           "tokenizer_golden.json (strings -> ids -> decoded text), generation_config.json,",
           "golden.safetensors + golden.json (fixed prompts' ids and fp32 logits of the reference forward",
           "`tools/onnxmoe_ref` on the weights as stored), training_log.json (loss curve, settings, eval).", "",
           "Perplexity: per token of the model's own tokenizer, non-overlapping "
           f"{EVAL_SEQ_LEN}-token windows (each window's first token is not scored), fp32 forward on the",
           "stored weights. Uniform perplexity = vocabulary size.", ""]
    for name in MODELS:
        path = os.path.join("models", name, "training_log.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            s = json.load(f)
        cfg = json.load(open(os.path.join("models", name, "config.json"), encoding="utf-8"))
        ev, tr = s["eval"], s["training"]
        out += [f"## {name}", "",
                f"- made by: `{s['command']}` (after the `data` and `tokenizers` stages)",
                f"- architecture: `{cfg['architectures'][0]}`; hidden {cfg['hidden_size']}, "
                f"{cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']} heads / "
                f"{cfg['num_key_value_heads']} kv heads; " + _moe_line(cfg),
                f"- parameters: {s['parameters']:,}; weights {s['weights_dtype']}, model.safetensors "
                f"{s['safetensors_bytes'] / 1e6:.1f} MB",
                f"- tokenizer: {s['tokenizer']['style']} BPE, vocab {s['tokenizer']['vocab_size']}",
                f"- training: {tr['steps']} steps x {tr['batch']} x {tr['seq_len']} tokens "
                f"({tr['tokens_seen']:,} tokens seen of {s['data']['train_tokens']:,}), {tr['optimizer']}, "
                f"lr {tr['lr']} ({tr['schedule']}), {tr['aux_loss']}; {tr['train_seconds']:.0f} s on "
                f"{tr['threads']} thread(s) of a shared machine",
                f"- **held-out perplexity {ev['heldout']['perplexity']:.1f}** per token "
                f"({ev['heldout']['tokens_predicted']:,} tokens) vs uniform {ev['uniform_perplexity']}; "
                f"calibration perplexity {ev['calibration']['perplexity']:.1f}",
                f"- final training cross-entropy {s['loss_log'][-1]['ce']:.3f} nats/token", "",
                "Samples (greedy, and temperature 0.8 / top-k 40 / seed 0; 32 new tokens):", ""]
        for smp in s["samples"]:
            out.append(f"- greedy: {json.dumps(smp['greedy'], ensure_ascii=False)}")
            out.append(f"  sampled: {json.dumps(smp['sampled_t0.8_topk40_seed0'], ensure_ascii=False)}")
        out.append("")
    with open("models/README.md", "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out))
    print("wrote models/README.md")


def _moe_line(cfg: dict) -> str:
    if cfg["model_type"] == "mixtral":
        return (f"{cfg['num_local_experts']} experts (intermediate {cfg['intermediate_size']}) top-"
                f"{cfg['num_experts_per_tok']} renormalised, every layer MoE")
    return (f"layer 0 dense (intermediate {cfg['intermediate_size']}), then {cfg['n_routed_experts']} routed "
            f"experts (intermediate {cfg['moe_intermediate_size']}) top-{cfg['num_experts_per_tok']} without "
            f"renormalisation + {cfg['n_shared_experts']} shared experts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["data", "tokenizers", "train", "readme", "all"])
    ap.add_argument("model", nargs="?", choices=sorted(MODELS))
    ap.add_argument("--steps", type=int, default=0, help="override the number of training steps")
    ap.add_argument("--threads", type=int, default=1, choices=[1, 2], help="torch threads (default 1)")
    ap.add_argument("--pid-file", help="write this process's pid here first (for callers that pause it with SIGSTOP)")
    args = ap.parse_args()
    if args.pid_file:
        with open(args.pid_file, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    setup_torch(args.threads)
    if args.stage in ("data", "all"):
        stage_data()
    if args.stage in ("tokenizers", "all"):
        stage_tokenizers(args.model if args.stage == "tokenizers" and args.model else "")
    if args.stage == "train":
        if not args.model:
            ap.error("train needs a model name")
        stage_train(args.model, args.steps)
    if args.stage == "all":
        for name in MODELS:
            stage_train(name, args.steps)
    if args.stage in ("readme", "all"):
        stage_readme()


if __name__ == "__main__":
    main()
