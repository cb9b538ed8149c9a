"""The llama.cpp sources the parity tests and benches use are exactly the pinned sdist's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import llama_tools


def test_another_hash_is_refused_and_nothing_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama_tools, "SDIST_SHA256", "0" * 64)
    with pytest.raises(llama_tools.LlamaToolsError, match="pip could not fetch") as err:
        llama_tools.sources(tmp_path)
    assert "HASHES" in str(err.value)  # pip's own refusal, shown in the message
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_build_folder_follows_the_flags() -> None:
    args = llama_tools.cmake_args()
    assert "-DGGML_RPC=ON" in args and "-DGGML_NATIVE=OFF" in args and "-DLLAMA_USE_PREBUILT_UI=OFF" in args
    assert llama_tools.build_dir(Path("/r"), args) == llama_tools.build_dir(Path("/r"), list(args))
    assert llama_tools.build_dir(Path("/r"), args) != llama_tools.build_dir(Path("/r"), [*args, "-DGGML_CUDA=on"])
