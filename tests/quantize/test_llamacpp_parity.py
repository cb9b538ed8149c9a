"""Cross-check against llama.cpp's own converter (convert_hf_to_gguf.py from the pinned llama-cpp-python
sdist, fetched hash-checked into the cache on first use, run as a yardstick): the same f16 tensors, byte for
byte, and the same vocabulary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from bench import llama_tools

from .reference import gguf_fields

# The user's cache, read at import: the tests' isolated XDG folders would fetch it again every session.
LLAMA_ROOT = llama_tools.default_root()


@pytest.fixture(scope="session")
def convert_hf() -> Path:
    return llama_tools.llama_cpp_dir(LLAMA_ROOT) / "convert_hf_to_gguf.py"


@pytest.mark.parametrize("name", ["llama2-chat", "llama2-70b", "chinese-alpaca-16k"])
def test_same_tensors_and_vocabulary_as_convert_hf_to_gguf(models, convert_hf: Path, tmp_path, name: str) -> None:  # noqa: ANN001
    model = models(name)
    theirs = tmp_path / "theirs.gguf"
    cmd = [sys.executable, str(convert_hf), str(model.folder), "--outtype", "f16", "--outfile", str(theirs)]
    subprocess.run(cmd, check=True, capture_output=True)
    a, b = gguf.GGUFReader(model.gguf("f16")), gguf.GGUFReader(theirs)
    ours = {t.name: t for t in a.tensors}
    assert sorted(ours) == sorted(t.name for t in b.tensors)
    for t in b.tensors:
        mine = ours[t.name]
        assert (mine.tensor_type, list(mine.shape)) == (t.tensor_type, list(t.shape)), t.name
        assert np.array_equal(np.asarray(mine.data).view(np.uint8), np.asarray(t.data).view(np.uint8)), t.name
    fa, fb = gguf_fields(model.gguf("f16")), gguf_fields(theirs)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                "llama.context_length", "llama.rope.dimension_count", "llama.attention.head_count_kv"):  # fmt: skip
        assert fa.get(key) == fb.get(key), key
    assert np.allclose(fa["tokenizer.ggml.scores"], fb["tokenizer.ggml.scores"])
