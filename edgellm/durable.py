"""Publishing a finished file under its final name so that a crash or a power cut leaves either
the old file or the whole new one, never a name pointing at half-written data.

A rename alone is atomic for running programs, but after a power cut the file system may have kept
the rename and not the data (ext4's delayed allocation, most SSD caches): the file's data is
flushed (fsync) before the rename, and the folder after it, so the rename itself survives."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def flush(path: Path) -> None:
    """Force ``path``'s data (a file or a folder entry list) onto the disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # folders cannot be opened on Windows; nothing more can be done there
        return
    try:
        with contextlib.suppress(OSError):  # some file systems (network, FUSE) refuse fsync
            os.fsync(fd)
    finally:
        os.close(fd)


def replace(tmp: Path, final: Path) -> None:
    """``tmp`` (complete, beside ``final``) becomes ``final``, durably."""
    flush(tmp)
    os.replace(tmp, final)
    flush(final.parent)


def link(tmp: Path, final: Path) -> None:
    """``tmp`` becomes ``final`` durably, unless ``final`` exists (FileExistsError): a hard link
    cannot overwrite what appeared meanwhile, as a rename would; without hard links (FAT, some
    network shares) a checked rename."""
    flush(tmp)
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:
        if final.exists():
            raise FileExistsError(final) from None
        os.replace(tmp, final)
    flush(final.parent)


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file beside it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
