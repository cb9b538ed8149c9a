"""Make broken GGUF files from a good one: the bad inputs users really meet."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gguf
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

T = gguf.GGUFValueType


def with_metadata(src: Path, dst: Path, changes: dict[str, tuple[gguf.GGUFValueType, Any]], arch: str | None = None,
                  remove: tuple[str, ...] = ()) -> Path:
    """A copy of ``src`` with metadata keys changed (or added, or removed) and optionally another arch."""
    reader = gguf.GGUFReader(src)
    arch = arch or str(reader.get_field("general.architecture").contents())
    writer = gguf.GGUFWriter(dst, arch)
    copy_with_new_metadata(reader, writer, {k: MetadataDetails(t, v) for k, (t, v) in changes.items()}, list(remove))
    return dst


def truncated(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``src``, as an interrupted download leaves it."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(int(src.stat().st_size * fraction)))
    return dst


def with_tensor_offset(src: Path, dst: Path, tensor_index: int, offset: int) -> Path:
    """A copy whose tensor-info table points one tensor at ``offset`` (relative to the data section)."""
    shutil.copyfile(src, dst)
    reader = gguf.GGUFReader(dst, "r+")
    reader.tensors[tensor_index].field.parts[-1][0] = offset
    reader.data.flush()
    return dst


def with_bytes(src: Path, dst: Path, at: int, data: bytes) -> Path:
    """A copy with ``data`` written over the bytes at ``at`` (a corrupt header)."""
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as fh:
        fh.seek(at)
        fh.write(data)
    return dst
