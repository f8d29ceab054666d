#!/usr/bin/python3
"""Checks `onnxmoe eval` against tools/lmeval_ref.py (an independent lm-eval 0.4.9.1 scorer) on tasks that are not
in this repository, generated into a temporary folder from Debian's public-domain text:

  wn_arc         arc_easy's own YAML (question / choices.text / choices.label / answerKey; labels A-D or 1-4,
                 3 to 5 choices), WordNet glosses: which word has this gloss
  wn_arc_inc     `include: wn_arc.yaml` overriding task and data files, as arc_challenge.yaml does
  fortune_piqa   piqa's own YAML (goal, sol1, sol2, label; doc_to_choice "{{[sol1, sol2]}}", no test split),
                 raw fortunes (inner newlines, tabs, non-ASCII kept): which ending is the fortune's own
  gcide_fewshot  num_fewshot 3 with a templated description, the default random sampler (seed 1234),
                 fewshot_split train, filters (trim, lower), a string doc_to_target: which headword a GCIDE sense defines
  fortune_cloze  doc_to_text "{{context}}": every 5th context empty (lm-eval's BOS/EOS prefix rule), the others ending
                 in "", " ", "\\n" or " \\t" (the trailing whitespace moves to the continuation); field-name choice/target
  kjv_next_word  the next word of a KJV training verse among 4 single words (the trained models' greedy tokens often
                 are the choices, so is_greedy is exercised); fewshot_split = test_split, target_delimiter "" (choices
                 carry their own space), fewshot_delimiter "\\n###\\n"
  kjv_boolq      boolq's layout: doc_to_choice as a YAML list ["no", "yes"], int label, validation split only, acc only

For each checkpoint it compiles `onnxmoe compile CKPT -o DIR --fuse off` and the default (fused) form, runs
`onnxmoe eval DIR --tasks T.yaml --output-path D --log-samples [--limit N]` for every task, and the reference on
the same tasks (five of them again with --num-fewshot 2, see FEWSHOT_PASS, and gcide_fewshot's first 12 docs with
--num-fewshot 40, contexts past 1024 tokens, for checkpoints of at most 1024 positions), then compares per document: the request strings (context, continuation), every choice's
loglikelihood (max |diff| <= --tol, default 2e-4), is_greedy, acc and acc_norm; per task: acc / acc_norm
counts and stderrs (results.json against the reference's, |diff| <= 1e-9). One table; exit 1 on any mismatch.

    /usr/bin/python3 tools/lmeval_check.py models/tiny-mixtral models/tiny-deepseek [--limit 40] [--only a,b] [--forms fused] [--keep DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import kjv_data  # noqa: E402
import lmeval_ref  # noqa: E402
import text_sources  # noqa: E402

METRIC_KEYS = ("acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none")
FORTUNE_FILES = ("fortunes", "literature", "riddles", "wisdom", "science", "people", "definitions")


# ---------------------------------------------------------------------------------------------------
# Task generation
# ---------------------------------------------------------------------------------------------------

def _write_jsonl(path: str, rows: List[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _write_yaml(path: str, cfg: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True, width=1000)


METRICS = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
           {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]


def raw_fortunes() -> List[str]:
    """Fortunes as the files hold them (inner newlines and tabs kept, UTF-8), 20-300 characters."""
    out = []
    for name in FORTUNE_FILES:
        path = os.path.join(text_sources.FORTUNES, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for rec in re.split(r"\n%\n", f.read()):
                rec = "".join(ch for ch in rec.strip("\n%") if ch in "\n\t" or ch >= " ")
                if 20 <= len(rec) <= 300 and len(rec.split()) >= 6:
                    out.append(rec)
    if not out:
        raise SystemExit(f"error: no fortunes under {text_sources.FORTUNES} (apt-get install fortunes)")
    return out


def _wordnet_items() -> List[Tuple[str, str]]:
    items = []
    for line in text_sources.wordnet_glosses():
        words, gloss = line.split(": ", 1)
        word = words.split(", ")[0]
        gloss = gloss.split("; \"")[0].strip()
        if word.isalpha() and word.islower() and 20 <= len(gloss) <= 110:
            items.append((word, gloss))
    return items


def make_wn_arc(folder: str, rnd: random.Random, n: int) -> List[str]:
    items = _wordnet_items()
    rnd.shuffle(items)
    vocab = sorted({w for w, _ in items})

    def doc(i: int, word: str, gloss: str) -> dict:
        k = 3 + (i % 3)  # 3, 4 or 5 choices, as ARC has
        choices = rnd.sample([w for w in rnd.sample(vocab, k + 2) if w != word], k - 1)
        choices.insert(rnd.randrange(k), word)
        labels = [str(j + 1) for j in range(k)] if i % 5 == 0 else [chr(65 + j) for j in range(k)]
        return {"id": f"wn-{i}", "question": f"Which word means \"{gloss}\"?",
                "choices": {"text": choices, "label": labels}, "answerKey": labels[choices.index(word)]}

    docs = [doc(i, w, g) for i, (w, g) in enumerate(items[:4 * n])]
    splits = {"train": docs[:n], "validation": docs[n:2 * n], "test": docs[2 * n:3 * n], "test2": docs[3 * n:]}
    for s, rows in splits.items():
        _write_jsonl(os.path.join(folder, f"wn_arc_{s}.jsonl"), rows)
    # arc_easy.yaml (lm_eval/tasks/arc/arc_easy.yaml) with the dataset made local.
    _write_yaml(os.path.join(folder, "wn_arc.yaml"), {
        "tag": ["onnxmoe_check"], "task": "wn_arc", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {s: f"wn_arc_{s}.jsonl" for s in ("train", "validation", "test")}},
        "output_type": "multiple_choice", "training_split": "train", "validation_split": "validation",
        "test_split": "test", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{choices.label.index(answerKey)}}", "doc_to_choice": "{{choices.text}}",
        "should_decontaminate": True, "doc_to_decontamination_query": "Question: {{question}}\nAnswer:",
        "metric_list": METRICS, "metadata": {"version": 1.0}})
    # arc_challenge.yaml's form: include the base and override.
    _write_yaml(os.path.join(folder, "wn_arc_inc.yaml"), {
        "include": "wn_arc.yaml", "task": "wn_arc_inc",
        "dataset_kwargs": {"data_files": {"train": "wn_arc_train.jsonl", "validation": "wn_arc_validation.jsonl",
                                          "test": "wn_arc_test2.jsonl"}}})
    return ["wn_arc.yaml", "wn_arc_inc.yaml"]


def _split_words(text: str, at: int) -> Tuple[str, str]:
    """Splits text before its at-th word (whitespace kept with the second half's words)."""
    spans = [m.start() for m in re.finditer(r"\S+", text)]
    return text[:spans[at]].rstrip(), text[spans[at]:]


def make_fortune_piqa(folder: str, rnd: random.Random, n: int, fortunes: List[str]) -> List[str]:
    pool = rnd.sample(fortunes, 2 * n)
    rows = []
    for i, f in enumerate(pool):
        words = len(f.split())
        goal, sol = _split_words(f, max(2, words // 2))
        other = pool[(i + 1 + rnd.randrange(len(pool) - 1)) % len(pool)]
        _, wrong = _split_words(other, max(2, len(other.split()) // 2))
        label = rnd.randrange(2)
        sols = [wrong, sol] if label else [sol, wrong]
        rows.append({"goal": goal, "sol1": sols[0], "sol2": sols[1], "label": label})
    _write_jsonl(os.path.join(folder, "fortune_piqa_train.jsonl"), rows[:n])
    _write_jsonl(os.path.join(folder, "fortune_piqa_validation.jsonl"), rows[n:])
    # piqa.yaml (lm_eval/tasks/piqa/piqa.yaml): evaluation on the validation split, test_split null.
    _write_yaml(os.path.join(folder, "fortune_piqa.yaml"), {
        "task": "fortune_piqa", "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"train": "fortune_piqa_train.jsonl",
                                          "validation": "fortune_piqa_validation.jsonl"}},
        "output_type": "multiple_choice", "training_split": "train", "validation_split": "validation",
        "test_split": None, "doc_to_text": "Question: {{goal}}\nAnswer:", "doc_to_target": "label",
        "doc_to_choice": "{{[sol1, sol2]}}", "should_decontaminate": True, "doc_to_decontamination_query": "goal",
        "metric_list": METRICS, "metadata": {"version": 1.0}})
    return ["fortune_piqa.yaml"]


def make_gcide_fewshot(folder: str, rnd: random.Random, n: int) -> List[str]:
    items = []
    for line in text_sources.gcide_definitions():
        head, sense = line.split(": ", 1)
        if head.isalpha() and 3 <= len(head) <= 12 and 15 <= len(sense) <= 90:
            items.append((head, sense))
    rnd.shuffle(items)
    heads = sorted({h for h, _ in items})
    rows = []
    for i, (head, sense) in enumerate(items[:2 * n]):
        options = [h for h in rnd.sample(heads, 6) if h.lower() != head.lower()][:3]
        options.insert(rnd.randrange(4), head)
        # Padding around the sense is for the trim filter; the answer is the headword itself (a string target).
        rows.append({"definition": ("  " if i % 3 == 0 else "") + sense + (" " if i % 4 == 0 else ""),
                     "options": options, "answer": head, "source": "GCIDE"})
    _write_jsonl(os.path.join(folder, "gcide_train.jsonl"), rows[:n])
    _write_jsonl(os.path.join(folder, "gcide_test.jsonl"), rows[n:])
    _write_yaml(os.path.join(folder, "gcide_fewshot.yaml"), {
        "task": "gcide_fewshot", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": "gcide_train.jsonl", "test": "gcide_test.jsonl"}},
        "output_type": "multiple_choice", "training_split": "train", "test_split": "test", "fewshot_split": "train",
        "num_fewshot": 3, "description": "Definitions from {{source | lower}}, each with the word it defines.\n\n",
        "doc_to_text": "Definition: {{ definition | trim }}\nWord:", "doc_to_target": "{{answer}}",
        "doc_to_choice": "{{options}}", "metric_list": METRICS})
    return ["gcide_fewshot.yaml"]


def make_fortune_cloze(folder: str, rnd: random.Random, n: int, fortunes: List[str]) -> List[str]:
    pool = rnd.sample(fortunes, n + 40)
    rows = []
    endings = ["", " ", "\n", " \t"]
    for i, f in enumerate(pool[:n]):
        words = len(f.split())
        k = 0 if i % 5 == 0 else 1 + rnd.randrange(max(1, words - 3))
        ctx, rest = _split_words(f, k) if k else ("", f)
        nxt = " ".join(rest.split()[:1 + i % 3])
        wrong = []
        for other in rnd.sample(pool[n:], 3):
            j = rnd.randrange(len(other.split()) - 3)
            wrong.append(" ".join(other.split()[j:j + 1 + (i + len(wrong)) % 3]))
        gold = rnd.randrange(4)
        choices = wrong[:gold] + [nxt] + wrong[gold:]
        rows.append({"context": ctx + (endings[i % 4] if ctx else ""), "choices": choices, "gold": gold})
    _write_jsonl(os.path.join(folder, "fortune_cloze_test.jsonl"), rows)
    _write_yaml(os.path.join(folder, "fortune_cloze.yaml"), {
        "task": "fortune_cloze", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": "fortune_cloze_test.jsonl"}},
        "output_type": "multiple_choice", "test_split": "test", "num_fewshot": 0, "doc_to_text": "{{context}}",
        "doc_to_choice": "choices", "doc_to_target": "gold", "metric_list": METRICS})
    return ["fortune_cloze.yaml"]


def make_kjv_tasks(folder: str, rnd: random.Random, n: int) -> List[str]:
    """KJV verses of the training books, so that the trained models' greedy predictions often are the choices."""
    verses = [t for book, t in kjv_data.read_kjv() if book not in kjv_data.HELDOUT_BOOKS + kjv_data.CALIBRATION_BOOKS]
    pool = rnd.sample(verses, 2 * n)
    common = sorted({w for v in pool for w in v.split() if w.isalpha()})
    rows = []
    for v in pool[:n]:
        words = v.split()
        k = 1 + rnd.randrange(len(words) - 1)
        options = [w for w in rnd.sample(common, 4) if w != words[k]][:3]
        gold = rnd.randrange(4)
        choices = [" " + w for w in options[:gold] + [words[k]] + options[gold:]]
        rows.append({"context": " ".join(words[:k]), "choices": choices, "label": gold})
    _write_jsonl(os.path.join(folder, "kjv_next_word_test.jsonl"), rows)
    _write_yaml(os.path.join(folder, "kjv_next_word.yaml"), {
        "task": "kjv_next_word", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": "kjv_next_word_test.jsonl"}},
        "output_type": "multiple_choice", "test_split": "test", "fewshot_split": "test", "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "label", "target_delimiter": "", "fewshot_delimiter": "\n###\n",
        "metric_list": METRICS})
    # boolq.yaml's layout (lm_eval/tasks/super_glue/boolq/default.yaml): choices as a YAML list, an int label.
    rows = []
    for i, v in enumerate(pool[n:]):
        words = [w.strip(".,;:?!").lower() for w in v.split()]
        word = words[rnd.randrange(len(words))] if i % 2 else rnd.choice(common).lower()
        rows.append({"passage": v, "question": f"does the verse use the word {word}", "label": int(word in words)})
    _write_jsonl(os.path.join(folder, "kjv_boolq_validation.jsonl"), rows)
    _write_yaml(os.path.join(folder, "kjv_boolq.yaml"), {
        "task": "kjv_boolq", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": "kjv_boolq_validation.jsonl"}},
        "output_type": "multiple_choice", "validation_split": "validation",
        "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:", "doc_to_target": "label",
        "doc_to_choice": ["no", "yes"], "metric_list": [{"metric": "acc"}]})
    return ["kjv_next_word.yaml", "kjv_boolq.yaml"]


def make_tasks(folder: str, n: int) -> List[str]:
    rnd = random.Random(20261202)
    fortunes = raw_fortunes()
    names = make_wn_arc(folder, rnd, n)
    names += make_fortune_piqa(folder, rnd, n, fortunes)
    names += make_gcide_fewshot(folder, rnd, n)
    names += make_fortune_cloze(folder, rnd, n, fortunes)
    names += make_kjv_tasks(folder, rnd, n)
    return [os.path.join(folder, x) for x in names]


# ---------------------------------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------------------------------

def onnxmoe(args: List[str], log: str) -> None:
    cli = os.path.join(ROOT, "src/OnnxMoe.Cli/bin/Release/net10.0/onnxmoe.dll")
    if not os.path.exists(cli):
        raise SystemExit(f"error: {cli} not built (dotnet build OnnxMoe.sln -c Release)")
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ onnxmoe " + " ".join(args) + "\n")
        f.flush()
        p = subprocess.run(["nice", "-n", "10", "dotnet", cli] + args, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError(f"onnxmoe {' '.join(args[:2])} ... exited {p.returncode} (see {log})")


def _resp(x) -> Tuple[float, bool]:
    """One (loglikelihood, is_greedy) pair as lm-eval logs it (sanitize_list writes both as strings)."""
    ll, greedy = x
    if isinstance(greedy, str):
        greedy = {"True": True, "False": False}[greedy]
    return float(ll), bool(greedy)


def read_samples(path: str) -> List[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            args = s["arguments"]
            if isinstance(args, dict):  # lm-eval's {"gen_args_i": {"arg_0": ctx, "arg_1": cont}}
                args = [(a["arg_0"], a["arg_1"]) for a in (args[k] for k in sorted(args, key=lambda k: int(k.split("_")[-1])))]
            resps = [_resp(r[0] if isinstance(r[0], (list, tuple)) else r) for r in s["resps"]]
            out.append({"doc_id": s["doc_id"], "arguments": [tuple(a) for a in args], "resps": resps,
                        "acc": s.get("acc"), "acc_norm": s.get("acc_norm")})
    return sorted(out, key=lambda s: s["doc_id"])


def compare_task(ref: dict, out_dir: str, tol: float) -> dict:
    """Compares one task's onnxmoe output folder with the reference's result; returns a row of the table."""
    name = ref["name"]
    row = {"task": name, "docs": ref["n"], "problems": []}
    files = sorted(glob.glob(os.path.join(out_dir, f"samples_{name}*.jsonl")))
    res_path = os.path.join(out_dir, "results.json")
    if not files or not os.path.exists(res_path):
        row["problems"].append(f"missing samples_{name}*.jsonl or results.json in {out_dir}")
        return row
    ours = read_samples(files[0])
    with open(res_path, encoding="utf-8") as f:
        full = json.load(f)
    results = full["results"].get(name, {})
    if full.get("n-shot", {}).get(name) != ref["num_fewshot"]:
        row["problems"].append(f"results.json n-shot {full.get('n-shot', {}).get(name)}, reference {ref['num_fewshot']}")
    if (full.get("n-samples", {}).get(name) or {}).get("effective") != ref["n"]:
        row["problems"].append(f"results.json n-samples {full.get('n-samples', {}).get(name)}, reference {ref['n']} docs")
    if len(ours) != len(ref["samples"]):
        row["problems"].append(f"{len(ours)} logged docs, reference {len(ref['samples'])}")
    max_diff, n_ll, greedy_diff, doc_diff, text_diff = 0.0, 0, 0, 0, 0
    first: List[str] = []
    for o, r in zip(ours, ref["samples"]):
        if o["doc_id"] != r["doc_id"]:
            row["problems"].append(f"doc_id {o['doc_id']} where the reference has {r['doc_id']}")
            break
        if [tuple(a) for a in r["arguments"]] != o["arguments"]:
            text_diff += 1
            if len(first) < 3:
                first.append(f"doc {r['doc_id']} requests differ: ours {o['arguments'][:1]!r} reference {r['arguments'][:1]!r}")
            continue
        for (oll, og), (rll, rg) in zip(o["resps"], r["resps"]):
            max_diff = max(max_diff, abs(oll - rll))
            n_ll += 1
            greedy_diff += og != rg
        if (o["acc"], o["acc_norm"]) != (r.get("acc"), r.get("acc_norm")):
            doc_diff += 1
            if len(first) < 3:
                first.append(f"doc {r['doc_id']} acc/acc_norm ours {o['acc']}/{o['acc_norm']} reference {r.get('acc')}/{r.get('acc_norm')}"
                             f" (lls ours {[x[0] for x in o['resps']]} reference {[x[0] for x in r['resps']]})")
    row.update(max_diff=max_diff, lls=n_ll, greedy_diff=greedy_diff, doc_diff=doc_diff, text_diff=text_diff)
    if text_diff:
        row["problems"].append(f"{text_diff} docs with different request strings")
    if max_diff > tol:
        row["problems"].append(f"loglikelihood max |diff| {max_diff:.3g} > {tol}")
    if greedy_diff:
        row["problems"].append(f"{greedy_diff} is_greedy flags differ")
    if doc_diff:
        row["problems"].append(f"{doc_diff} docs with different acc/acc_norm")
    m = ref["metrics"]
    for key in METRIC_KEYS:
        metric = key.split(",")[0]
        want, got = m.get(metric), results.get(key)
        if want is None and got is None:
            continue  # a metric the task does not list
        row[metric] = (got, want)
        if isinstance(want, str) or isinstance(got, str):
            ok = want == got
        else:
            ok = got is not None and abs(got - want) <= 1e-9
        if not ok:
            row["problems"].append(f"results.json {key} = {got}, reference {want}")
    row["problems"].extend(first)
    return row


# Second pass with --num-fewshot 2: arc (few-shot docs from its training split), piqa (no test split: lm-eval's
# "fewshot_split == test_split" is then None == None, so it draws 3 and drops the doc), boolq (no training split:
# few-shot docs come from the evaluated split itself), the cloze task, whose YAML num_fewshot 0 wins, and the
# next-word task, whose fewshot_split is its test_split (draws 3, drops the doc).
LONG_LIMIT = 12  # documents of the 40-shot run
FEWSHOT_PASS = ("wn_arc", "fortune_piqa", "kjv_boolq", "fortune_cloze", "kjv_next_word")


def runs_for(tasks: List[str]) -> List[Tuple[str, Optional[int]]]:
    runs: List[Tuple[str, Optional[int]]] = [(t, None) for t in tasks]
    runs += [(t, 2) for t in tasks if os.path.splitext(os.path.basename(t))[0] in FEWSHOT_PASS]
    # 40 shots make contexts longer than the tiny models' 1024 positions: HFLM keeps the last max_length + 1 tokens.
    runs += [(t, 40) for t in tasks if os.path.basename(t) == "gcide_fewshot.yaml"]
    return runs


def check_checkpoint(ckpt: str, tasks: List[str], work: str, limit: Optional[int], tol: float,
                     log: str, only: Optional[List[str]] = None, forms: Tuple[str, ...] = ("unfused", "fused")) -> List[dict]:
    lm = lmeval_ref.ReferenceLM(ckpt)
    runs = [r for r in runs_for(tasks) if not only or os.path.splitext(os.path.basename(r[0]))[0] in only]
    if lm.max_length > 1024:  # the 40-shot run is there for the truncation rule, which it reaches only at 1024
        runs = [r for r in runs if (r[1] or 0) <= 2]
    limits = [min(limit or LONG_LIMIT, LONG_LIMIT) if (shots or 0) > 2 else limit for _, shots in runs]
    refs = [lmeval_ref.evaluate_task(lmeval_ref.Task(t), lm, n, shots) for (t, shots), n in zip(runs, limits)]
    rows = []
    for form, extra in [f for f in (("unfused", ["--fuse", "off"]), ("fused", [])) if f[0] in forms]:
        model_dir = os.path.join(work, os.path.basename(os.path.normpath(ckpt)) + "-" + form)
        onnxmoe(["compile", ckpt, "-o", model_dir, "--overwrite"] + extra, log)
        for (t, shots), n, ref in zip(runs, limits, refs):
            out = os.path.join(model_dir + "-eval", ref["name"] + ("" if shots is None else f"-{shots}shot"))
            args = ["eval", model_dir, "--tasks", t, "--output-path", out, "--log-samples"]
            if n is not None:
                args += ["--limit", str(n)]
            if shots is not None:
                args += ["--num-fewshot", str(shots)]
            try:
                onnxmoe(args, log)
                row = compare_task(ref, out, tol)
            except RuntimeError as e:
                row = {"task": ref["name"], "docs": ref["n"], "problems": [str(e)]}
            row["model"] = f"{os.path.basename(os.path.normpath(ckpt))} {form}"
            row["shots"] = ref["num_fewshot"]
            rows.append(row)
    return rows


def _fmt_pair(p) -> str:
    if p is None:
        return "-"
    got, want = p
    f = lambda v: v if isinstance(v, str) or v is None else f"{v:.4f}"  # noqa: E731
    return f"{f(got)}" if got == want else f"{f(got)}!={f(want)}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="onnxmoe eval against an independent lm-eval 0.4.9.1 reference")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--docs", type=int, default=60, help="documents per generated split")
    ap.add_argument("--limit", type=int, help="evaluate only the first N documents of each task (both sides)")
    ap.add_argument("--tol", type=float, default=2e-4, help="max |loglikelihood diff| (fp32 ORT against fp32 torch)")
    ap.add_argument("--only", help="comma-separated task names to run (default: all)")
    ap.add_argument("--forms", default="unfused,fused", help="compiled forms to check: unfused (--fuse off), fused")
    ap.add_argument("--keep", help="folder to work in and keep (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    work = a.keep or tempfile.mkdtemp(prefix="lmeval-check-")
    os.makedirs(work, exist_ok=True)
    try:
        task_dir = os.path.join(work, "tasks")
        os.makedirs(task_dir, exist_ok=True)
        tasks = make_tasks(task_dir, a.docs)
        log = os.path.join(work, "onnxmoe.log")
        rows = []
        for ckpt in a.checkpoints:
            rows += check_checkpoint(ckpt, tasks, work, a.limit, a.tol, log,
                                     a.only.split(",") if a.only else None, tuple(a.forms.split(",")))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'model':22} {'task':14} {'shot':>4} {'docs':>4} {'lls':>5} {'max|dll|':>9} {'greedy!=':>8} {'doc!=':>5} "
          f"{'acc':>15} {'acc_stderr':>15} {'acc_norm':>15} {'norm_stderr':>15}")
    bad = 0
    for r in rows:
        print(f"{r['model']:22} {r['task']:14} {r['shots']:>4} {r['docs']:>4} {r.get('lls', '-'):>5} "
              f"{(format(r['max_diff'], '.2e') if 'max_diff' in r else '-'):>9} {r.get('greedy_diff', '-'):>8} "
              f"{r.get('doc_diff', '-'):>5} {_fmt_pair(r.get('acc')):>15} {_fmt_pair(r.get('acc_stderr')):>15} "
              f"{_fmt_pair(r.get('acc_norm')):>15} {_fmt_pair(r.get('acc_norm_stderr')):>15}")
        for p in r["problems"]:
            print(f"    MISMATCH: {p}")
            bad += 1
    print(f"tolerance: loglikelihood {a.tol}, metrics 1e-9; {'all equal' if not bad else f'{bad} mismatches'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
