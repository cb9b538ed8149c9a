"""*.safetensors weights (single or sharded with model.safetensors.index.json), memory-mapped.

The header is JSON at the start of the file. It is checked as strictly as the ``safetensors``
library checks it (header size limit, UTF-8 JSON object, known dtypes, integer shapes and offsets,
dtype x shape == byte length, tensors contiguous from the first data byte to the last byte of the
file, no gaps, no overlaps) and more (no duplicate names, which the library accepts when the copies
agree), before any tensor is touched: a truncated download or a hostile header is reported by name,
never read past the file or crashed on mid-way."""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path
from typing import Any

from quantize.errors import CheckpointError, UnsupportedModel
from quantize.sources import Checkpoint, load_config
from quantize.sources.mapped import ITEMSIZE, MappedFile, MappedTensor
from quantize.sources.shards import check_index, label, weight_files

INDEX = "model.safetensors.index.json"
MAX_HEADER = 100_000_000  # the safetensors library's MAX_HEADER_SIZE
# every dtype the safetensors format defines, in bits (sub-byte ones are packed along the last axis)
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
              "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
              "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}  # fmt: skip


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


def _natural(value: Any) -> bool:
    """A JSON integer >= 0 (Rust's usize): not a bool, not a float."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the name '{key}' appears twice")
        seen[key] = value
    return seen


def read_header(path: Path) -> list[MappedTensor]:
    """The tensors of one safetensors file, in file order, each checked to lie inside the file."""
    mapped = MappedFile(path)
    size = mapped.size

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: truncated or corrupt safetensors file ({why}); re-download it")

    if size < 8:
        raise corrupt(f"only {size} bytes")
    (n,) = struct.unpack("<Q", mapped.view(0, 8))
    if n > MAX_HEADER or 8 + n > size:
        raise corrupt(f"header of {n} bytes in a {size}-byte file")
    try:
        header = json.loads(bytes(mapped.view(8, n)).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise corrupt("header is not UTF-8") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, a duplicate name, absurd nesting
        raise corrupt(f"header is not valid JSON: {str(err)[:200]}") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise corrupt("__metadata__ is not a map of strings")
    entries = sorted(((_entry(name, meta, corrupt), name) for name, meta in header.items()), key=lambda e: e[0][2])
    base, end_of_previous, tensors = 8 + n, 0, []
    for (dtype, shape, (begin, end)), name in entries:
        if begin != end_of_previous:
            why = "overlaps the previous tensor" if begin < end_of_previous else "leaves a gap before it"
            raise corrupt(f"tensor '{name}' starts at data byte {begin}: it {why}, which ends at {end_of_previous}")
        if (end - begin) * 8 != prod(shape) * DTYPE_BITS[dtype]:
            raise corrupt(f"tensor '{name}' has {end - begin} bytes for shape {list(shape)} of {dtype}")
        if base + end > size:
            raise CheckpointError(
                f"{path}: truncated: tensor '{name}' ends at byte {base + end} but the file has {size}; re-download it"
            )
        if dtype not in ITEMSIZE:
            raise UnsupportedModel(f"{path}: tensor '{name}' is {dtype}, a packed type edgellm cannot read")
        end_of_previous = end
        tensors.append(MappedTensor(name, shape, dtype, mapped, base + begin))
    if base + end_of_previous != size:
        raise corrupt(f"{size - base - end_of_previous} bytes after the last tensor")
    return tensors


def _entry(name: str, meta: Any, corrupt) -> tuple[str, tuple[int, ...], tuple[int, int]]:  # noqa: ANN001
    """(dtype, shape, (begin, end)) of one header entry, each value of the type the format defines."""
    if not isinstance(meta, dict):
        raise corrupt(f"bad entry for tensor '{name}'")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if dtype not in DTYPE_BITS or not isinstance(shape, list) or not all(_natural(d) for d in shape):
        raise corrupt(f"tensor '{name}' has dtype {dtype!r} and shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_natural, offsets))
            and offsets[0] <= offsets[1]):  # fmt: skip
        raise corrupt(f"tensor '{name}' has data offsets {offsets!r}")
    return dtype, tuple(shape), (offsets[0], offsets[1])
