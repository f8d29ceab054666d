#!/usr/bin/python3
"""An independent reference for lm-eval 0.4.9.1's multiple-choice scoring (Hugging Face backend, HFLM).

Written from lm-eval's own rules (each cited below by file and function, v0.4.9.1 tag of
EleutherAI/lm-evaluation-harness), not from onnxmoe's C# evaluator. The model is the torch reference
forward of tools/onnxmoe_ref (fp32), the tokenizer tools/bpe.py. No jinja2: the small Jinja subset
that lm-eval task templates use is implemented here (`render`), and anything else is an error.

    /usr/bin/python3 tools/lmeval_ref.py CHECKPOINT --tasks a.yaml,b.yaml [--limit N] [--output-path DIR]

Scope: output_type multiple_choice, metrics acc / acc_norm, dataset_path json with local data_files,
zero- and few-shot (samplers default and first_n), description, include:. Not covered: chat templates,
process_docs / !function, acc_mutual_info, group files, --add-bos (lm-eval >= 0.4.9.2 semantics).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class TaskError(Exception):
    """A problem in a task file or its data, reported as one line naming the file."""


# ---------------------------------------------------------------------------------------------------
# Jinja subset. lm-eval renders templates with jinja2.Environment(undefined=StrictUndefined,
# keep_trailing_newline=True) and env.from_string(t).render(**doc) (lm_eval/utils.py apply_template).
# Supported: {{ expr }} and {{- expr -}}, where expr is a name, a string / int literal, a list literal,
# attribute access a.b (Jinja tries getattr first, then the item), subscripts x[0] / x["k"] (item
# first, then the attribute), calls of a few str / list methods (index, count, strip, lower, ...),
# string concatenation with ~, and the filters join, trim, lower, upper, replace, length, first,
# last, string. Values render as Python's str() (lists therefore as their repr, which is what
# doc_to_choice's ast.literal_eval reads back). {% ... %} and {# ... #} are errors.
# ---------------------------------------------------------------------------------------------------

_METHODS = {"index", "count", "strip", "lstrip", "rstrip", "lower", "upper", "split", "replace",
            "startswith", "endswith", "title", "capitalize"}
_TOKEN = re.compile(r"""\s*(?:(?P<close>-?\}\})|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>\d+)"""
                    r"""|(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<op>[.\[\](),|~-]))""")


class _Undefined(Exception):
    pass


class _Method:
    def __init__(self, obj, name):
        self.obj, self.name = obj, name


def _getattr(obj, name):
    # jinja2 Environment.getattr: getattr(obj, name), else obj[name].
    if hasattr(obj, name) and not isinstance(obj, _Method):
        return _Method(obj, name)
    try:
        return obj[name]
    except (TypeError, LookupError):
        raise _Undefined(f"{type(obj).__name__} has no attribute {name!r}")


def _getitem(obj, key):
    # jinja2 Environment.getitem: obj[key], else getattr(obj, key) for string keys.
    try:
        return obj[key]
    except (TypeError, LookupError):
        if isinstance(key, str) and hasattr(obj, key):
            return _Method(obj, key)
        raise _Undefined(f"{type(obj).__name__} has no item {key!r}")


def _soft_str(v) -> str:
    if isinstance(v, _Method):
        raise _Undefined(f"method {v.name!r} used without calling it")
    return v if isinstance(v, str) else str(v)


_FILTERS = {
    "join": lambda v, sep="": sep.join(_soft_str(x) for x in v),
    "trim": lambda v: _soft_str(v).strip(),
    "lower": lambda v: _soft_str(v).lower(),
    "upper": lambda v: _soft_str(v).upper(),
    "replace": lambda v, old, new: _soft_str(v).replace(old, new),
    "length": lambda v: len(v),
    "first": lambda v: next(iter(v)),
    "last": lambda v: list(v)[-1],
    "string": _soft_str,
}


class _Expr:
    """Recursive-descent parser and evaluator of one {{ ... }} expression."""

    def __init__(self, text: str, pos: int, template: str):
        self.text, self.pos, self.template = text, pos, template
        self.tokens: List[Tuple[str, str]] = []
        while True:
            m = _TOKEN.match(text, self.pos)
            if m is None:
                raise TaskError(f"template {template!r}: unsupported Jinja syntax at {text[self.pos:self.pos + 12]!r}")
            self.pos = m.end()
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
            if kind == "close":
                break
        self.strip_after = self.tokens[-1][1].startswith("-")
        self.i = 0

    def _peek(self):
        return self.tokens[self.i]

    def _next(self):
        t = self.tokens[self.i]
        self.i += 1
        return t

    def _expect(self, op):
        t = self._next()
        if t != ("op", op):
            raise TaskError(f"template {self.template!r}: expected {op!r}, found {t[1]!r}")

    def parse(self):
        tree = self._concat()
        if self._peek()[0] != "close":
            raise TaskError(f"template {self.template!r}: unsupported Jinja syntax {self._peek()[1]!r}")
        return tree

    def _concat(self):
        node = self._filtered()
        while self._peek() == ("op", "~"):
            self._next()
            node = ("concat", node, self._filtered())
        return node

    def _filtered(self):
        node = self._postfix()
        while self._peek() == ("op", "|"):
            self._next()
            kind, name = self._next()
            if kind != "name" or name not in _FILTERS:
                raise TaskError(f"template {self.template!r}: unsupported Jinja filter {name!r}")
            args = self._args() if self._peek() == ("op", "(") else []
            node = ("filter", name, node, args)
        return node

    def _args(self):
        self._expect("(")
        args = []
        while self._peek() != ("op", ")"):
            args.append(self._concat())
            if self._peek() == ("op", ","):
                self._next()
        self._expect(")")
        return args

    def _postfix(self):
        node = self._atom()
        while True:
            t = self._peek()
            if t == ("op", "."):
                self._next()
                kind, name = self._next()
                if kind != "name":
                    raise TaskError(f"template {self.template!r}: expected an attribute name after '.'")
                node = ("attr", node, name)
            elif t == ("op", "["):
                self._next()
                key = self._concat()
                self._expect("]")
                node = ("item", node, key)
            elif t == ("op", "("):
                node = ("call", node, self._args())
            else:
                return node

    def _atom(self):
        kind, val = self._next()
        if kind == "name":
            if val in ("true", "True"):
                return ("lit", True)
            if val in ("false", "False"):
                return ("lit", False)
            if val in ("none", "None"):
                return ("lit", None)
            return ("name", val)
        if kind == "int":
            return ("lit", int(val))
        if kind == "str":
            return ("lit", ast.literal_eval(val))
        if (kind, val) == ("op", "-"):
            inner = self._atom()
            if inner[0] != "lit" or not isinstance(inner[1], int):
                raise TaskError(f"template {self.template!r}: unary minus only before an integer")
            return ("lit", -inner[1])
        if (kind, val) == ("op", "("):
            node = self._concat()
            self._expect(")")
            return node
        if (kind, val) == ("op", "["):
            items = []
            while self._peek() != ("op", "]"):
                items.append(self._concat())
                if self._peek() == ("op", ","):
                    self._next()
            self._expect("]")
            return ("list", items)
        raise TaskError(f"template {self.template!r}: unsupported Jinja syntax {val!r}")


def _evaluate(node, doc: Dict[str, Any], template: str):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "name":
        if node[1] not in doc:
            raise _Undefined(f"{node[1]!r} is undefined")
        return doc[node[1]]
    if kind == "list":
        return [_evaluate(n, doc, template) for n in node[1]]
    if kind == "attr":
        return _getattr(_evaluate(node[1], doc, template), node[2])
    if kind == "item":
        return _getitem(_evaluate(node[1], doc, template), _evaluate(node[2], doc, template))
    if kind == "concat":
        return _soft_str(_evaluate(node[1], doc, template)) + _soft_str(_evaluate(node[2], doc, template))
    if kind == "filter":
        args = [_evaluate(a, doc, template) for a in node[3]]
        return _FILTERS[node[1]](_evaluate(node[2], doc, template), *args)
    if kind == "call":
        fn = _evaluate(node[1], doc, template)
        if not isinstance(fn, _Method) or fn.name not in _METHODS:
            name = fn.name if isinstance(fn, _Method) else type(fn).__name__
            raise TaskError(f"template {template!r}: unsupported call of {name!r}")
        try:
            return getattr(fn.obj, fn.name)(*[_evaluate(a, doc, template) for a in node[2]])
        except ValueError as e:
            raise _Undefined(f"{fn.name}(): {e}")
    raise AssertionError(kind)


def render(template: str, doc: Dict[str, Any]) -> str:
    """Renders a template as lm-eval's Jinja environment would, for the supported subset."""
    out: List[str] = []
    pos = 0
    for bad in ("{%", "{#"):
        if bad in template:
            raise TaskError(f"template {template!r}: unsupported Jinja construct {bad!r}")
    strip_next = False
    while True:
        start = template.find("{{", pos)
        literal = template[pos:] if start < 0 else template[pos:start]
        # jinja2's lexer normalises newlines in template data to the newline_sequence "\n".
        literal = literal.replace("\r\n", "\n").replace("\r", "\n")
        if strip_next:
            literal = literal.lstrip()
        if start >= 0 and template.startswith("{{-", start):
            literal = literal.rstrip()
        out.append(literal)
        if start < 0:
            break
        body = start + (3 if template.startswith("{{-", start) else 2)
        expr = _Expr(template, body, template)
        tree = expr.parse()
        try:
            out.append(_soft_str(_evaluate(tree, doc, template)))
        except _Undefined as e:
            raise TaskError(f"template {template!r}: {e}")
        pos, strip_next = expr.pos, expr.strip_after
    return "".join(out)


# ---------------------------------------------------------------------------------------------------
# Task configuration and documents
# ---------------------------------------------------------------------------------------------------

def _load_yaml(path: str, depth: int = 0) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise TaskError(f"{path}: {e}")
    if not isinstance(cfg, dict):
        raise TaskError(f"{path}: not a mapping")
    # lm_eval/utils.py load_yaml_config: `include` is read relative to the including file, and the
    # including file's keys override the included ones.
    inc = cfg.pop("include", None)
    if inc is not None:
        if depth > 8:
            raise TaskError(f"{path}: include nesting too deep")
        base = _load_yaml(os.path.join(os.path.dirname(path), inc), depth + 1)
        base.update(cfg)
        cfg = base
    return cfg


def _read_jsonl(path: str) -> List[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise TaskError(f"{path}:{n}: {e}")
    except OSError as e:
        raise TaskError(f"{path}: {e}")
    return rows


class Task:
    """One multiple-choice task, as lm_eval/api/task.py ConfigurableTask builds it."""

    def __init__(self, yaml_path: str):
        self.path = yaml_path
        c = _load_yaml(yaml_path)
        self.name = c.get("task") or os.path.splitext(os.path.basename(yaml_path))[0]
        if c.get("output_type") != "multiple_choice":
            raise TaskError(f"{yaml_path}: output_type {c.get('output_type')!r} is not multiple_choice")
        if c.get("dataset_path") != "json":
            raise TaskError(f"{yaml_path}: only dataset_path json is supported")
        # TaskConfig defaults (lm_eval/api/task.py TaskConfig): target_delimiter " ", fewshot_delimiter
        # "\n\n", description "".
        self.target_delimiter = c.get("target_delimiter", " ")
        self.fewshot_delimiter = c.get("fewshot_delimiter", "\n\n")
        self.description = c.get("description", "") or ""
        self.doc_to_text_cfg = c.get("doc_to_text")
        self.doc_to_target_cfg = c.get("doc_to_target")
        self.doc_to_choice_cfg = c.get("doc_to_choice")
        if self.doc_to_choice_cfg is None:
            raise TaskError(f"{yaml_path}: doc_to_choice is required for multiple_choice")
        self.num_fewshot = c.get("num_fewshot")
        self.splits = {k: c.get(k) for k in ("training_split", "validation_split", "test_split", "fewshot_split")}
        sampler = (c.get("fewshot_config") or {}).get("sampler", "default")
        if sampler not in ("default", "first_n"):
            raise TaskError(f"{yaml_path}: fewshot sampler {sampler!r} is not supported")
        self.sampler = sampler
        metrics = [m["metric"] for m in c.get("metric_list") or [{"metric": "acc"}]]
        for m in metrics:
            if m not in ("acc", "acc_norm"):
                raise TaskError(f"{yaml_path}: metric {m!r} is not supported")
        self.metrics = metrics
        self.dataset = self._load_data(c)
        # ConfigurableTask.__init__: self.features = the column names of the evaluation split.
        self.features: List[str] = []
        for row in self.eval_docs():
            for k in row:
                if k not in self.features:
                    self.features.append(k)

    def _load_data(self, c: dict) -> Dict[str, List[dict]]:
        files = (c.get("dataset_kwargs") or {}).get("data_files")
        if files is None:
            raise TaskError(f"{self.path}: dataset_kwargs.data_files is missing")
        if not isinstance(files, dict):
            files = {"train": files}  # HF datasets names a bare data_files entry the "train" split
        base = os.path.dirname(os.path.abspath(self.path))
        data = {}
        for split, paths in files.items():
            rows: List[dict] = []
            for p in paths if isinstance(paths, list) else [paths]:
                rows.extend(_read_jsonl(os.path.join(base, p)))
            data[split] = rows
        # HF datasets gives every row every column (missing ones as None).
        for split, rows in data.items():
            keys: List[str] = []
            for r in rows:
                keys.extend(k for k in r if k not in keys)
            data[split] = [{k: r.get(k) for k in keys} for r in rows]
        return data

    def _split(self, key: str) -> List[dict]:
        name = self.splits[key]
        if name not in self.dataset:
            raise TaskError(f"{self.path}: split {name!r} ({key}) is not in data_files")
        return self.dataset[name]

    def eval_docs(self) -> List[dict]:
        # Task.eval_docs: test docs if there is a test split, else validation docs.
        if self.splits["test_split"] is not None:
            return self._split("test_split")
        if self.splits["validation_split"] is not None:
            return self._split("validation_split")
        raise TaskError(f"{self.path}: no test_split or validation_split")

    def fewshot_docs(self) -> List[dict]:
        # ConfigurableTask.fewshot_docs: fewshot_split, else Task.fewshot_docs: training, validation, test.
        for key in ("fewshot_split", "training_split", "validation_split", "test_split"):
            if self.splits[key] is not None:
                return self._split(key)
        return []

    # ConfigurableTask.doc_to_text / doc_to_target / doc_to_choice -----------------------------------
    def doc_to_text(self, doc):
        t = self.doc_to_text_cfg
        if t is None:
            raise TaskError(f"{self.path}: doc_to_text is missing")
        if isinstance(t, int):
            return t
        if t in self.features:
            return doc[t]
        s = render(t, doc)
        return ast.literal_eval(s) if s.isdigit() else s  # doc_to_choice is always set here

    def doc_to_target(self, doc):
        t = self.doc_to_target_cfg
        if isinstance(t, (int, list)):
            return t
        if t in self.features:
            return doc[t]
        s = render(t, doc)
        if s.isdigit():
            return ast.literal_eval(s)
        if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
            try:
                return ast.literal_eval(s)
            except (SyntaxError, ValueError):
                return s
        return s

    def doc_to_choice(self, doc) -> List[str]:
        t = self.doc_to_choice_cfg
        if isinstance(t, list):
            return t
        if isinstance(t, dict):
            return list(t.values())
        if t in self.features:
            return doc[t]
        s = render(t, doc)
        try:
            return ast.literal_eval(s)
        except (SyntaxError, ValueError) as e:
            raise TaskError(f"{self.path}: doc_to_choice {t!r} rendered {s[:60]!r}, not a list: {e}")

    # contexts ----------------------------------------------------------------------------------
    def fewshot_context(self, doc, num_fewshot: int, rnd: random.Random) -> str:
        # ConfigurableTask.fewshot_context (no chat template, no system instruction): the description
        # (itself a template over the doc), then the sampler's examples, then doc_to_text(doc).
        labeled = render(self.description, doc) if self.description else ""
        if num_fewshot > 0:
            labeled += self._sampler_context(doc, num_fewshot, rnd)
        example = self.doc_to_text(doc)
        if isinstance(example, str):
            return labeled + example
        if isinstance(example, int):
            return labeled + self.doc_to_choice(doc)[example]
        raise TaskError(f"{self.path}: doc_to_text gave a {type(example).__name__}")

    def _sampler_context(self, doc, num_fewshot: int, rnd: random.Random) -> str:
        # lm_eval/api/samplers.py ContextSampler.get_context: one extra doc is drawn when
        # fewshot_split == test_split (both None counts as equal), the doc itself is removed,
        # each example is text + target_delimiter + target + fewshot_delimiter (the last two only
        # when the target is not ""); the default sampler is rnd.sample(docs, n), first_n docs[:n].
        docs = self.fewshot_docs()
        n = num_fewshot + 1 if self.splits["fewshot_split"] == self.splits["test_split"] else num_fewshot
        if self.sampler == "first_n":
            if n > len(docs):
                raise TaskError(f"{self.path}: {n} few-shot docs requested, {len(docs)} available")
            drawn = docs[:n]
        else:
            drawn = rnd.sample(docs, n)
        out = ""
        for ex in [x for x in drawn if x != doc][:num_fewshot]:
            text = self.doc_to_text(ex)
            target = self.doc_to_target(ex)
            out += text if isinstance(text, str) else self.doc_to_choice(ex)[text]
            if target != "":
                out += self.target_delimiter
                if isinstance(target, list):
                    out += str(target[0])
                elif isinstance(target, str):
                    out += target
                else:
                    out += str(self.doc_to_choice(ex)[target])
                out += self.fewshot_delimiter
        return out


# ---------------------------------------------------------------------------------------------------
# The model side: HFLM's request encoding and scoring
# ---------------------------------------------------------------------------------------------------

class ReferenceLM:
    """HFLM with the torch reference forward (fp32) and tools/bpe.py's tokenizer."""

    def __init__(self, checkpoint: str, with_model: bool = True):
        from bpe import Tokenizer
        if with_model:  # the tokenizer side alone needs no torch (unit tests)
            import torch
            from onnxmoe_ref import load_pretrained
            self.torch = torch
            self.model = load_pretrained(checkpoint)
        self.tok = Tokenizer.load(checkpoint)
        with open(os.path.join(checkpoint, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        tcfg_path = os.path.join(checkpoint, "tokenizer_config.json")
        tcfg = {}
        if os.path.exists(tcfg_path):
            with open(tcfg_path, encoding="utf-8") as f:
                tcfg = json.load(f)
        self.bos_id = self._special_id(tcfg.get("bos_token"))
        self.eos_id = self._special_id(tcfg.get("eos_token"))
        # HFLM.max_length: the model config's n_positions / max_position_embeddings / n_ctx first.
        self.max_length = next((cfg[k] for k in ("n_positions", "max_position_embeddings", "n_ctx") if k in cfg), 2048)

    def _special_id(self, token) -> Optional[int]:
        if isinstance(token, dict):
            token = token.get("content")
        if token is None:
            return None
        for content, i in self.tok.specials:
            if content == token:
                return i
        return self.tok.vocab.get(token)

    @property
    def prefix_token_id(self) -> int:
        # lm_eval/models/huggingface.py HFLM.prefix_token_id: the tokenizer's BOS id, else its EOS id.
        return self.bos_id if self.bos_id is not None else self.eos_id

    def tok_encode(self, s: str) -> List[int]:
        # HFLM.tok_encode: causal models encode with add_special_tokens=False (add_bos_token False).
        return self.tok.encode(s, add_special_tokens=False)

    def encode_request(self, context: str, continuation: str) -> Tuple[List[int], List[int]]:
        # lm_eval/api/model.py TemplateLM.loglikelihood: an empty context becomes [prefix_token_id]
        # and the continuation is encoded alone; otherwise TemplateLM._encode_pair: the context's
        # trailing whitespace moves to the continuation, and the continuation tokens are
        # encode(context + continuation) after the first len(encode(context)) tokens.
        if context == "":
            return [self.prefix_token_id], self.tok_encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return ctx, whole[len(ctx):]

    def score(self, context_enc: List[int], continuation_enc: List[int]) -> Tuple[float, bool]:
        # lm_eval/models/huggingface.py HFLM._loglikelihood_tokens: input (ctx + cont)[-(max_length+1):][:-1],
        # log_softmax over the vocabulary, the last len(cont) positions; the answer is the sum of the
        # continuation tokens' log-probabilities and whether every greedy argmax equals the token.
        torch = self.torch
        if not context_enc or not continuation_enc:
            raise TaskError(f"empty context or continuation encoding ({len(context_enc)}, {len(continuation_enc)} tokens)")
        inp = (context_enc + continuation_enc)[-(self.max_length + 1):][:-1]
        with torch.no_grad():
            logits, _ = self.model(torch.tensor([inp], dtype=torch.long))
            logp = torch.log_softmax(logits[0].float(), dim=-1)
        n = len(continuation_enc)
        sel = logp[len(inp) - n:len(inp)]
        cont = torch.tensor(continuation_enc, dtype=torch.long)
        ll = float(sel.gather(1, cont[:, None]).sum())
        greedy = bool((sel.argmax(dim=-1) == cont).all())
        return ll, greedy


# ---------------------------------------------------------------------------------------------------
# Evaluation: requests, per-doc metrics, aggregation
# ---------------------------------------------------------------------------------------------------

def _argmax(xs: Sequence[float]) -> int:
    best = 0  # numpy.argmax: the first index on ties
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def mean_stderr(xs: Sequence[float]) -> float:
    # lm_eval/api/metrics.py mean_stderr: sample_stddev (n - 1 denominator) / sqrt(n).
    mu = sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) / math.sqrt(len(xs))


def evaluate_task(task: Task, lm: ReferenceLM, limit: Optional[int] = None, num_fewshot: Optional[int] = None,
                  fewshot_seed: int = 1234) -> dict:
    """Returns {"name", "n", "num_fewshot", "samples": [...], "metrics": {metric: value, metric_stderr: value}}."""
    # lm_eval/evaluator.py simple_evaluate: --num_fewshot overrides the YAML's value unless the YAML
    # says 0; without either it is 0. set_fewshot_seed(1234) gives the sampler one
    # random.Random(1234) that every doc's context draws from in doc order (Task.build_all_requests);
    # --limit keeps the first N docs (Task.doc_iterator, islice).
    if num_fewshot is None or task.num_fewshot == 0:
        num_fewshot = task.num_fewshot or 0
    rnd = random.Random(fewshot_seed)
    docs = task.eval_docs()
    if limit is not None:
        docs = docs[:limit]
    if not docs:
        raise TaskError(f"{task.path}: no documents")
    samples = []
    per_metric: Dict[str, List[float]] = {m: [] for m in task.metrics}
    for doc_id, doc in enumerate(docs):
        ctx = task.fewshot_context(doc, num_fewshot, rnd)
        choices = task.doc_to_choice(doc)
        # ConfigurableTask.construct_requests (multiple_choice): one request per choice,
        # (ctx, target_delimiter + choice).
        args = [(ctx, f"{task.target_delimiter}{c}") for c in choices]
        resps = []
        for c, cont in args:
            ce, ne = lm.encode_request(c, cont)
            resps.append(lm.score(ce, ne))
        lls = [r[0] for r in resps]
        # ConfigurableTask.process_results (multiple_choice): pred = argmax(lls); acc_norm divides
        # each ll by len(choice) in characters (the choice without the delimiter); an int gold past
        # the choices, or a str gold not among them, is -100 (never equal).
        pred = _argmax(lls)
        pred_norm = _argmax([ll / float(len(c)) for ll, c in zip(lls, choices)])
        gold = task.doc_to_target(doc)
        if isinstance(gold, list):
            raise TaskError(f"{task.path}: multiple targets are not supported")
        if isinstance(gold, str):
            gold = choices.index(gold) if gold in choices else -100
        elif gold >= len(choices):
            gold = -100
        values = {"acc": 1.0 if pred == gold else 0.0, "acc_norm": 1.0 if pred_norm == gold else 0.0}
        for m in task.metrics:
            per_metric[m].append(values[m])
        samples.append({"doc_id": doc_id, "target": gold, "arguments": args, "resps": resps,
                        **{m: values[m] for m in task.metrics}})
    metrics: Dict[str, Any] = {}
    for m, xs in per_metric.items():
        metrics[m] = sum(xs) / len(xs)
        # lm_eval/evaluator_utils.py TaskOutput.calculate_aggregate_metric: "N/A" for a single item.
        metrics[m + "_stderr"] = mean_stderr(xs) if len(xs) > 1 else "N/A"
    return {"name": task.name, "n": len(docs), "num_fewshot": num_fewshot, "samples": samples, "metrics": metrics}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--tasks", required=True, help="comma-separated task.yaml paths")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--num-fewshot", type=int, help="as lm-eval's --num_fewshot (a YAML num_fewshot of 0 wins)")
    ap.add_argument("--output-path", help="writes reference.json (per-doc requests and scores, metrics)")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    try:
        tasks = [Task(p) for p in a.tasks.split(",")]
        lm = ReferenceLM(a.checkpoint)
        results = [evaluate_task(t, lm, a.limit, a.num_fewshot) for t in tasks]
    except TaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in results:
        m = r["metrics"]
        print(f"{r['name']:24} n={r['n']:4} " + " ".join(f"{k}={v if isinstance(v, str) else round(v, 4)}" for k, v in m.items()))
    if a.output_path:
        os.makedirs(a.output_path, exist_ok=True)
        tmp = os.path.join(a.output_path, "reference.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f, ensure_ascii=False, indent=1)
        os.replace(tmp, os.path.join(a.output_path, "reference.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
