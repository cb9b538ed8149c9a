"""Memory-mapped weight files: tensors are read as views of the page cache (no copy), and the pages
of each block are dropped from this process once written, so resident memory stays a few blocks
however big the model is."""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from quantize.errors import CheckpointError

_PAGE = mmap.PAGESIZE
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


class MappedFile:
    """One weight file, mapped read-only once and shared by its tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(fd).st_size
            self.map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if self.size else None
        finally:
            os.close(fd)
        if self.map is not None and hasattr(mmap, "MADV_SEQUENTIAL"):
            self.map.madvise(mmap.MADV_SEQUENTIAL)

    def view(self, offset: int, nbytes: int) -> memoryview:
        if self.map is None or offset + nbytes > self.size:
            raise CheckpointError(
                f"{self.path}: truncated (needs {offset + nbytes} bytes, has {self.size}); re-download it"
            )
        return memoryview(self.map)[offset : offset + nbytes]

    def release(self, offset: int, nbytes: int) -> None:
        """Drop these pages from our resident set (they stay in the page cache)."""
        start = offset // _PAGE * _PAGE
        end = min(self.size, offset + nbytes) // _PAGE * _PAGE
        if self.map is not None and end > start and hasattr(mmap, "MADV_DONTNEED"):
            self.map.madvise(mmap.MADV_DONTNEED, start, end - start)


@dataclass
class MappedTensor:
    """A C-contiguous tensor at ``offset`` of a mapped file."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    mapped: MappedFile
    offset: int

    @property
    def file(self) -> Path:
        return self.mapped.path

    @property
    def locator(self) -> tuple[str, int]:
        return (str(self.mapped.path), self.offset)

    @property
    def row_bytes(self) -> int:
        return prod(self.shape[1:]) * ITEMSIZE[self.dtype]

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        shape = (stop - start, *self.shape[1:]) if self.shape else ()
        data = self.mapped.view(self.offset + start * self.row_bytes, (stop - start) * self.row_bytes)
        return np.frombuffer(data, dtype=NUMPY[self.dtype]).reshape(shape)

    def release(self, start: int, stop: int) -> None:
        self.mapped.release(self.offset + start * self.row_bytes, (stop - start) * self.row_bytes)
