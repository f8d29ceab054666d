"""Self-checks of the Python tooling (fast, CPU):

    /usr/bin/python3 -m unittest discover -s tools/tests -v      (from the repository root)
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import unittest

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bpe  # noqa: E402
import text_sources  # noqa: E402
import train_tiny  # noqa: E402
from onnxmoe_ref import MoeForCausalLM, golden_logits, load_pretrained, make_config, save_pretrained  # noqa: E402
from onnxmoe_ref import safetensors_io as st  # noqa: E402

FAMILIES_DIR = os.path.join(ROOT, "tests", "data", "families")
TOKENIZER_DIRS = [os.path.join(ROOT, p) for p in
                  ("models/tiny-mixtral", "models/tiny-deepseek", "tests/data/tokenizers/bytelevel-gpt2")]


class SafetensorsTests(unittest.TestCase):
    def test_round_trip_all_float_dtypes(self):
        g = torch.Generator().manual_seed(0)
        src = {"a": torch.randn(3, 5, generator=g), "b.c": torch.arange(7, dtype=torch.int64)}
        with tempfile.TemporaryDirectory() as d:
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                p = os.path.join(d, "x.safetensors")
                st.save_file({"a": src["a"].to(dtype), "b.c": src["b.c"]}, p)
                back = st.load_file(p)
                self.assertEqual(back["a"].dtype, dtype)
                self.assertTrue(torch.equal(back["a"], src["a"].to(dtype)))
                self.assertTrue(torch.equal(back["b.c"], src["b.c"]))

    def test_header_violations_are_reported(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.safetensors")
            st.save_file({"a": torch.zeros(4)}, p)
            data = open(p, "rb").read()
            open(p, "wb").write(data[:-4])  # truncated data area
            with self.assertRaisesRegex(st.SafetensorsError, "outside the file|data area"):
                st.read_header(p)
            header = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}).encode()
            open(p, "wb").write(struct.pack("<Q", len(header)) + header + bytes(16))
            with self.assertRaisesRegex(st.SafetensorsError, "dtype x shape"):
                st.read_header(p)

    def test_sharded_checkpoint_round_trip(self):
        model = MoeForCausalLM(make_config("mixtral"))
        with tempfile.TemporaryDirectory() as d:
            save_pretrained(model, d, shards=3)
            self.assertTrue(os.path.exists(os.path.join(d, "model.safetensors.index.json")))
            back = load_pretrained(d)
            for k, v in model.hf_state_dict().items():
                self.assertTrue(torch.equal(v, back.hf_state_dict()[k]), k)


class ReferenceForwardTests(unittest.TestCase):
    def test_family_and_trained_goldens_reproduce(self):
        folders = [os.path.join(FAMILIES_DIR, f) for f in sorted(os.listdir(FAMILIES_DIR))]
        folders += [os.path.join(ROOT, "models", m) for m in ("tiny-mixtral", "tiny-deepseek")]
        for folder in folders:
            family = os.path.basename(folder)
            if not os.path.exists(os.path.join(folder, "golden.safetensors")):
                continue
            model = load_pretrained(folder)
            golden = st.load_file(os.path.join(folder, "golden.safetensors"))
            n = len([k for k in golden if k.endswith(".input_ids")])
            self.assertGreaterEqual(n, 2)
            prompts = [golden[f"prompt_{i}.input_ids"][0].tolist() for i in range(n)]
            for i, lg in enumerate(golden_logits(model, prompts)):
                diff = (lg - golden[f"prompt_{i}.logits"]).abs().max().item()
                self.assertLess(diff, 1e-5, f"{family} prompt {i}")

    def test_causality_prefix_logits_match(self):
        # logits of a prefix must equal the first positions of the longer sequence's logits
        model = load_pretrained(os.path.join(FAMILIES_DIR, "qwen3_moe"))
        ids = list(range(3, 20))
        full, _ = model(torch.tensor([ids]))
        pre, _ = model(torch.tensor([ids[:7]]))
        self.assertLess((full[0, :7] - pre[0]).abs().max().item(), 1e-5)

    def test_dense_and_moe_layers_follow_config(self):
        spec = lambda fam: load_pretrained(os.path.join(FAMILIES_DIR, fam)).spec.moe_layers  # noqa: E731
        self.assertEqual(spec("deepseek"), [False, True, True])
        self.assertEqual(spec("qwen2_moe"), [False, True, False, True])
        self.assertEqual(spec("qwen3_moe"), [True, False, True])


class TokenizerTests(unittest.TestCase):
    def test_golden_ids_reproduce(self):
        for folder in TOKENIZER_DIRS:
            if not os.path.exists(os.path.join(folder, "tokenizer_golden.json")):
                continue
            tok = bpe.Tokenizer.load(folder)
            golden = json.load(open(os.path.join(folder, "tokenizer_golden.json"), encoding="utf-8"))
            for case in golden["cases"]:
                self.assertEqual(tok.encode(case["text"]), case["ids"], f"{folder}: {case['text']!r}")
                self.assertEqual(tok.decode(case["ids"]), case["decoded"])

    def test_round_trip_text(self):
        for folder in TOKENIZER_DIRS:
            tok = bpe.Tokenizer.load(folder)
            for s in bpe.GOLDEN_STRINGS:
                self.assertEqual(tok.decode(tok.encode(s)), s, f"{folder}: {s!r}")

    def test_merge_by_rank_not_by_position(self):
        # "abc" with merges (b c) ranked before (a b): BPE must merge b+c first.
        vocab = {c: i for i, c in enumerate("abc")}
        vocab.update({"bc": 3, "ab": 4, "abc": 5})
        tok = bpe.Tokenizer("bytelevel", vocab, [("b", "c"), ("a", "b"), ("a", "bc")], [])
        self.assertEqual(tok.bpe(list("abc")), ["abc"])
        tok2 = bpe.Tokenizer("bytelevel", vocab, [("b", "c"), ("a", "b")], [])
        self.assertEqual(tok2.bpe(list("abc")), ["a", "bc"])


class CorpusTests(unittest.TestCase):
    """The training corpus of models/small-mixtral never holds held-out (task) or calibration text."""

    def test_overlap_check_finds_a_planted_verse_and_run(self):
        protected = "And he said unto them, Go ye into all the world, and preach the gospel to every creature.\n"
        clean = {"gcide": "Gospel: glad tidings; especially, the good news concerning Christ.\n"}
        self.assertEqual(train_tiny.corpus_overlap(clean, protected), [])
        planted = {"kjv": protected, "fortunes": "Go ye into all the world, and preach the gospel -- Mark\n"}
        problems = train_tiny.corpus_overlap(planted, protected)
        self.assertEqual(len(problems), 2, problems)
        kept, dropped = text_sources.filter_overlap(planted["fortunes"].splitlines() + ["an unrelated line"],
                                                    text_sources.shingles(protected))
        self.assertEqual((kept, dropped), (["an unrelated line"], 1))

    def test_written_corpus_does_not_overlap_heldout_or_calibration(self):
        corpus = os.path.join(ROOT, train_tiny.CORPUS)
        names = sorted(f[:-4] for f in os.listdir(corpus) if f.endswith(".txt")) if os.path.isdir(corpus) else []
        if not names:
            self.skipTest(f"{corpus}: not written (run tools/train_tiny.py data)")
        texts = {}
        for n in names:
            with open(os.path.join(corpus, n + ".txt"), encoding="utf-8") as f:
                texts[n] = f.read()
        protected = ""
        for split in ("heldout", "calibration"):
            with open(os.path.join(ROOT, train_tiny.DATA, f"kjv-{split}.txt"), encoding="utf-8") as f:
                protected += f.read()
        self.assertEqual(set(names), set(train_tiny.MODELS["small-mixtral"]["corpus"]))
        self.assertEqual(train_tiny.corpus_overlap(texts, protected), [])


if __name__ == "__main__":
    unittest.main()
