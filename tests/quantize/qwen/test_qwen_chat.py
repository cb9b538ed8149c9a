"""Chatting with converted Qwen GGUFs in the Engine: the turn ends at <|im_end|> (the model itself
would run on), and Chinese streams as whole characters even when one spans two tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.models import chat_templates
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from quantize.convert import run
from quantize.llamacpp import DEFAULT_TYPE

from .conftest import IM_END, NEWLINE, Converted
from .fixtures import QWEN15_CHAT_TEMPLATE, greedy

MESSAGES = [{"role": "user", "content": "你好"}]
GREEDY = SamplingParams(temperature=0, max_tokens=32)


def test_turn_stops_at_im_end_where_the_model_runs_on(
    chat_model: tuple[Converted, Engine], answer_chain: dict[int, int], split_char: tuple[str, list[int]]
) -> None:
    converted, engine = chat_model
    prompt = engine.prompt_tokens(MESSAGES)
    assert prompt[-1] == NEWLINE
    answer = [answer_chain[NEWLINE], *split_char[1]]
    # transformers, with nothing to stop it: the answer, <|im_end|>, then more text
    assert greedy(converted.model, prompt, 6) == [*answer, IM_END, NEWLINE, answer[0]]
    turn = engine.chat(MESSAGES, GREEDY)
    assert turn.result() == "你" + split_char[0]
    assert turn.tokens == answer
    assert turn.stats.stop_reason == "stop"


def test_chinese_streams_whole_characters(
    chat_model: tuple[Converted, Engine], split_char: tuple[str, list[int]]
) -> None:
    _, engine = chat_model
    char, (first, second) = split_char
    assert engine.piece(first) + engine.piece(second) == char.encode()
    with pytest.raises(UnicodeDecodeError):
        engine.piece(first).decode()  # half a character on its own
    assert list(engine.chat(MESSAGES, GREEDY)) == ["你", char]


def test_chat_templates(qwen1_chat: tuple[Converted, Engine], qwen15_chat: tuple[Converted, Engine]) -> None:
    """Qwen-1 ships none: ChatML with Qwen's default system prompt. Qwen1.5: tokenizer_config.json's."""
    engine = qwen1_chat[1]
    assert engine.template == chat_templates.chatml(default_system="You are a helpful assistant.")
    assert engine.render(MESSAGES) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen15_chat[1].template == QWEN15_CHAT_TEMPLATE


def test_quantized_qwen1_still_answers_and_stops(
    qwen1_chat: tuple[Converted, Engine], split_char: tuple[str, list[int]], tmp_path: Path
) -> None:
    """`edgellm quantize`'s default type on a Qwen-1 model: llama.cpp's quantizer takes the fused
    attn_qkv and half-width MLP, and the quantized file chats like the f32 one."""
    (out,) = run(qwen1_chat[0].folder, DEFAULT_TYPE, outdir=tmp_path, progress=False)
    with Engine(out.path, LoadOptions(n_ctx=512, n_threads=2)) as engine:
        turn = engine.chat(MESSAGES, GREEDY)
        assert turn.result() == "你" + split_char[0]
        assert turn.stats.stop_reason == "stop"
