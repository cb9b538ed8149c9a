"""The "write" step: a GGUF file streamed tensor by tensor, under a temporary name until complete.

gguf's GGUFWriter writes the header, metadata and tensor directory (all sizes are known up front
from the plans); the tensor data is then appended block by block straight from the converted
arrays (a background thread writes one while the next is converted), so memory holds a few
blocks, never a tensor list or the model."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import gguf

from edgellm import durable
from quantize.errors import OutputError
from quantize.progress import Progress
from quantize.tensors import TensorPlan

Q = gguf.GGMLQuantizationType


def check_writable(final: Path, force: bool) -> None:
    """Refuse to overwrite an existing output without --force, before any work starts."""
    if final.exists() and not force:
        raise OutputError(f"{final}: already exists; pass --force to overwrite it or choose another name")
    if final.exists() and final.is_dir():
        raise OutputError(f"{final}: is a directory")


@contextmanager
def atomic_output(final: Path, force: bool) -> Iterator[Path]:
    """A temporary path beside ``final``, renamed to it only when the block completes; on an error
    or Ctrl-C the temporary file is removed and nothing appears under the final name."""
    check_writable(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        yield temp
        check_writable(final, force)
        durable.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def scratch_file(near: Path) -> Iterator[Path]:
    """A hidden temporary file beside ``near`` (same disk), deleted when the block ends."""
    temp = near.with_name(f".{near.name}.{os.getpid()}.intermediate")
    near.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temp
    finally:
        temp.unlink(missing_ok=True)


def write_gguf(
    path: Path,
    arch: str,
    write_metadata: Callable[[gguf.GGUFWriter], None],
    plans: list[TensorPlan],
    progress: Progress | None = None,
) -> None:
    """Header and metadata by GGUFWriter, then each tensor's data streamed in plan order."""
    writer = gguf.GGUFWriter(path=None, arch=arch)
    write_metadata(writer)
    for plan in plans:
        raw = plan.out_type if plan.out_type == Q.BF16 else None
        writer.add_tensor_info(plan.name, plan.shape, plan.numpy_dtype, plan.nbytes, raw_dtype=raw)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    align = writer.data_alignment
    with open(path, "ab", buffering=0) as out, _BackgroundWriter(out) as background:
        pos = out.tell()
        background.put(bytes(-pos % align))
        pos += -pos % align
        for plan in plans:
            written = 0
            for block in plan.blocks():
                data = memoryview(block if block.flags.c_contiguous else block.copy()).cast("B")
                background.put(data)
                written += len(data)
                if progress is not None:
                    progress.update(block.size * plan.source_itemsize)
            if written != plan.nbytes:
                raise OutputError(f"{path}: tensor {plan.name} came out as {written} bytes, expected {plan.nbytes}")
            pos += written
            background.put(bytes(-pos % align))
            pos += -pos % align


class _BackgroundWriter:
    """Writes blocks on a second thread while the next ones are converted: write() releases the GIL
    and often waits on the kernel's dirty-page throttling, time the conversion can use. At most
    ``depth`` blocks wait, so memory stays a few blocks."""

    def __init__(self, out: BinaryIO, depth: int = 2) -> None:
        self.out = out
        self.queue: queue.Queue[memoryview | bytes | None] = queue.Queue(maxsize=depth)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gguf-writer", daemon=True)

    def __enter__(self) -> _BackgroundWriter:
        self.thread.start()
        return self

    def put(self, data: memoryview | bytes) -> None:
        if self.failure is not None:
            raise self._error()
        if len(data):
            self.queue.put(data)

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.failure is None:
                try:
                    view = memoryview(data).cast("B")
                    while view:
                        view = view[self.out.write(view) :]
                except BaseException as err:  # handed to the converting thread; keep draining
                    self.failure = err

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.failure is not None and exc[0] is None:
            raise self._error()

    def _error(self) -> OutputError:
        return OutputError(f"{self.out.name}: writing failed ({self.failure}); check the disk and try again")
