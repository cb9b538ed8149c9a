"""*.safetensors weights (single or sharded with model.safetensors.index.json), memory-mapped.

The header is JSON at the start of the file; it is checked against the file size before any
tensor is touched, so a truncated download is reported by name, not as a crash mid-way."""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path

from quantize.errors import CheckpointError
from quantize.sources import Checkpoint, load_config
from quantize.sources.mapped import ITEMSIZE, MappedFile, MappedTensor
from quantize.sources.shards import check_index, label, weight_files

INDEX = "model.safetensors.index.json"
_MAX_HEADER = 100 << 20


def open_checkpoint(folder: Path) -> Checkpoint | None:
    files, weight_map = weight_files(folder, INDEX, ("*.safetensors",))
    files = [f for f in files if not f.name.startswith(("adapter_model", "consolidated"))]
    if not files:
        return None
    config, config_path = load_config(folder)
    tensors: dict[str, MappedTensor] = {}
    for path in files:
        for t in read_header(path):
            if t.name in tensors:
                raise CheckpointError(f"{path}: tensor '{t.name}' is also in {tensors[t.name].file.name}")
            tensors[t.name] = t
    if weight_map:
        check_index(INDEX, folder, weight_map, {n: t.file for n, t in tensors.items()})
    return Checkpoint(folder, config, dict(tensors), label(files), config_path)


def read_header(path: Path) -> list[MappedTensor]:
    """The tensors of one safetensors file, each checked to lie inside the file."""
    mapped = MappedFile(path)
    size = mapped.size

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: truncated or corrupt safetensors file ({why}); re-download it")

    if size < 8:
        raise corrupt(f"only {size} bytes")
    (n,) = struct.unpack("<Q", mapped.view(0, 8))
    if n > _MAX_HEADER or 8 + n > size:
        raise corrupt(f"header of {n} bytes in a {size}-byte file")
    try:
        header = json.loads(bytes(mapped.view(8, n)))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise corrupt(f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    base = 8 + n
    tensors = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"bad entry for tensor '{name}'") from None
        if dtype not in ITEMSIZE or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise corrupt(f"tensor '{name}' has dtype {dtype!r} and shape {list(shape)}")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise corrupt(f"tensor '{name}' has data offsets {[begin, end]}")
        if end - begin != prod(shape) * ITEMSIZE[dtype]:
            raise corrupt(f"tensor '{name}' has {end - begin} bytes for shape {list(shape)} of {dtype}")
        if base + end > size:
            raise CheckpointError(
                f"{path}: truncated: tensor '{name}' ends at byte {base + end} but the file has {size}; re-download it"
            )
        tensors.append(MappedTensor(name, shape, dtype, mapped, base + begin))
    return tensors
