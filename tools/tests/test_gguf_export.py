"""Self-checks of tools/gguf_export.py without llama.cpp (tools/gguf_check.py runs llama.cpp on the files):

    /usr/bin/python3 -m unittest discover -s tools/tests -v      (from the repository root)
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gguf_export as gx  # noqa: E402
from onnxmoe_ref import safetensors_io as st  # noqa: E402

TINY = os.path.join(ROOT, "models", "tiny-mixtral")


def read_gguf(path: str):
    """A minimal GGUF v3 reader written from the format description: (metadata, tensors, data start)."""
    with open(path, "rb") as f:
        buf = f.read()
    r = io.BytesIO(buf)

    def u(fmt):
        return struct.unpack(fmt, r.read(struct.calcsize(fmt)))[0]

    def string():
        return r.read(u("<Q")).decode("utf-8")

    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = u("<I"), u("<Q")
            return [value(et) for _ in range(n)]
        return u(scalar[t])

    assert r.read(4) == b"GGUF"
    version, n_tensors, n_kv = u("<I"), u("<Q"), u("<Q")
    meta = {"version": version}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(u("<I"))
    tensors = {}
    for _ in range(n_tensors):
        name = string()
        ne = [u("<Q") for _ in range(u("<I"))]
        tensors[name] = (ne, u("<I"), u("<Q"))
    start = r.tell() + (-r.tell()) % meta.get("general.alignment", 32)
    return meta, tensors, start, buf


class Q4_0Tests(unittest.TestCase):
    def test_block_by_hand(self):
        # x[j] = j - 16: the largest magnitude is x[0] = -16, so d = -16 / -8 = 2 and code = floor(x / 2 + 8.5)
        x = torch.arange(32, dtype=torch.float32) - 16
        blocks, deq = gx.quantize_q4_0(x)
        self.assertEqual(blocks.shape, (1, 18))
        self.assertEqual(np.frombuffer(blocks[0, :2].tobytes(), dtype="<f2")[0], 2.0)
        codes = [int(np.floor((j - 16) / 2 + 8.5)) for j in range(32)]
        codes = [min(c, 15) for c in codes]
        expect = [codes[j] | (codes[j + 16] << 4) for j in range(16)]  # element j low nibble, j + 16 high
        self.assertEqual(list(blocks[0, 2:]), expect)
        self.assertTrue(torch.equal(deq, (torch.tensor(codes, dtype=torch.float32) - 8) * 2))

    def test_positive_maximum_gives_negative_scale(self):
        x = torch.zeros(32)
        x[5] = 4.0
        blocks, deq = gx.quantize_q4_0(x)
        self.assertEqual(np.frombuffer(blocks[0, :2].tobytes(), dtype="<f2")[0], -0.5)
        self.assertEqual(blocks[0, 2 + 5] & 15, 0)      # 4 / -0.5 + 8 = 0
        self.assertEqual(deq[5].item(), 4.0)
        self.assertEqual(deq[0].item(), 0.0)

    def test_q8_0_rounds_half_away_from_zero(self):
        x = torch.zeros(32)
        x[0], x[1], x[2] = 127.0, 0.5, -0.5            # d = 1
        blocks, deq = gx.quantize_q8_0(x)
        q = blocks[0, 2:].view(np.int8)
        self.assertEqual((q[0], q[1], q[2]), (127, 1, -1))
        self.assertEqual(deq[1].item(), 1.0)


class GgufFileTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.weights = st.load_checkpoint(TINY)
        with open(os.path.join(TINY, "config.json"), encoding="utf-8") as f:
            cls.cfg = json.load(f)
        cls.files = {}
        for t in ("f32", "q4_0"):
            cls.files[t] = os.path.join(cls.tmp, f"{t}.gguf")
            gx.export(TINY, cls.files[t], t, log=lambda m: None)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def tensor(self, kind, name):
        _, tensors, start, buf = read_gguf(self.files[kind])
        ne, t, off = tensors[name]
        self.assertEqual(off % 32, 0)
        return ne, t, buf[start + off: start + off + gx.nbytes(ne, t)]

    def test_metadata(self):
        meta, tensors, start, buf = read_gguf(self.files["f32"])
        c = self.cfg
        self.assertEqual(meta["version"], 3)
        self.assertEqual(meta["general.architecture"], "llama")
        self.assertEqual(meta["llama.block_count"], c["num_hidden_layers"])
        self.assertEqual(meta["llama.embedding_length"], c["hidden_size"])
        self.assertEqual(meta["llama.feed_forward_length"], c["intermediate_size"])
        self.assertEqual(meta["llama.attention.head_count_kv"], c["num_key_value_heads"])
        self.assertEqual(meta["llama.expert_count"], c["num_local_experts"])
        self.assertEqual(meta["llama.expert_used_count"], c["num_experts_per_tok"])
        self.assertEqual(meta["llama.rope.dimension_count"], c["hidden_size"] // c["num_attention_heads"])
        self.assertAlmostEqual(meta["llama.attention.layer_norm_rms_epsilon"], c["rms_norm_eps"], places=9)
        self.assertEqual(len(meta["tokenizer.ggml.tokens"]), c["vocab_size"])
        with open(os.path.join(TINY, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)["model"]["vocab"]
        self.assertEqual(meta["tokenizer.ggml.tokens"][tok["▁the"]], "▁the")
        self.assertEqual(meta["tokenizer.ggml.token_type"][tok["<0x0A>"]], gx.TOKEN_BYTE)
        self.assertEqual(meta["tokenizer.ggml.token_type"][1], gx.TOKEN_CONTROL)
        self.assertEqual(len(tensors), 3 + 10 * c["num_hidden_layers"])
        last = max(off + gx.nbytes(ne, t) for ne, t, off in tensors.values())
        self.assertEqual(len(buf), start + last + (-last) % 32)

    def test_f32_data_is_the_checkpoint(self):
        H, heads = self.cfg["hidden_size"], self.cfg["num_attention_heads"]
        d = H // heads
        ne, t, data = self.tensor("f32", "blk.1.attn_q.weight")
        got = torch.from_numpy(np.frombuffer(data, dtype="<f4").copy()).reshape(ne[1], ne[0])
        q = self.weights["model.layers.1.self_attn.q_proj.weight"].float()
        # GGUF row 2i of head h is HF row i, row 2i + 1 is HF row i + d/2 (rotate-half -> interleaved pairs)
        for h in (0, heads - 1):
            for i in (0, d // 2 - 1):
                self.assertTrue(torch.equal(got[h * d + 2 * i], q[h * d + i]))
                self.assertTrue(torch.equal(got[h * d + 2 * i + 1], q[h * d + d // 2 + i]))
        ne, t, data = self.tensor("f32", "blk.2.ffn_down_exps.weight")
        self.assertEqual(ne, [self.cfg["intermediate_size"], H, self.cfg["num_local_experts"]])
        stacked = torch.from_numpy(np.frombuffer(data, dtype="<f4").copy()).reshape(ne[2], ne[1], ne[0])
        self.assertTrue(torch.equal(stacked[3], self.weights["model.layers.2.block_sparse_moe.experts.3.w2.weight"].float()))

    def test_q4_0_types_and_blocks(self):
        _, tensors, _, _ = read_gguf(self.files["q4_0"])
        types = {n: t for n, (_, t, _) in tensors.items()}
        self.assertEqual(types["blk.0.ffn_gate_exps.weight"], gx.Q4_0)
        self.assertEqual(types["token_embd.weight"], gx.Q4_0)
        self.assertEqual(types["blk.0.attn_v.weight"], gx.Q8_0)     # 8 experts: llama.cpp's rule
        self.assertEqual(types["blk.0.ffn_gate_inp.weight"], gx.F32)
        self.assertEqual(types["output_norm.weight"], gx.F32)
        ne, t, data = self.tensor("q4_0", "blk.0.ffn_up_exps.weight")
        w = self.weights["model.layers.0.block_sparse_moe.experts.0.w3.weight"].float()
        self.assertEqual(data[: w.numel() // 32 * 18], gx.quantize_q4_0(w)[0].tobytes())

    def test_export_is_deterministic(self):
        again = os.path.join(self.tmp, "again.gguf")
        gx.export(TINY, again, "q4_0", log=lambda m: None)
        with open(again, "rb") as a, open(self.files["q4_0"], "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_vocabulary_without_tokenizer_or_larger_than_it(self):
        tokens, _, types, source = gx.read_vocab(self.tmp, 300)      # no tokenizer.json here
        self.assertEqual((tokens[2], tokens[3 + 0x41], tokens[299]), ("</s>", "<0x41>", "<placeholder_299>"))
        self.assertEqual((types[0], types[3], types[299]), (gx.TOKEN_UNKNOWN, gx.TOKEN_BYTE, gx.TOKEN_UNUSED))
        self.assertIn("no tokenizer.json", source)
        tokens, scores, types, source = gx.read_vocab(TINY, self.cfg["vocab_size"] + 10)
        self.assertEqual(tokens[-1], f"<placeholder_{self.cfg['vocab_size'] + 9}>")
        self.assertIn("10 placeholder tokens", source)
        with open(os.path.join(TINY, "tokenizer.json"), encoding="utf-8") as f:
            model = json.load(f)["model"]
        first = model["merges"][0]
        merged = "".join(first.split(" ") if isinstance(first, str) else first)
        self.assertEqual(scores[model["vocab"][merged]], -1.0)        # the first merge scores highest

    def test_bad_input_is_one_line_and_no_file(self):
        bad = os.path.join(self.tmp, "bad")
        shutil.copytree(TINY, bad)
        cfg = dict(self.cfg, architectures=["Qwen2MoeForCausalLM"])
        with open(os.path.join(bad, "config.json"), "w") as f:
            json.dump(cfg, f)
        out = os.path.join(self.tmp, "bad.gguf")
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gguf_export.py"), bad, "-o", out],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("config.json", p.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith(".bad.gguf")], [])


if __name__ == "__main__":
    unittest.main()
