"""Issue 14, item 3: safetensors headers are checked as strictly as the `safetensors` library
checks them, in every reader edgellm has (model weights and LoRA adapters go through the same
`read_header`): each hostile header below is refused by the library and by edgellm, in one line;
the headers the library accepts, edgellm reads to the same tensors."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError, safe_open

from quantize.errors import CheckpointError
from quantize.sources.safetensors import MAX_HEADER, read_header
from tests import limited

A = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
B = {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}


def _obj(*pairs: tuple[str, object]) -> str:
    """A JSON object from (key, value) pairs, duplicates kept (json.dumps of a dict cannot)."""
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"


def _file(path: Path, header: str | bytes, data: bytes, declared: int | None = None) -> Path:
    raw = header.encode() if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(raw) if declared is None else declared) + raw + data)
    return path


DATA = np.arange(4, dtype=np.float32).tobytes()  # a = [0, 1], b = [2, 3]
# name -> (header, data bytes, declared header length or None)
REFUSED = {
    "gap between tensors": (_obj(("a", A), ("b", {**B, "data_offsets": [12, 20]})), DATA + bytes(4), None),
    "overlapping tensors": (_obj(("a", A), ("b", {**B, "data_offsets": [4, 12]})), DATA[:12], None),
    "first tensor not at 0": (_obj(("a", {**A, "data_offsets": [4, 12]})), DATA[:12], None),
    "dtype x shape != bytes": (_obj(("a", {**A, "shape": [3]})), DATA[:8], None),
    "offsets past the end": (_obj(("a", A), ("b", B)), DATA[:12], None),
    "bytes after the last tensor": (_obj(("a", A), ("b", B)), DATA + b"xx", None),
    "duplicate names that disagree": (_obj(("a", A), ("a", B)), DATA, None),
    "unknown dtype": (_obj(("a", {**A, "dtype": "F7"})), DATA[:8], None),
    "negative dimension": (_obj(("a", {**A, "shape": [-2]})), DATA[:8], None),
    "boolean dimension": (_obj(("a", {**A, "shape": [True, 2]})), DATA[:8], None),
    "float offset": (_obj(("a", {**A, "data_offsets": [0.0, 8]})), DATA[:8], None),
    "three offsets": (_obj(("a", {**A, "data_offsets": [0, 8, 9]})), DATA[:8], None),
    "end before start": (_obj(("a", {**A, "data_offsets": [8, 0]})), DATA[:8], None),
    "entry not an object": (_obj(("a", 5)), b"", None),
    "header not an object": ("[1]", b"", None),
    "metadata not strings": (_obj(("__metadata__", {"x": 1}), ("a", A)), DATA[:8], None),
    "header not UTF-8": (_obj(("a", A)).encode("utf-16"), DATA[:8], None),
    "header not JSON": ("{'a': 1}", b"", None),
    "header over the size limit": ("{}", b"", MAX_HEADER + 1),
    "header longer than the file": ("{}", b"", 1 << 40),
    "absurdly nested header": ('{"__metadata__": ' + "[" * 100_000 + "]" * 100_000 + "}", b"", None),
}
ACCEPTED = {
    "plain": (_obj(("a", A), ("b", B)), DATA),
    "entries out of file order": (_obj(("b", B), ("a", A)), DATA),
    "header padded with spaces": (_obj(("a", A), ("b", B)) + "        ", DATA),
    "a leading space": (" " + _obj(("a", A), ("b", B)), DATA),
    "string metadata and unknown fields": (_obj(("__metadata__", {"format": "pt"}), ("a", {**A, "x": 1}),
                                                ("b", B)), DATA),  # fmt: skip
    "an empty tensor": (_obj(("e", {"dtype": "F16", "shape": [0, 4], "data_offsets": [0, 0]}), ("a", A), ("b", B)),
                        DATA),  # fmt: skip
    "no tensors": ("{}", b""),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_like_the_library(tmp_path: Path, case: str) -> None:
    path = _file(tmp_path / "model.safetensors", *REFUSED[case])
    with pytest.raises(SafetensorError):
        safe_open(path, framework="np")
    with pytest.raises(CheckpointError) as err:
        read_header(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "re-download" in message


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted_like_the_library_with_the_same_tensors(tmp_path: Path, case: str) -> None:
    path = _file(tmp_path / "model.safetensors", *ACCEPTED[case])
    with safe_open(path, framework="np") as lib:
        expected = {name: lib.get_tensor(name) for name in lib.keys()}  # noqa: SIM118 - safe_open has no __iter__
    ours = {t.name: t for t in read_header(path)}
    assert sorted(ours) == sorted(expected)
    for name, t in ours.items():
        assert t.shape == expected[name].shape
        rows = t.read_rows(0, t.shape[0]) if t.shape else None
        assert rows is not None and np.array_equal(rows, expected[name])


def test_duplicate_names_are_refused_even_where_the_library_takes_the_last(tmp_path: Path) -> None:
    """Two entries for one name that agree: the library keeps one; edgellm refuses the file,
    since a writer that repeats a name is not one whose other entries can be trusted."""
    path = _file(tmp_path / "model.safetensors", _obj(("a", A), ("a", A), ("b", B)), DATA)
    with safe_open(path, framework="np") as lib:
        assert sorted(lib.keys()) == ["a", "b"]
    with pytest.raises(CheckpointError, match="the name 'a' appears twice"):
        read_header(path)


def _hostile(path: Path, case: str) -> None:
    """Replace a real safetensors file with a hostile one of the same name."""
    _file(path, *REFUSED[case])


@pytest.mark.parametrize("case", ["overlapping tensors", "header over the size limit", "absurdly nested header"])
def test_model_weights_under_a_4gb_limit(models, tmp_path: Path, case: str) -> None:  # noqa: ANN001
    folder = tmp_path / "model"
    shutil.copytree(models("llama2-70b").folder, folder)
    _hostile(folder / "model.safetensors", case)
    out = tmp_path / "out.gguf"
    limited.one_line_error(limited.cli("quantize", folder, "--type", "f16", "-o", out), "model.safetensors")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_lora_adapter_weights_under_a_4gb_limit(models, tmp_path: Path) -> None:  # noqa: ANN001
    """The adapter's own safetensors file goes through the same checks, for --lora and --lora-only."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                             "target_modules": ["q_proj"]}))  # fmt: skip
    _hostile(adapter / "adapter_model.safetensors", "gap between tensors")
    base, out = models("llama2-70b").folder, tmp_path / "merged.gguf"
    limited.one_line_error(limited.cli("quantize", base, "--lora", adapter, "--type", "f16", "-o", out),
                           "adapter_model.safetensors", "leaves a gap")  # fmt: skip
    limited.one_line_error(limited.cli("quantize", adapter, "--lora-only", "--base", base, "-o", out),
                           "adapter_model.safetensors", "leaves a gap")  # fmt: skip
    assert not out.exists()
