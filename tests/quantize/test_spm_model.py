"""quantize.vocab.spm_model reads tokenizer.model without protobuf: it must agree with SentencePiece
itself on every piece, score and type, including user-defined pieces and added-on Chinese pieces."""

from __future__ import annotations

import io

import gguf
import pytest
import sentencepiece as spm

from quantize.vocab import spm_model

from .builders import CHINESE, ENGLISH, extend_spm

TT = gguf.TokenType


def _types(sp: spm.SentencePieceProcessor, i: int) -> int:
    for check, kind in ((sp.is_byte, TT.BYTE), (sp.is_unused, TT.UNUSED), (sp.is_control, TT.CONTROL),
                        (sp.is_unknown, TT.UNKNOWN)):  # fmt: skip
        if check(i):
            return int(kind)
    return int(TT.NORMAL)


def _with_user_symbols() -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter((ENGLISH + CHINESE).splitlines() * 10), model_writer=out, vocab_size=600,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, user_defined_symbols=["<tool>", "[MASK]"],
        hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    return out.getvalue()


@pytest.mark.parametrize("kind", ["user-defined", "chinese-extended"])
def test_agrees_with_sentencepiece(spm_llama: bytes, kind: str) -> None:
    data = _with_user_symbols() if kind == "user-defined" else extend_spm(spm_llama, 55296)
    sp = spm.SentencePieceProcessor(model_proto=data)
    model = spm_model.parse(data)
    n = sp.get_piece_size()
    assert model.pieces == [sp.id_to_piece(i) for i in range(n)]
    assert model.scores == [sp.get_score(i) for i in range(n)]
    user = {sp.piece_to_id("<tool>"), sp.piece_to_id("[MASK]")} if kind == "user-defined" else set()
    assert model.types == [int(TT.USER_DEFINED) if i in user else _types(sp, i) for i in range(n)]
    assert model.special_ids == {"unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}
    assert model.model_type == 2 and model.byte_fallback


@pytest.mark.parametrize(
    "data",
    [b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05\x0a\x01a\x15\x00"],  # a bad length; a piece cut in its score
    ids=["bad-length", "truncated-piece"],
)
def test_garbage_is_an_error(data: bytes) -> None:
    with pytest.raises(spm_model.ProtoError):
        spm_model.parse(data)
