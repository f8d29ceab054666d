"""A small, dependency-free safetensors reader/writer (torch tensors in, torch tensors out).

Format: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON mapping each tensor name to
{"dtype", "shape", "data_offsets": [begin, end)} relative to the first byte after the header, plus
an optional "__metadata__" (str -> str). The data area must be covered exactly, without overlap.

Sharded checkpoints use model.safetensors.index.json: {"metadata": {"total_size": ...},
"weight_map": {name: file}}.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024

# dtype name -> (torch dtype, bytes per element)
_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_NAME_OF = {dt: name for name, (dt, _) in _DTYPES.items()}


class SafetensorsError(ValueError):
    """A malformed safetensors file; the message names the file and the problem."""


def dtype_name(dtype: torch.dtype) -> str:
    if dtype not in _NAME_OF:
        raise ValueError(f"unsupported dtype for safetensors: {dtype}")
    return _NAME_OF[dtype]


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        # numpy has no bfloat16: reinterpret the 16-bit pattern.
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def _tensor_from_bytes(buf: bytes, dtype_str: str, shape: List[int]) -> torch.Tensor:
    dtype, _ = _DTYPES[dtype_str]
    if dtype == torch.bfloat16:
        arr = np.frombuffer(buf, dtype="<i2").copy()
        return torch.from_numpy(arr).view(torch.bfloat16).reshape(shape)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype.newbyteorder("<")
    arr = np.frombuffer(buf, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    return torch.from_numpy(arr.copy()).reshape(shape)


def save_file(tensors: Dict[str, torch.Tensor], path: str,
              metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes tensors (sorted by name) to path atomically (temp file + rename)."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        data = _tensor_bytes(t)
        header[name] = {
            "dtype": dtype_name(t.dtype),
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)  # align the data area to 8 bytes
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_header(path: str) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """Returns (tensor entries, metadata, data start offset), validating the layout."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"{path}: file too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise SafetensorsError(f"{path}: header length {n} exceeds the file or the 100 MB cap")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON ({e})") from e
    metadata = header.pop("__metadata__", None) or {}
    data_len = size - 8 - n
    spans = []
    for name, e in header.items():
        if e.get("dtype") not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor '{name}' has unsupported dtype {e.get('dtype')}")
        begin, end = e["data_offsets"]
        count = 1
        for d in e["shape"]:
            count *= int(d)
        if end - begin != count * _DTYPES[e["dtype"]][1]:
            raise SafetensorsError(f"{path}: tensor '{name}' byte length does not match dtype x shape")
        if not (0 <= begin <= end <= data_len):
            raise SafetensorsError(f"{path}: tensor '{name}' data lies outside the file")
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise SafetensorsError(f"{path}: tensor '{name}' overlaps or leaves a gap at {pos}")
        pos = end
    if pos != data_len:
        raise SafetensorsError(f"{path}: data area is {data_len} bytes but tensors cover {pos}")
    return header, metadata, 8 + n


def load_file(path: str) -> Dict[str, torch.Tensor]:
    header, _, start = read_header(path)
    out: Dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        for name in sorted(header):
            e = header[name]
            begin, end = e["data_offsets"]
            f.seek(start + begin)
            out[name] = _tensor_from_bytes(f.read(end - begin), e["dtype"], e["shape"])
    return out


def checkpoint_index(folder: str) -> Dict[str, Tuple[str, dict, int]]:
    """Maps each tensor name to (file path, header entry, data start) without reading tensor data."""
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out: Dict[str, Tuple[str, dict, int]] = {}
    for fname in files:
        path = os.path.join(folder, fname)
        header, _, start = read_header(path)
        for name, e in header.items():
            out[name] = (path, e, start)
    return out


def read_tensor(ref: Tuple[str, dict, int]) -> torch.Tensor:
    """Reads one tensor named by a checkpoint_index entry."""
    path, e, start = ref
    begin, end = e["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + begin)
        return _tensor_from_bytes(f.read(end - begin), e["dtype"], e["shape"])


def save_checkpoint(tensors: Dict[str, torch.Tensor], folder: str, shards: int = 1) -> List[str]:
    """Writes model.safetensors, or model-0000i-of-0000n.safetensors + index when shards > 1.

    Tensors are split by name order into shards of roughly equal byte size.
    Returns the file names written.
    """
    os.makedirs(folder, exist_ok=True)
    if shards <= 1:
        save_file(tensors, os.path.join(folder, "model.safetensors"), {"format": "pt"})
        return ["model.safetensors"]
    names = sorted(tensors)
    sizes = [tensors[n].numel() * tensors[n].element_size() for n in names]
    total = sum(sizes)
    groups: List[List[str]] = [[] for _ in range(shards)]
    acc = 0
    for name, sz in zip(names, sizes):
        idx = min(shards - 1, acc * shards // max(total, 1))
        groups[idx].append(name)
        acc += sz
    files = []
    weight_map = {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in group}, os.path.join(folder, fname), {"format": "pt"})
        files.append(fname)
        for n in group:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(os.path.join(folder, "model.safetensors.index.json"), index)
    return files + ["model.safetensors.index.json"]


def load_checkpoint(folder: str) -> Dict[str, torch.Tensor]:
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        out: Dict[str, torch.Tensor] = {}
        for fname in sorted(set(weight_map.values())):
            part = load_file(os.path.join(folder, fname))
            for name, t in part.items():
                if weight_map.get(name) != fname:
                    raise SafetensorsError(f"{fname}: tensor '{name}' not mapped to this file in the index")
                out[name] = t
        missing = set(weight_map) - set(out)
        if missing:
            raise SafetensorsError(f"{index_path}: tensors missing from shards: {sorted(missing)[:5]}")
        return out
    return load_file(os.path.join(folder, "model.safetensors"))


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Deterministic pretty JSON (keys in insertion order), written atomically."""
    _write_json(path, obj)
