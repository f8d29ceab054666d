"""Text beyond the KJV for models/small-mixtral, from Debian packages, one record a line:

- WordNet 3.0 glosses (wordnet-base, /usr/share/wordnet/data.{noun,verb,adj,adv}): "word, synonym: gloss".
- GCIDE definitions (dict-gcide, /usr/share/dictd/gcide.dict.dz, mostly Webster's 1913): "Headword: sense".
  Etymologies, pronunciations, citations and markup are stripped.
- fortunes (fortunes, /usr/share/games/fortunes/*, the non-offensive files): one fortune a line.

Every record is normalised to ASCII (NFKD, other characters dropped) and whitespace-collapsed. Records that share
a run of OVERLAP_WORDS words with the held-out or calibration KJV text are dropped (`filter_overlap`), and so are
KJV training verses that do (Mark's parallels in Matthew and Luke), so that no held-out verse is trained on.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import unicodedata
from typing import Dict, Iterable, List, Set, Tuple

WORDNET = "/usr/share/wordnet"
GCIDE = "/usr/share/dictd/gcide.dict.dz"
FORTUNES = "/usr/share/games/fortunes"
OVERLAP_WORDS = 8

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z]+")


def ascii_text(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _SPACE.sub(" ", text).strip()


def _require(path: str, package: str) -> None:
    if not os.path.exists(path):
        raise SystemExit(f"{path}: not found (apt-get install -y {package})")


def wordnet_glosses() -> List[str]:
    """One line per synset: its words (underscores as spaces), a colon, the gloss (definition; "examples")."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = os.path.join(WORDNET, f"data.{pos}")
        _require(path, "wordnet-base")
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith(" ") or " | " not in line:
                    continue  # the license header lines start with two spaces
                head, gloss = line.split(" | ", 1)
                fields = head.split()
                n_words = int(fields[3], 16)
                words = [re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in fields[4:4 + 2 * n_words:2]]
                out.append(ascii_text(", ".join(words) + ": " + gloss))
    return out


_HEAD = re.compile(r"^([A-Za-z][^\\\n]*?) \\[^\\\n]*\\")
_SENSE = re.compile(r"^\s+\d+\.\s+")
_PRONUNCIATION = re.compile(r'\\[^\\]*\\,?|\([^)]*"[^)]*\)\.?')
_LEADING_NUMBER = re.compile(r"^\d+\.\s*")
_CITATION = re.compile(r"--\s?[A-Z][\w.' ]*?(\.|$)")
_POS = re.compile(r"^[\s,;]*(\([^)]*\)[\s,;]*)?((?:[a-z]{1,6}\.\s*|&\s*)+)(?=[\s(A-Z])")


def _strip_brackets(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _clean_sense(text: str) -> str:
    text = _PRONUNCIATION.sub("", _strip_brackets(text).split(" -- ")[0]).replace("{", "").replace("}", "")
    text = _CITATION.sub("", text)
    return _LEADING_NUMBER.sub("", _SPACE.sub(" ", text).strip(" ,;"))


def gcide_definitions() -> List[str]:
    """One line per sense: "Headword: definition". The dictionary's paragraphs are blank-line separated; an entry
    starts with `Headword \\pro*nun"ci*a`tion\\, pos. [etymology]` and its senses are the numbered paragraphs (or the
    rest of the first paragraph when there are none). Notes, synonyms and compounds ({Apple butter}, ...) are left out."""
    _require(GCIDE, "dict-gcide")
    with gzip.open(GCIDE) as f:  # dictzip is gzip-compatible
        text = f.read().decode("utf-8", "replace")
    out, head = [], None
    for para in text.split("\n\n"):
        m = _HEAD.match(para)
        if m:
            head = _strip_brackets(m.group(1)).replace('"', "").replace("*", "").replace("`", "").strip()
            rest = _POS.sub("", _strip_brackets(para[m.end():]).replace("\n", " "), count=1)
            sense = _clean_sense(rest)
        elif head and _SENSE.match(para):
            sense = _clean_sense(_POS.sub("", _SENSE.sub("", para, count=1).replace("\n", " "), count=1))
        else:
            continue
        if len(sense) >= 12 and not sense.startswith(("See", "Same as", "Obs.", "pl. of")):
            out.append(ascii_text(f"{head}: {sense}"))
    return out


def fortunes() -> List[str]:
    """Each fortune (records separated by a line holding "%") as one line."""
    _require(FORTUNES, "fortunes")
    out = []
    for path in sorted(glob.glob(os.path.join(FORTUNES, "*"))):
        if path.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for record in re.split(r"\n%\n", f.read()):
                line = ascii_text(record.replace("%", ""))
                if len(line) >= 12:
                    out.append(line)
    return out


def shingles(text: str, n: int = OVERLAP_WORDS) -> Set[Tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def filter_overlap(lines: Iterable[str], protected: Set[Tuple[str, ...]]) -> Tuple[List[str], int]:
    """Drops every line sharing an OVERLAP_WORDS-word run (lowercased letters only) with the protected text."""
    kept, dropped = [], 0
    for line in lines:
        if shingles(line) & protected:
            dropped += 1
        else:
            kept.append(line)
    return kept, dropped


def sources() -> Dict[str, List[str]]:
    return {"wordnet": wordnet_glosses(), "gcide": gcide_definitions(), "fortunes": fortunes()}
