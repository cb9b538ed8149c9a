"""Both sides of every comparison: transformers (the reference) and llama.cpp (what users run)."""

from __future__ import annotations

import functools
from pathlib import Path

import llama_cpp
import numpy as np


def nmse(got: np.ndarray, ref: np.ndarray) -> float:
    """Normalised mean squared error: sum((a-b)^2) / sum(b^2)."""
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    return float(((got - ref) ** 2).sum() / (ref**2).sum())


def hf_logits(folder: Path, ids: list[int]) -> np.ndarray:
    """transformers' logits in f32 for every position."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def hf_tokenizer(folder: Path):  # noqa: ANN201 - a transformers tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def gguf_logits(path: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits for every position, with an f32 KV cache (no f16 rounding of K/V)."""
    llm = llama_cpp.Llama(
        str(path), n_ctx=max(64, len(ids) + 8), logits_all=True, type_k=0, type_v=0, n_threads=2, verbose=False
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def gguf_tokenize(path: Path, text: str, *, add_special: bool = True) -> list[int]:
    """Token ids from the GGUF's own vocabulary (loaded vocabulary-only)."""
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not load {path}"
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), add_special, False)
        assert n >= 0
        return list(buf[:n])
    finally:
        llama_cpp.llama_model_free(model)


@functools.cache
def gguf_fields(path: Path) -> dict[str, object]:
    """Every metadata key of a GGUF with its value (strings decoded, arrays as lists); cached, as
    each test's files are written once."""
    import gguf

    reader = gguf.GGUFReader(path)
    out: dict[str, object] = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out[name] = f.contents()
    return out
