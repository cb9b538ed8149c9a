"""Issue #3 point 5: token ids from the GGUF equal the HF tokenizer's on a multilingual text
(Chinese, English, code with tabs, emoji, runs of spaces and newlines)."""

from __future__ import annotations

import shutil

import pytest
import sentencepiece

from quantize import run

from .builders import MULTILINGUAL
from .reference import gguf_fields, gguf_tokenize, hf_tokenizer

TEXTS = [MULTILINGUAL, "trailing spaces   ", "\n\nnewlines first", "中文", "😀", "a\t\tb  \n  c"]
# transformers' non-legacy Llama tokenizer (legacy=False, what it builds from a bare tokenizer.model)
# drops SentencePiece's dummy prefix before a leading space; llama.cpp, like SentencePiece (what the
# model was trained with), keeps it, so leading-space text is compared with SentencePiece only.
LEADING = [" leading space", "   three leading spaces", " 中文"]


@pytest.mark.parametrize("name", ["llama2-chat", "alpaca", "chinese-alpaca-16k"])
def test_token_ids_equal_transformers(models, name: str) -> None:  # noqa: ANN001
    model = models(name)
    tok = hf_tokenizer(model.folder)
    path = model.gguf("f16")
    for text in TEXTS:
        assert gguf_tokenize(path, text) == tok(text)["input_ids"], text


@pytest.mark.parametrize("name", ["llama2-chat", "chinese-alpaca-16k"])
def test_token_ids_equal_sentencepiece(models, name: str) -> None:  # noqa: ANN001
    model = models(name)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model.folder / "tokenizer.model"))
    for text in TEXTS + LEADING:
        assert gguf_tokenize(model.gguf("f16"), text) == [sp.bos_id(), *sp.encode(text)], text


def test_chinese_vocabulary_is_the_extended_one(models) -> None:  # noqa: ANN001
    model = models("chinese-alpaca-16k")
    tokens = gguf_fields(model.gguf("f16"))["tokenizer.ggml.tokens"]
    assert len(tokens) == 55296
    assert len(gguf_tokenize(model.gguf("f16"), "北京是中国的首都")) < len("北京是中国的首都")


def test_tokenizer_json_only_folder(models, tmp_path) -> None:  # noqa: ANN001
    """A folder with tokenizer.json but no tokenizer.model converts to the same token ids."""
    src = models("llama2-chat").folder
    folder = tmp_path / "Llama-2-7b-chat-hf"
    shutil.copytree(src, folder)
    hf_tokenizer(src).save_pretrained(folder)  # writes tokenizer.json
    (folder / "tokenizer.model").unlink()
    (out,) = run(folder, "f16", outdir=tmp_path / "out", progress=False)
    tok = hf_tokenizer(src)
    for text in TEXTS:
        assert gguf_tokenize(out.path, text) == tok(text)["input_ids"], text
    ref = gguf_fields(models("llama2-chat").gguf("f16"))
    got = gguf_fields(out.path)
    assert got["tokenizer.ggml.tokens"] == ref["tokenizer.ggml.tokens"]
    assert got["tokenizer.ggml.token_type"] == ref["tokenizer.ggml.token_type"]
