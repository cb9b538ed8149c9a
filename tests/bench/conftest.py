"""GGUFs of several quantization types, made from the default model by llama.cpp's own quantizer
(requantizing a Q4_1 file needs allow_requantize: fine for testing the measuring mechanics)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
import pytest

from edgellm.runtime import llama_log


def requantize(src: Path, dst: Path, ftype: int) -> Path:
    llama_log.install()  # keep llama.cpp's per-tensor log off the test output
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed ({rc})"
    return dst


@pytest.fixture(scope="session")
def quantized(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Q8_0 and Q4_0 files requantized from the default Q4_1 model."""
    folder = tmp_path_factory.mktemp("quantized")
    return {
        name: requantize(default_model, folder / f"SmolLM2-135M-Instruct-{name}.gguf", ftype)
        for name, ftype in (("Q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), ("Q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0))
    }


@pytest.fixture(scope="session")
def f16_model(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model's weights widened to f16: a float GGUF to quantize from."""
    folder = tmp_path_factory.mktemp("f16")
    return requantize(default_model, folder / "SmolLM2-135M-Instruct-F16.gguf", llama_cpp.LLAMA_FTYPE_MOSTLY_F16)
