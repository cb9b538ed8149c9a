"""Tokenizer parity, the bar for Qwen: the converted GGUFs, tokenized by llama.cpp through the Engine,
give exactly the ids of Qwen's own tokenizers (tiktoken for Qwen-1, transformers' Qwen2Tokenizer
for Qwen1.5) on a multilingual corpus plus thousands of generated stress texts, and decode back."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import llama_cpp
import pytest

from edgellm.models import chat_templates
from edgellm.runtime.engine import Engine

from .conftest import Converted
from .fixtures import (
    CORPUS,
    QWEN1_SPECIALS,
    VOCAB_SIZE,
    hf_tokenizer,
    llama_detokenize,
    qwen_ranks,
    stress_corpus,
    tiktoken_encoding,
)

SPECIAL_LOOKING = [t for t in CORPUS if "<|" in t]
STRESS = stress_corpus(1500)


def _mismatches(texts: list[str], ours, theirs) -> list[tuple[str, list[int], list[int]]]:  # noqa: ANN001
    bad = []
    for text in texts:
        got, want = ours(text), theirs(text)
        if got != want:
            bad.append((text, got, want))
    return bad


def test_corpus_is_nfc_and_covers_what_the_issue_lists() -> None:
    assert all(unicodedata.normalize("NFC", t) == t for t in CORPUS)
    joined = "".join(CORPUS)
    for needle in ("不亦", "道可道", "\t\t", "👨\u200d👩", "123456789", " " * 100, "<|im_start|>", "<|extra_0|>"):
        assert needle in joined


def test_qwen1_ids_equal_tiktoken(qwen1_engine: Engine) -> None:
    enc = tiktoken_encoding()
    bad = _mismatches(
        [*CORPUS, *STRESS],
        lambda t: qwen1_engine.tokenize(t, add_special=False, parse_special=False),
        enc.encode_ordinary,
    )
    assert not bad, f"{len(bad)} mismatches, first: {bad[0]}"


def test_qwen1_special_tokens_are_text_unless_parsed(qwen1_engine: Engine) -> None:
    enc = tiktoken_encoding()
    first_special = len(qwen_ranks())
    for text in SPECIAL_LOOKING:
        plain = qwen1_engine.tokenize(text, add_special=False, parse_special=False)
        assert plain == enc.encode_ordinary(text)
        assert max(plain) < first_special
        parsed = qwen1_engine.tokenize(text, add_special=False, parse_special=True)
        assert parsed == enc.encode(text, allowed_special="all")
        assert max(parsed) >= first_special


def test_qwen1_detokenize_round_trips(qwen1_engine: Engine) -> None:
    enc = tiktoken_encoding()
    for text in [*CORPUS, *STRESS[:300]]:
        ids = enc.encode_ordinary(text)
        assert qwen1_engine.detokenize(ids) == text == enc.decode(ids)


def test_qwen1_vocabulary_types_and_end_of_turn(qwen1_engine: Engine) -> None:
    vocab = qwen1_engine._vocab
    assert llama_cpp.llama_vocab_n_tokens(vocab) == VOCAB_SIZE
    ids = {text: len(qwen_ranks()) + i for i, text in enumerate(QWEN1_SPECIALS)}
    assert qwen1_engine.is_end_of_turn(ids["<|im_end|>"]) and qwen1_engine.is_end_of_turn(ids["<|endoftext|>"])
    assert not qwen1_engine.is_end_of_turn(ids["<|im_start|>"]) and not qwen1_engine.is_end_of_turn(ids["<|extra_0|>"])
    for text, token in ids.items():
        assert llama_cpp.llama_vocab_get_attr(vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        assert qwen1_engine.piece(token, special=True).decode() == text
    for pad in (len(qwen_ranks()) + len(QWEN1_SPECIALS), VOCAB_SIZE - 1):
        assert llama_cpp.llama_vocab_get_attr(vocab, pad) & llama_cpp.LLAMA_TOKEN_ATTR_UNUSED
    assert not llama_cpp.llama_vocab_get_add_bos(vocab)


def test_nfd_prompt_tokenizes_as_qwen_does(qwen1_engine: Engine) -> None:
    """Qwen's tokenizer NFC-normalizes; llama.cpp does not, so the Engine normalizes prompts."""
    text = "Café naïve Ångström — 한국어 텍스트 — ếệữ Ǆ"
    decomposed = unicodedata.normalize("NFD", text)
    enc = tiktoken_encoding()
    assert qwen1_engine.tokenize(decomposed, add_special=False) != enc.encode_ordinary(text)  # the test can fail
    nfd_messages = [{"role": "user", "content": decomposed}]
    rendered = chat_templates.render(qwen1_engine.template, [{"role": "user", "content": text}])
    assert qwen1_engine.prompt_tokens(nfd_messages) == enc.encode(rendered, allowed_special="all")


@pytest.fixture(scope="module", params=["qwen15_tied", "qwen15_untied"])
def qwen15_vocab(request: pytest.FixtureRequest) -> Iterator[tuple[Converted, llama_cpp.Llama]]:
    """llama.cpp's tokenizer of each Qwen1.5 GGUF (pair- and string-form merges), weights not loaded."""
    converted = request.getfixturevalue(request.param)
    llm = llama_cpp.Llama(str(converted.gguf), vocab_only=True, verbose=False)
    yield converted, llm
    llm.close()


def test_qwen15_ids_equal_hf_tokenizer(qwen15_vocab: tuple[Converted, llama_cpp.Llama]) -> None:
    converted, llm = qwen15_vocab
    tok = hf_tokenizer(converted.folder)
    nfc = [unicodedata.normalize("NFC", t) for t in [*CORPUS, *STRESS]]  # HF normalizes, llama.cpp does not
    bad = _mismatches(
        nfc,
        lambda t: llm.tokenize(t.encode(), add_bos=False, special=False),
        lambda t: tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"],
    )
    assert not bad, f"{len(bad)} mismatches, first: {bad[0]}"
    for text in SPECIAL_LOOKING:  # <|extra_N|> is plain text in Qwen1.5
        assert (
            llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text, add_special_tokens=False)["input_ids"]
        )
    for text in nfc[:300]:
        ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert llama_detokenize(llm, ids) == text == tok.decode(ids)


def test_qwen15_chat_prompt_equals_transformers(qwen15_chat: tuple[Converted, Engine]) -> None:
    """The GGUF's template (tokenizer_config.json's) renders and tokenizes as transformers does,
    decomposed (NFD) input included, and both of Qwen's end tokens end a turn."""
    converted, engine = qwen15_chat
    tok = hf_tokenizer(converted.folder)
    messages = [{"role": "user", "content": unicodedata.normalize("NFD", "你好！Café 한국어 — 写一首关于秋天的诗。")}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert engine.prompt_tokens(messages) == tok(text, add_special_tokens=False)["input_ids"]
    assert engine.is_end_of_turn(tok.convert_tokens_to_ids("<|im_end|>"))
    assert engine.is_end_of_turn(tok.convert_tokens_to_ids("<|endoftext|>"))
