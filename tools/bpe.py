#!/usr/bin/python3
"""Trains BPE tokenizers and writes Hugging Face tokenizer.json files; encodes/decodes with HF semantics.

Two styles:
  bytelevel  GPT-2/Qwen style: pre-tokenizer regex split, bytes mapped to printable unicode chars
             (the GPT-2 byte table), merges within a pre-token, ByteLevel decoder, no BOS.
             --pretok split (default): Sequence[Split(Qwen2 pattern, Isolated), ByteLevel(use_regex=false)]
             --pretok gpt2:            ByteLevel(use_regex=true) with the GPT-2 pattern.
  sentencepiece  Llama/Mixtral style BPE with byte fallback: normalizer Prepend("▁") + Replace(" ", "▁"),
             no pre-tokenizer (the whole normalized text is one BPE word), <0x00>..<0xFF> byte tokens,
             TemplateProcessing adds <s>; decoder Replace("▁", " "), ByteFallback, Fuse, Strip(1 leading " ").

Encoding (what HF does): special added tokens are matched in the raw text first; every other
segment is normalized, pre-tokenized, and each word is BPE'd by repeatedly merging the adjacent pair
with the lowest merge rank (leftmost on ties) until no pair has a rank.

    /usr/bin/python3 tools/bpe.py train --style sentencepiece --vocab-size 2048 --input text.txt --out DIR
    /usr/bin/python3 tools/bpe.py encode DIR "some text"
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import os
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPIECE = "\u2581"  # ▁

GOLDEN_STRINGS = [
    "",
    "Hello world",
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light: and there was light.",
    "  leading spaces",
    "trailing spaces   ",
    "multiple   spaces\tand\ttabs",
    "line one\nline two\n\nline four",
    "Numbers: 0 7 42 1234567 3.14159",
    "Punctuation!? (parens) [brackets] {braces} \"quotes\" 'single' -- dash; colon: semi;",
    "it's they're we've I'm you'll he'd IT'S",
    "UPPER lower MiXeD",
    "café naïve résumé",
    "日本語のテキスト",
    "emoji 😀👍🏽 and ✓",
    "mixed: Ελληνικά, русский, العربية",
    "tabs\tand\r\nwindows newlines",
    "the LORD thy God, which brought thee out of the land of Egypt",
    "x",
    "a  b   c    d",
]


# ---------------------------------------------------------------------------------------------
# GPT-2 byte <-> unicode table
def bytes_to_unicode() -> Dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


# ---------------------------------------------------------------------------------------------
class Tokenizer:
    """A BPE tokenizer of one of the two styles, with HF encode/decode semantics."""

    def __init__(self, style: str, vocab: Dict[str, int], merges: List[Tuple[str, str]],
                 specials: List[Tuple[str, int]], pretok: str = "split"):
        self.style = style
        self.pretok = pretok
        self.vocab = vocab
        self.id_to_token = {i: t for t, i in vocab.items()}
        self.merges = merges
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.specials = specials  # (content, id)
        self.special_ids = {i for _, i in specials}
        self._cache: Dict[str, List[str]] = {}
        if style == "bytelevel":
            self.pattern = regex.compile(GPT2_PATTERN if pretok == "gpt2" else QWEN2_PATTERN)
        self.bos_id = vocab.get("<s>") if style == "sentencepiece" else None

    # ---- encode --------------------------------------------------------------------------
    def bpe(self, symbols: List[str]) -> List[str]:
        symbols = list(symbols)
        while len(symbols) > 1:
            best_rank, best_i = None, -1
            for i in range(len(symbols) - 1):
                r = self.ranks.get((symbols[i], symbols[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_rank is None:
                break
            symbols[best_i:best_i + 2] = [symbols[best_i] + symbols[best_i + 1]]
        return symbols

    def _initial_symbols(self, word: str) -> List[str]:
        if self.style == "bytelevel":
            return [BYTE_TO_CHAR[b] for b in word.encode("utf-8")]
        out = []
        for ch in word:
            if ch in self.vocab:
                out.append(ch)
            else:  # byte fallback
                out.extend(byte_token(b) for b in ch.encode("utf-8"))
        return out

    def _encode_word(self, word: str) -> List[str]:
        hit = self._cache.get(word)
        if hit is None:
            hit = self.bpe(self._initial_symbols(word))
            if len(self._cache) < 200000:
                self._cache[word] = hit
        return hit

    def pre_tokenize(self, text: str) -> List[str]:
        if self.style == "sentencepiece":
            return [text]
        # Split with behaviour "Isolated": matches and the gaps between them are pieces.
        pieces, pos = [], 0
        for m in self.pattern.finditer(text):
            if m.start() > pos:
                pieces.append(text[pos:m.start()])
            if m.end() > m.start():
                pieces.append(m.group(0))
            pos = m.end()
        if pos < len(text):
            pieces.append(text[pos:])
        return pieces

    def normalize(self, text: str) -> str:
        if self.style == "sentencepiece" and text:
            return SPIECE + text.replace(" ", SPIECE)
        return text

    def split_specials(self, text: str) -> List[Tuple[str, bool]]:
        """Splits raw text on special added tokens (leftmost, then longest match)."""
        if not self.specials:
            return [(text, False)]
        contents = sorted((c for c, _ in self.specials), key=lambda c: -len(c))
        out, pos, start = [], 0, 0
        while pos < len(text):
            match = next((c for c in contents if text.startswith(c, pos)), None)
            if match is None:
                pos += 1
                continue
            if pos > start:
                out.append((text[start:pos], False))
            out.append((match, True))
            pos += len(match)
            start = pos
        if start < len(text):
            out.append((text[start:], False))
        return out

    def encode_tokens(self, text: str) -> List[str]:
        tokens: List[str] = []
        for segment, special in self.split_specials(text):
            if special:
                tokens.append(segment)
                continue
            for word in self.pre_tokenize(self.normalize(segment)):
                if self.style == "sentencepiece":
                    tokens.extend(self._encode_sp_text(word))
                else:
                    tokens.extend(self._encode_word(word))
        return tokens

    def _encode_sp_text(self, text: str) -> List[str]:
        # The whole normalized text is one BPE word in HF. Merges learned by train() never cross
        # a boundary before "▁" nor touch "\n" (see train_merges' word split), so encoding the
        # pieces separately gives the same result; that is only a cache-friendly shortcut, and
        # it is verified against the whole-word BPE for the golden strings.
        out: List[str] = []
        for piece in SP_PIECE.findall(text):
            out.extend(self._encode_word(piece))
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        ids = [self.vocab[t] for t in self.encode_tokens(text)]
        if add_special_tokens and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    # ---- decode --------------------------------------------------------------------------
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        tokens = [self.id_to_token[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]
        if self.style == "bytelevel":
            data = bytearray()
            for t in tokens:
                if int(self.vocab[t]) in self.special_ids:
                    data.extend(t.encode("utf-8"))
                else:
                    data.extend(CHAR_TO_BYTE[c] for c in t)
            return data.decode("utf-8", errors="replace")
        # Replace ▁ -> " ", ByteFallback, Fuse, Strip one leading space
        parts: List[str] = []
        pending = bytearray()
        n_pending = 0

        def flush():
            nonlocal pending, n_pending
            if n_pending:
                try:
                    parts.append(pending.decode("utf-8"))
                except UnicodeDecodeError:
                    parts.append("\ufffd" * n_pending)
                pending, n_pending = bytearray(), 0

        for t in tokens:
            t = t.replace(SPIECE, " ")
            if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                pending.append(int(t[3:5], 16))
                n_pending += 1
                continue
            flush()
            parts.append(t)
        flush()
        text = "".join(parts)
        return text[1:] if text.startswith(" ") else text

    # ---- HF files ------------------------------------------------------------------------
    def to_hf_json(self) -> dict:
        added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for c, i in sorted(self.specials, key=lambda s: s[1])]
        model = {"type": "BPE", "dropout": None,
                 "unk_token": "<unk>" if self.style == "sentencepiece" else None,
                 "continuing_subword_prefix": None, "end_of_word_suffix": None,
                 "fuse_unk": self.style == "sentencepiece", "byte_fallback": self.style == "sentencepiece",
                 "ignore_merges": False,
                 "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1])),
                 "merges": [f"{a} {b}" for a, b in self.merges]}
        if self.style == "sentencepiece":
            normalizer = {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": SPIECE},
                {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE}]}
            pre_tokenizer = None
            post = {"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {"<s>": {"id": "<s>", "ids": [self.bos_id], "tokens": ["<s>"]}}}
            decoder = {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": SPIECE}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        else:
            normalizer = None
            if self.pretok == "gpt2":
                pre_tokenizer = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
            else:
                pre_tokenizer = {"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
            post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
            decoder = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
        return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post,
                "decoder": decoder, "model": model}

    def tokenizer_config(self) -> dict:
        if self.style == "sentencepiece":
            return {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                    "unk_token": "<unk>", "pad_token": None, "add_bos_token": True, "add_eos_token": False,
                    "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 4096}
        return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|endoftext|>",
                "unk_token": None, "pad_token": "<|endoftext|>", "add_bos_token": False,
                "clean_up_tokenization_spaces": False, "model_max_length": 4096}

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        _write_json(os.path.join(folder, "tokenizer.json"), self.to_hf_json())
        _write_json(os.path.join(folder, "tokenizer_config.json"), self.tokenizer_config())

    @staticmethod
    def load(folder: str) -> "Tokenizer":
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            j = json.load(f)
        m = j["model"]
        style = "sentencepiece" if m.get("byte_fallback") else "bytelevel"
        pretok = "gpt2" if (j.get("pre_tokenizer") or {}).get("type") == "ByteLevel" else "split"
        merges = [tuple(x.split(" ", 1)) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        specials = [(a["content"], a["id"]) for a in j["added_tokens"]]
        return Tokenizer(style, dict(m["vocab"]), merges, specials, pretok)


SP_PIECE = regex.compile(SPIECE + r"[^" + SPIECE + r"\n]*|[^" + SPIECE + r"\n]+|\n")


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
def train_merges(word_counts: Dict[Tuple[str, ...], int], num_merges: int, min_count: int = 2
                 ) -> List[Tuple[str, str]]:
    """Classic BPE training: repeatedly merge the most frequent adjacent pair (ties: the
    lexicographically smallest pair), with incremental pair counts."""
    words = [list(w) for w in sorted(word_counts)]
    counts = [word_counts[tuple(w)] for w in words]
    pair_count: Dict[Tuple[str, str], int] = collections.defaultdict(int)
    where: Dict[Tuple[str, str], set] = collections.defaultdict(set)
    for wi, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_count[p] += counts[wi]
            where[p].add(wi)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges: List[Tuple[str, str]] = []
    while len(merges) < num_merges and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc:
            continue  # stale entry
        if -negc < min_count:
            break
        merges.append(pair)
        a, b = pair
        touched = collections.defaultdict(int)
        for wi in sorted(where.pop(pair, ())):
            w = words[wi]
            c = counts[wi]
            for p in zip(w, w[1:]):
                pair_count[p] -= c
                touched[p] += 0
            i, nw = 0, []
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    nw.append(a + b)
                    i += 2
                else:
                    nw.append(w[i])
                    i += 1
            words[wi] = nw
            for p in zip(nw, nw[1:]):
                pair_count[p] += c
                where[p].add(wi)
                touched[p] += 0
        pair_count.pop(pair, None)
        for p in touched:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_count.pop(p, None)
    return merges


def train(style: str, text: str, vocab_size: int, pretok: str = "split") -> Tokenizer:
    if style == "bytelevel":
        probe = Tokenizer("bytelevel", {}, [], [], pretok)
        word_counts: Dict[Tuple[str, ...], int] = collections.Counter()
        for piece, n in collections.Counter(probe.pre_tokenize(text)).items():
            word_counts[tuple(BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))] += n
        base = [BYTE_TO_CHAR[b] for b in sorted(BYTE_TO_CHAR, key=lambda b: ord(BYTE_TO_CHAR[b]))]
        specials = ["<|endoftext|>"]
        merges = train_merges(word_counts, vocab_size - len(base) - len(specials))
        vocab = {t: i for i, t in enumerate(base)}
        for a, b in merges:
            vocab.setdefault(a + b, len(vocab))
        sp = []
        for s in specials:
            vocab[s] = len(vocab)
            sp.append((s, vocab[s]))
        return Tokenizer("bytelevel", vocab, merges, sp, pretok)

    # sentencepiece style: words are the pieces between "▁" boundaries; "\n" is left to byte fallback.
    normalized = SPIECE + text.replace(" ", SPIECE)
    counts = collections.Counter(p for p in SP_PIECE.findall(normalized) if p != "\n")
    char_counts = collections.Counter()
    for p, n in counts.items():
        for ch in p:
            char_counts[ch] += n
    alphabet = sorted(char_counts, key=lambda ch: (-char_counts[ch], ch))
    specials = ["<unk>", "<s>", "</s>"]
    base = specials + [byte_token(b) for b in range(256)]
    word_counts = {tuple(p): n for p, n in counts.items()}
    merges = train_merges(word_counts, vocab_size - len(base) - len(alphabet))
    vocab = {t: i for i, t in enumerate(base)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return Tokenizer("sentencepiece", vocab, merges, [(s, vocab[s]) for s in specials])


def write_golden(tok: Tokenizer, folder: str, strings: Iterable[str] = GOLDEN_STRINGS) -> None:
    cases = []
    for s in strings:
        ids = tok.encode(s)
        if tok.style == "sentencepiece":  # the piecewise shortcut must equal whole-word BPE
            whole = tok.bpe(tok._initial_symbols(tok.normalize(s))) if s else []
            assert [tok.vocab[t] for t in whole] == ids[1:], s
        cases.append({"text": s, "ids": ids, "tokens": [tok.id_to_token[i] for i in ids],
                      "decoded": tok.decode(ids, skip_special_tokens=True)})
    if tok.style == "bytelevel":
        s = "first<|endoftext|>second"
        ids = tok.encode(s)
        cases.append({"text": s, "ids": ids, "tokens": [tok.id_to_token[i] for i in ids],
                      "decoded": tok.decode(ids, skip_special_tokens=True)})
    desc = {
        "style": tok.style,
        "pre_tokenizer": tok.pretok if tok.style == "bytelevel" else None,
        "vocab_size": len(tok.vocab),
        "encode": "tokenizer.encode(text, add_special_tokens=True)" +
                  (" (prepends <s>)" if tok.style == "sentencepiece" else " (adds nothing)"),
        "decode": "tokenizer.decode(ids, skip_special_tokens=True)",
        "generated_by": "tools/bpe.py",
        "cases": cases,
    }
    _write_json(os.path.join(folder, "tokenizer_golden.json"), desc)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a tokenizer and write tokenizer.json, tokenizer_config.json, golden")
    t.add_argument("--style", choices=["bytelevel", "sentencepiece"], required=True)
    t.add_argument("--pretok", choices=["split", "gpt2"], default="split")
    t.add_argument("--vocab-size", type=int, default=2048)
    t.add_argument("--input", required=True)
    t.add_argument("--out", required=True)
    e = sub.add_parser("encode", help="encode text with a tokenizer folder")
    e.add_argument("folder")
    e.add_argument("text")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        with open(args.input, encoding="utf-8") as f:
            text = f.read()
        tok = train(args.style, text, args.vocab_size, args.pretok)
        tok.save(args.out)
        write_golden(tok, args.out)
        print(f"{args.style}: vocab {len(tok.vocab)}, merges {len(tok.merges)} -> {args.out}")
    else:
        tok = Tokenizer.load(args.folder)
        ids = tok.encode(args.text)
        print(json.dumps({"ids": ids, "tokens": [tok.id_to_token[i] for i in ids], "decoded": tok.decode(ids)},
                         ensure_ascii=False))


if __name__ == "__main__":
    main()
