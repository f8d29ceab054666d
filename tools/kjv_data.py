"""Deterministic train / calibration / held-out split of the King James Bible (Debian bible-kjv).

`bible -f "Gen1:1-Rev22:21"` prints one verse a line prefixed by its reference ("Ge1:1 In the ...").
The reference is stripped; whole books go to one split.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Dict, List

HELDOUT_BOOKS = ("Ruth", "Est", "Jonah", "Mark", "Jas")     # Ruth, Esther, Jonah, Mark, James
CALIBRATION_BOOKS = ("Prv", "Rom")                         # Proverbs, Romans
_REF = re.compile(r"^(\d?[A-Za-z]+)\d+:\d+ (.*)$")


def read_kjv() -> List[tuple]:
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    verses = []
    for line in out.splitlines():
        m = _REF.match(line)
        if not m:
            raise ValueError(f"bible-kjv: unexpected line {line[:60]!r}")
        verses.append((m.group(1), m.group(2).strip()))
    if len(verses) != 31102:
        raise ValueError(f"bible-kjv: expected 31102 verses, got {len(verses)}")
    return verses


def split_kjv() -> Dict[str, str]:
    parts: Dict[str, List[str]] = {"train": [], "calibration": [], "heldout": []}
    for book, text in read_kjv():
        key = "heldout" if book in HELDOUT_BOOKS else "calibration" if book in CALIBRATION_BOOKS else "train"
        parts[key].append(text)
    return {k: "\n".join(v) + "\n" for k, v in parts.items()}


def write_splits(folder: str) -> Dict[str, str]:
    """Writes kjv-{train,calibration,heldout}.txt into folder; returns name -> path."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, text in split_kjv().items():
        path = os.path.join(folder, f"kjv-{name}.txt")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
        paths[name] = path
    return paths
