"""Finished files are flushed to disk before they get their name, and the rename after."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgellm import durable


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inode of everything fsync'd, in order (the real fsync still runs)."""
    seen: list[int] = []
    real = os.fsync

    def record(fd: int) -> None:
        seen.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return seen


def test_replace_flushes_the_data_then_the_folder(tmp_path: Path, fsynced: list[int]) -> None:
    tmp, final = tmp_path / ".model.gguf.partial", tmp_path / "model.gguf"
    final.write_bytes(b"old")
    tmp.write_bytes(b"new model")
    data_inode = tmp.stat().st_ino
    durable.replace(tmp, final)
    assert final.read_bytes() == b"new model" and not tmp.exists()
    assert fsynced == [data_inode, tmp_path.stat().st_ino]


def test_link_never_replaces_a_file_that_appeared(tmp_path: Path, fsynced: list[int]) -> None:
    tmp, final = tmp_path / ".chat.md.tmp", tmp_path / "chat.md"
    tmp.write_text("export")
    final.write_text("the user's own file")
    with pytest.raises(FileExistsError):
        durable.link(tmp, final)
    assert final.read_text() == "the user's own file"
    final.unlink()
    durable.link(tmp, final)
    assert final.read_text() == "export" and fsynced[-1] == tmp_path.stat().st_ino


def test_write_bytes_leaves_no_temporary_file(tmp_path: Path, fsynced: list[int]) -> None:
    durable.write_bytes(tmp_path / "manifest.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    assert (tmp_path / "manifest.json").read_bytes() == b"{}" and len(fsynced) == 2
