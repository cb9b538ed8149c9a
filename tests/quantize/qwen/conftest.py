"""Session-wide tiny Qwen checkpoints and their f32 GGUFs: built once, shared by the Qwen tests.

Random-weight models are the logits references; "chat" models are programmed bigram models (see
`bigram_qwen2`) that answer 你 + a character split over two tokens, then <|im_end|>, then would run
on. Those are the ones loaded in the Engine, for the chat and tokenizer tests alike."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgellm.runtime.engine import Engine, LoadOptions
from quantize.convert import prepare

from .fixtures import (
    bigram_qwen2,
    qwen_ranks,
    reference_qwen2,
    tiktoken_encoding,
    write_qwen1_checkpoint,
    write_qwen15_checkpoint,
)

NEWLINE, IM_END = 198, len(qwen_ranks()) + 2


@dataclass(frozen=True)
class Converted:
    """A tiny checkpoint, the transformers model it was written from, and its f32 GGUF."""

    name: str
    folder: Path
    gguf: Path
    model: object  # transformers Qwen2ForCausalLM


def _convert(name: str, folder: Path, model: object) -> Converted:
    out = folder.parent / f"{folder.name}.f32.gguf"
    prepare(folder).write(out, "f32", progress=False)  # convert() minus its summary re-read
    return Converted(name, folder, out, model)


@pytest.fixture(scope="session")
def qwen1(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """Qwen-1 (fused c_attn, w1/w2), safetensors; non-default rope base and epsilon so a value
    read from the wrong key or defaulted shows up in the logits."""
    model = reference_qwen2(rope_theta=20000.0, eps=1e-5, seed=1)
    folder = write_qwen1_checkpoint(tmp_path_factory.mktemp("qwen1") / "Qwen-tiny", model, seq_length=1024)
    return _convert("qwen1", folder, model)


@pytest.fixture(scope="session")
def qwen15_tied(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """Qwen1.5 like 0.5B: tied embeddings (no lm_head), grouped-query attention, pair-form merges."""
    model = reference_qwen2(kv_heads=2, tie=True, seed=2)
    folder = write_qwen15_checkpoint(tmp_path_factory.mktemp("qwen15") / "Qwen1.5-tiny-Chat", model)
    return _convert("qwen15_tied", folder, model)


@pytest.fixture(scope="session")
def qwen15_untied(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """Qwen1.5 like 7B: separate lm_head, multi-head attention, string-form merges, base model."""
    model = reference_qwen2(rope_theta=500000.0, seed=3)
    folder = tmp_path_factory.mktemp("qwen15") / "Qwen1.5-tiny"
    write_qwen15_checkpoint(folder, model, merges_form="strings", chat=False)
    return _convert("qwen15_untied", folder, model)


@pytest.fixture(scope="session", params=["qwen1", "qwen15_tied", "qwen15_untied"])
def converted(request: pytest.FixtureRequest) -> Converted:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def split_char() -> tuple[str, list[int]]:
    """The first CJK character that Qwen's vocabulary spells with two tokens, and those tokens."""
    enc = tiktoken_encoding()
    return next((chr(c), ids) for c in range(0x4E00, 0xA000) if len(ids := enc.encode_ordinary(chr(c))) == 2)


@pytest.fixture(scope="session")
def answer_chain(split_char: tuple[str, list[int]]) -> dict[int, int]:
    """ "\\n" (the prompt's last token) → 你 → char (2 tokens) → <|im_end|> → "\\n" → ... (run-on)."""
    ni = tiktoken_encoding().encode_ordinary("你")[0]
    a, b = split_char[1]
    return {NEWLINE: ni, ni: a, a: b, b: IM_END, IM_END: NEWLINE}


def _chat_model(generation: str, folder: Path, chain: dict[int, int]) -> Iterator[tuple[Converted, Engine]]:
    model = bigram_qwen2(chain)
    writer = write_qwen1_checkpoint if generation == "qwen1" else write_qwen15_checkpoint
    converted = _convert(generation, writer(folder, model), model)
    with Engine(converted.gguf, LoadOptions(n_ctx=1024, n_threads=2, kv_f32=True)) as engine:
        yield converted, engine


@pytest.fixture(scope="session")
def qwen1_chat(
    tmp_path_factory: pytest.TempPathFactory, answer_chain: dict[int, int]
) -> Iterator[tuple[Converted, Engine]]:
    """A converted Qwen-1 bigram chat model, loaded in the Engine (f32 KV cache)."""
    yield from _chat_model("qwen1", tmp_path_factory.mktemp("chat") / "Qwen-bigram-Chat", answer_chain)


@pytest.fixture(scope="session")
def qwen15_chat(
    tmp_path_factory: pytest.TempPathFactory, answer_chain: dict[int, int]
) -> Iterator[tuple[Converted, Engine]]:
    """A converted Qwen1.5 bigram chat model (template from tokenizer_config.json), in the Engine."""
    yield from _chat_model("qwen15", tmp_path_factory.mktemp("chat") / "Qwen1.5-bigram-Chat", answer_chain)


@pytest.fixture(scope="session", params=["qwen1_chat", "qwen15_chat"])
def chat_model(request: pytest.FixtureRequest) -> tuple[Converted, Engine]:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def qwen1_engine(qwen1_chat: tuple[Converted, Engine]) -> Engine:
    """The Engine on a Qwen-1 GGUF, for tokenizer tests (any weights will do)."""
    return qwen1_chat[1]
