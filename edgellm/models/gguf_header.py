"""A fast, strict reader of a GGUF file's header: metadata and tensor table, no tensor data.

Why not gguf's GGUFReader (edgellm still uses the gguf package for its type tables): it materialises
every element of every array as numpy objects (151,643 vocabulary strings for Qwen), and a header is
read on every start, `list`, `show` and load check. `python -m bench.bench_readers` (section
"readers" of docs/benchmarks.md), default model (SmolLM2-135M Q4_1, 49,152-token vocabulary),
2026-12-06, median of 5 interleaved rounds on 2 cores shared under load average ~14: read_header
0.40 s, gguf.GGUFReader 32 s (~80x; on a quieter machine commit f3755e0 saw 0.05 s vs 2.7 s).

So arrays are skipped here and kept only as their length. Every length and string in the header is
checked against the file's size, so a corrupt header is a clean `HeaderError`, never a huge
allocation or a numpy reshape error; where the tensors' data lies is checked by
`edgellm.models.gguf_file.inspect`."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS


class HeaderError(Exception):
    """The header is not a well-formed GGUF header (the message says where it broke)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    type: gguf.GGMLQuantizationType
    offset: int  # absolute, in the file

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        block, type_size = gguf.GGML_QUANT_SIZES[self.type]
        return self.n_elements // block * type_size


@dataclass(frozen=True)
class Header:
    version: int
    fields: dict[str, object]  # arrays as their length
    tensors: list[TensorInfo]
    data_offset: int


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf, self.pos, self.size = buf, 0, len(buf)

    def take(self, fmt: str) -> int | float | bool | bytes:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise HeaderError(f"header ends early (at byte {self.pos})")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self) -> int:
        return int(self.take("<I"))

    def u64(self) -> int:
        return int(self.take("<Q"))

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise HeaderError(f"a length at byte {self.pos} runs past the end of the file")
        self.pos += n

    def string(self) -> str:
        n = self.u64()
        start = self.pos
        self.skip(n)
        try:
            return bytes(self.buf[start : self.pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError(f"a string at byte {start} is not UTF-8") from None

    def value(self, vtype: int) -> object:
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.u32(), self.u64()
            if etype == _STRING:
                for _ in range(count):
                    self.skip(self.u64())
            elif etype in _SCALAR:
                self.skip(struct.calcsize(_SCALAR[etype]) * count)
            else:
                raise HeaderError(f"unsupported array element type {etype} at byte {self.pos}")
            return count
        raise HeaderError(f"unknown value type {vtype} at byte {self.pos}")


def read_header(path: Path) -> Header:
    """The header of ``path``; raises HeaderError if it is malformed or runs past the file's end
    (tensor data extents: `gguf_file.inspect`)."""
    with open(path, "rb") as fh:
        if path.stat().st_size == 0:
            raise HeaderError("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Cursor(buf))


def _parse(c: _Cursor) -> Header:
    if c.take("4s") != b"GGUF":
        raise HeaderError("no GGUF magic")
    version = c.u32()
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        raise HeaderError("big-endian GGUF files are not supported" if swapped in (2, 3) else f"GGUF version {version}")
    n_tensors, n_kv = c.u64(), c.u64()
    if n_kv > c.size or n_tensors > c.size:
        raise HeaderError(f"impossible counts ({n_tensors} tensors, {n_kv} metadata keys)")
    fields: dict[str, object] = {}
    for _ in range(n_kv):
        key = c.string()
        fields[key] = c.value(c.u32())
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.u32()
        if not 1 <= n_dims <= _MAX_DIMS:
            raise HeaderError(f"tensor {name} has {n_dims} dimensions")
        shape = tuple(c.u64() for _ in range(n_dims))
        infos.append((name, shape, c.u32(), c.u64()))
    alignment = fields.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise HeaderError(f"impossible general.alignment {alignment}")
    data_offset = -(-c.pos // alignment) * alignment
    tensors = []
    for name, shape, raw_type, offset in infos:
        try:
            qtype = gguf.GGMLQuantizationType(raw_type)
            block, _ = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise HeaderError(f"tensor {name} has unknown type {raw_type}") from None
        if any(d <= 0 for d in shape) or shape[0] % block:
            raise HeaderError(f"tensor {name} has impossible shape {list(shape)} for {qtype.name}")
        if offset % alignment:
            raise HeaderError(f"tensor {name} is not aligned to {alignment} bytes")
        tensors.append(TensorInfo(name, shape, qtype, data_offset + offset))
    return Header(version, fields, tensors, data_offset)
