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


def with_tensor(src: Path, dst: Path, name: str, convert: Any) -> Path:
    """A copy of ``src`` with tensor ``name`` replaced by ``convert(float32 values) -> (array, type)``:
    the same numbers stored in a type llama.cpp accepts at load time but not where it is used."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.get_field("general.architecture").contents())
    tensors = []
    for t in reader.tensors:
        if t.name == name:
            data, qtype = convert(gguf.quants.dequantize(t.data, t.tensor_type).astype("float32"))
            t = t._replace(data=data, tensor_type=qtype, n_bytes=data.nbytes)
        tensors.append(t)
    reader.tensors = tensors
    copy_with_new_metadata(reader, gguf.GGUFWriter(dst, arch), {}, [])
    return dst
