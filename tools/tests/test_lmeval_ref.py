"""Self-checks of tools/lmeval_ref.py (fast, no model forward):

    /usr/bin/python3 -m unittest tools/tests/test_lmeval_ref.py -v      (from the repository root)
"""

from __future__ import annotations

import ast
import json
import os
import random
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import lmeval_ref as ref  # noqa: E402
from lmeval_ref import TaskError, render  # noqa: E402

ARC_DOC = {"question": "Which is 'it'?", "answerKey": "C",
           "choices": {"text": ["a \"b\"", "it's", "x\ny", "d"], "label": ["A", "B", "C", "D"]}}


class JinjaSubsetTest(unittest.TestCase):
    def test_arc_easy_templates(self):
        self.assertEqual(render("Question: {{question}}\nAnswer:", ARC_DOC), "Question: Which is 'it'?\nAnswer:")
        self.assertEqual(render("{{choices.label.index(answerKey)}}", ARC_DOC), "2")
        # A list renders as Python's repr, which doc_to_choice's ast.literal_eval reads back exactly.
        self.assertEqual(ast.literal_eval(render("{{choices.text}}", ARC_DOC)), ARC_DOC["choices"]["text"])

    def test_piqa_list_literal(self):
        doc = {"sol1": "pour 'it'", "sol2": 'say "x"'}
        self.assertEqual(render("{{[sol1, sol2]}}", doc), str(["pour 'it'", 'say "x"']))

    def test_indexing_filters_and_literals(self):
        doc = {"xs": ["a", "b", "c"], "d": {"k": 5}, "s": "  Hi  "}
        self.assertEqual(render("{{xs[0]}}{{ xs[-1] }}{{d['k']}}{{d.k}}", doc), "ac55")
        self.assertEqual(render('{{ xs | join(", ") }}', doc), "a, b, c")
        self.assertEqual(render("{{s|trim|lower}}|{{ s | upper }}|{{xs|length}}", doc), "hi|  HI  |3")
        self.assertEqual(render("{{ 'q' ~ xs[1] }}", doc), "qb")
        self.assertEqual(render("{{ none }} {{ d }}", doc), "None {'k': 5}")

    def test_whitespace_control_and_trailing_newline(self):
        doc = {"a": "x"}
        self.assertEqual(render("p  \n{{- a -}}  \n q", doc), "pxq")
        self.assertEqual(render("{{a}}\n", doc), "x\n")  # keep_trailing_newline=True, as lm-eval sets it
        self.assertEqual(render("", doc), "")

    def test_unsupported_and_undefined_are_errors(self):
        for bad in ("{% if a %}x{% endif %}", "{# c #}", "{{ a | title }}", "{{ a.format() }}", "{{ a + 1 }}",
                    "{{ missing }}", "{{ d.nokey }}", "{{ a"):
            with self.assertRaises(TaskError, msg=bad):
                render(bad, {"a": "x", "d": {}})


class _CharTokenizer:
    """One token per character; id = code point (enough to see which characters each side gets)."""
    specials = []
    vocab = {}

    def encode(self, s, add_special_tokens=False):
        return [ord(c) for c in s]


def _lm(tokenizer=None, bos=1, eos=2):
    lm = ref.ReferenceLM.__new__(ref.ReferenceLM)
    lm.tok, lm.bos_id, lm.eos_id = tokenizer or _CharTokenizer(), bos, eos
    return lm


class EncodePairTest(unittest.TestCase):
    def test_trailing_whitespace_moves_to_the_continuation(self):
        ctx, cont = _lm().encode_request("Answer: \n", " yes")
        self.assertEqual("".join(map(chr, ctx)), "Answer:")
        self.assertEqual("".join(map(chr, cont)), " \n yes")

    def test_continuation_is_the_tail_of_the_whole_encoding(self):
        # A tokenizer that merges across the boundary: the continuation is whole[len(ctx):], not encode(cont).
        class Merging(_CharTokenizer):
            def encode(self, s, add_special_tokens=False):
                out, i = [], 0
                while i < len(s):
                    if s.startswith("ab", i):
                        out.append(999)
                        i += 2
                    else:
                        out.append(ord(s[i]))
                        i += 1
                return out
        ctx, cont = _lm(Merging()).encode_request("xa", "b")
        self.assertEqual(ctx, [ord("x"), ord("a")])
        self.assertEqual(cont, [])  # encode("xab") = [x, 999]: nothing past the context's 2 tokens
        ctx, cont = _lm(Merging()).encode_request("xa", "bb")
        self.assertEqual(cont, [ord("b")])

    def test_empty_context_is_bos_else_eos(self):
        self.assertEqual(_lm(bos=1, eos=2).encode_request("", " a"), ([1], [ord(" "), ord("a")]))
        self.assertEqual(_lm(bos=None, eos=7).encode_request("", " a")[0], [7])

    def test_real_tokenizers_prefix(self):
        # tiny-mixtral: SentencePiece-style with <s>; tiny-deepseek: byte-level, no BOS, so EOS.
        for name, want in (("tiny-mixtral", "<s>"), ("tiny-deepseek", "<|endoftext|>")):
            lm = ref.ReferenceLM(os.path.join(ROOT, "models", name), with_model=False)
            self.assertEqual(lm.prefix_token_id, lm.tok.vocab.get(want, dict(lm.tok.specials).get(want)))
            ctx, cont = lm.encode_request("In the beginning ", "God")
            self.assertEqual(ctx + cont, lm.tok.encode("In the beginning God", add_special_tokens=False))
            self.assertEqual(ctx, lm.tok.encode("In the beginning", add_special_tokens=False))


class TaskTest(unittest.TestCase):
    def _task(self, cfg: dict, rows: dict) -> ref.Task:
        d = tempfile.mkdtemp(prefix="lmeval-ref-test-")
        files = {}
        for split, docs in rows.items():
            files[split] = f"{split}.jsonl"
            with open(os.path.join(d, files[split]), "w") as f:
                f.writelines(json.dumps(x) + "\n" for x in docs)
        base = {"task": "t", "dataset_path": "json", "dataset_kwargs": {"data_files": files},
                "output_type": "multiple_choice", "doc_to_choice": ["n", "y"], "doc_to_text": "{{q}}",
                "doc_to_target": "a"}
        base.update(cfg)
        path = os.path.join(d, "t.yaml")
        with open(path, "w") as f:
            json.dump(base, f)  # JSON is YAML
        return ref.Task(path)

    def test_fewshot_same_split_draws_one_more_and_drops_the_doc(self):
        docs = [{"q": f"q{i}", "a": i % 2} for i in range(6)]
        t = self._task({"test_split": "test", "fewshot_split": "test", "description": "D{{a}}\n"}, {"test": docs})
        ctx = t.fewshot_context(docs[0], 2, random.Random(1234))
        drawn = [x for x in random.Random(1234).sample(docs, 3) if x != docs[0]][:2]
        want = "D0\n" + "".join(f"{x['q']} {'ny'[x['a']]}\n\n" for x in drawn) + "q0"
        self.assertEqual(ctx, want)

    def test_eval_split_and_errors(self):
        t = self._task({"validation_split": "validation"}, {"validation": [{"q": "x", "a": 1}]})
        self.assertEqual(t.eval_docs(), [{"q": "x", "a": 1}])
        with self.assertRaises(TaskError):
            self._task({"output_type": "generate_until", "test_split": "test"}, {"test": [{"q": "x", "a": 1}]})

    def test_mean_stderr(self):
        xs = [1.0, 0.0, 0.0, 1.0, 1.0]
        mu = 0.6
        want = (sum((x - mu) ** 2 for x in xs) / 4) ** 0.5 / 5 ** 0.5
        self.assertAlmostEqual(ref.mean_stderr(xs), want, places=15)


if __name__ == "__main__":
    unittest.main()
