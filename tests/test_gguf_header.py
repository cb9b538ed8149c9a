"""edgellm's fast header reader agrees with gguf's own GGUFReader on real files."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from edgellm.models.gguf_header import HeaderError, read_header
from tests import gguf_edit


def _reference(path: Path) -> tuple[dict[str, object], list[tuple[str, tuple[int, ...], str, int]]]:
    reader = gguf.GGUFReader(path)
    fields: dict[str, object] = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        fields[name] = len(f.data) if f.types[0] == gguf.GGUFValueType.ARRAY else f.contents()
    tensors = [(t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.data_offset)) for t in reader.tensors]
    return fields, tensors


def test_same_metadata_and_tensor_table_as_gguf_reader(default_model: Path) -> None:
    header = read_header(default_model)
    fields, tensors = _reference(default_model)
    assert header.fields == fields
    assert [(t.name, t.shape, t.type.name, t.offset) for t in header.tensors] == tensors
    assert header.fields["tokenizer.ggml.tokens"] == 49152


def test_corrupt_lengths_are_header_errors_not_allocations(default_model: Path, tmp_path: Path) -> None:
    # the first metadata key's length (bytes 24..32) claims 2**62 bytes
    bad = gguf_edit.with_bytes(default_model, tmp_path / "len.gguf", 24, (1 << 62).to_bytes(8, "little"))
    with pytest.raises(HeaderError, match="runs past the end"):
        read_header(bad)
    big_endian = gguf_edit.with_bytes(default_model, tmp_path / "be.gguf", 4, (3).to_bytes(4, "big"))
    with pytest.raises(HeaderError, match="big-endian"):
        read_header(big_endian)
