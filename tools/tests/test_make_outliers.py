"""tools/make_outliers.py on the five random family checkpoints (fast, CPU):

    /usr/bin/python3 -m unittest tools/tests/test_make_outliers.py -v      (from the repository root)
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import make_outliers as mo  # noqa: E402
from onnxmoe_ref import load_pretrained  # noqa: E402
from onnxmoe_ref import safetensors_io as st  # noqa: E402

FAMILIES_DIR = os.path.join(ROOT, "tests", "data", "families")
FAMILIES = ("deepseek", "mixtral", "olmoe", "qwen2_moe", "qwen3_moe")
SCALE = 37.0          # not a power of two: the rescale is then exact only up to fp32 rounding
TOLERANCE = 1e-4      # max |logit diff| relative to the largest logit


class MakeOutliersTests(unittest.TestCase):
    def test_function_preserved_and_ratio_reaches_the_scale_in_every_family(self):
        for family in FAMILIES:
            src = os.path.join(FAMILIES_DIR, family)
            with self.subTest(family=family), tempfile.TemporaryDirectory() as d:
                dst = os.path.join(d, "out")
                with redirect_stdout(io.StringIO()):
                    meta = mo.run(src, dst, channels=2, scale=SCALE, seed=3, windows=2, seq_len=24,
                                  tolerance=TOLERANCE)
                with open(os.path.join(dst, "config.json"), encoding="utf-8") as f:
                    self.assertEqual(json.load(f)["torch_dtype"], "float32")
                self.assertTrue(all(v.dtype == torch.float32 for v in st.load_checkpoint(dst).values()))
                # Checked again here, independently of the tool's own check: DST as a user loads it.
                a, b = load_pretrained(src), load_pretrained(dst)
                g = torch.Generator().manual_seed(7)
                ids = torch.randint(0, a.spec.vocab_size, (1, 40), generator=g)
                with torch.no_grad():
                    la, lb = a(ids)[0], b(ids)[0]
                self.assertLess(float((la - lb).abs().max()), TOLERANCE * float(la.abs().max()))
                tied = a.spec.tie_word_embeddings
                for name, after in meta["ratio_after"].items():
                    before = meta["ratio_before"][name]
                    if name == "model.norm" and tied:
                        self.assertAlmostEqual(after, before, places=3)   # left alone: lm_head is the embedding
                        continue
                    # the chosen channels' RMS grows by SCALE; the median barely moves (2 of 64 channels)
                    self.assertGreater(after, SCALE / 3, name)
                    self.assertGreater(after, 5 * before, name)
                # the same channels are scaled in every norm
                tensors = st.load_checkpoint(dst)
                src_tensors = st.load_checkpoint(src)
                for norm, _ in mo.norm_readers(a.spec):
                    ratio = tensors[norm] / src_tensors[norm].float()
                    big = sorted((ratio > SCALE / 2).nonzero().flatten().tolist())
                    self.assertEqual(big, meta["channels"], norm)

    def test_a_missed_reader_breaks_preservation(self):
        # If one linear reading a scaled norm were left uncompensated, the check must see it.
        src = os.path.join(FAMILIES_DIR, "qwen2_moe")
        config, tensors = mo.read_checkpoint(src)
        spec = mo.spec_from_config(config)
        channels = mo.pick_channels(spec.hidden_size, 2, 3)
        windows = mo.token_windows(src, spec.vocab_size, mo.HELDOUT_TEXT, 2, 24, 5)
        ref = mo.build_model(config, tensors)
        moe_layer = spec.moe_layers.index(True)
        for missed in (f"model.layers.{moe_layer}.mlp.shared_expert_gate.weight",
                       f"model.layers.{moe_layer}.mlp.gate.weight", "lm_head.weight"):
            broken = mo.build_model(config, mo.rescale(tensors, spec, channels, SCALE, skip=[missed]))
            diff, peak = mo.max_logit_diff(ref, broken, windows)
            self.assertGreater(diff / peak, 100 * TOLERANCE, missed)
        whole = mo.build_model(config, mo.rescale(tensors, spec, channels, SCALE))
        diff, peak = mo.max_logit_diff(ref, whole, windows)
        self.assertLess(diff / peak, TOLERANCE)

    def test_bad_input_is_one_error_and_nothing_written(self):
        with tempfile.TemporaryDirectory() as d:
            dst = os.path.join(d, "out")
            err = io.StringIO()
            sys_stderr, sys.stderr = sys.stderr, err
            try:
                self.assertEqual(mo.main([d, dst, "--channels", "2", "--scale", "10"]), 1)
                self.assertEqual(mo.main([os.path.join(FAMILIES_DIR, "mixtral"), dst, "--channels", "999",
                                          "--scale", "10"]), 1)
                self.assertEqual(mo.main([os.path.join(FAMILIES_DIR, "mixtral"), dst, "--channels", "2",
                                          "--scale", "-1"]), 1)
            finally:
                sys.stderr = sys_stderr
            lines = err.getvalue().splitlines()
            self.assertEqual(len(lines), 3, lines)
            self.assertIn("config.json: not found", lines[0])
            self.assertIn("--channels 999", lines[1])
            self.assertIn("--scale -1", lines[2])
            self.assertEqual(os.listdir(d), [])


if __name__ == "__main__":
    unittest.main()
