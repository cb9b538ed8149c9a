"""Read a SentencePiece ``tokenizer.model`` (a protobuf ModelProto) without protobuf installed.

Only what the GGUF needs: every piece with its score and type, and the normalizer flags that
change tokenization (add_dummy_prefix → tokenizer.ggml.add_space_prefix).

Why not sentencepiece or protobuf: converting runs on edgellm's runtime dependencies alone, and
those two are test-only (the tests train tokenizers with them): 3.4 MB (sentencepiece 0.2.3, a
native extension) + 2.2 MB (protobuf 7.36) installed, and sentencepiece's generated
``sentencepiece_model_pb2`` is tied to the protobuf major version it was generated with. The price
is speed, paid once per conversion (which takes minutes for such a model): `python -m
bench.bench_readers` (section "readers" of docs/benchmarks.md), a 55,296-piece model (Chinese-LLaMA's
size, built as the tests build it), 2026-12-06, median of 5 interleaved rounds on 2 cores shared
under load average ~14: this parser 1.0 s, protobuf's ``ModelProto.FromString`` plus reading the
pieces 0.25 s, ``SentencePieceProcessor`` plus reading the pieces 0.54 s."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from quantize.errors import VocabMismatch
from quantize.sources import read_capped

# sentencepiece_model.proto: SentencePiece.Type → GGUF token type
_PIECE_TYPES = {
    1: gguf.TokenType.NORMAL,
    2: gguf.TokenType.UNKNOWN,
    3: gguf.TokenType.CONTROL,
    4: gguf.TokenType.USER_DEFINED,
    5: gguf.TokenType.UNUSED,
    6: gguf.TokenType.BYTE,
}


class ProtoError(ValueError):
    pass


@dataclass
class SpmModel:
    pieces: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    model_type: int = 1  # TrainerSpec.ModelType: 1 unigram, 2 bpe
    byte_fallback: bool = False
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    special_ids: dict[str, int] = field(default_factory=dict)  # unk/bos/eos/pad as trained


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint too long")


def _fields(buf: bytes):  # noqa: ANN202 - yields (field number, wire type, value)
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ProtoError("truncated field")
        yield number, wire, value


def _piece(buf: bytes) -> tuple[str, float, int]:
    """One SentencePiece message (piece=1, score=2, type=3), any field layout: `_pieces`' fallback."""
    piece, score, kind = "", 0.0, 1
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            piece = value.decode("utf-8")
        elif number == 2 and wire == 5:
            (score,) = _FLOAT.unpack(value)
        elif number == 3 and wire == 0:
            kind = value
    return piece, score, kind


_FLOAT = struct.Struct("<f")


def _pieces(data: bytes, start: int, end: int, model: SpmModel) -> None:
    """The common layout (piece, score[, type] as short fields) without the generic field walk."""
    buf = data[start:end]
    fast = len(buf) >= 2 and buf[0] == 0x0A and buf[1] < 0x80 and len(buf) >= 7 + buf[1]
    if fast and buf[2 + buf[1] : 3 + buf[1]] == b"\x15":
        n = buf[1]
        rest = buf[7 + n :]
        if not rest or (len(rest) == 2 and rest[0] == 0x18 and rest[1] < 0x80):
            model.pieces.append(buf[2 : 2 + n].decode("utf-8"))
            model.scores.append(_FLOAT.unpack_from(buf, 3 + n)[0])
            model.types.append(int(_PIECE_TYPES.get(rest[1] if rest else 1, gguf.TokenType.NORMAL)))
            return
    piece, score, kind = _piece(buf)
    model.pieces.append(piece)
    model.scores.append(score)
    model.types.append(int(_PIECE_TYPES.get(kind, gguf.TokenType.NORMAL)))


def parse(data: bytes) -> SpmModel:
    model = SpmModel()
    trainer_ids = {40: "unk", 41: "bos", 42: "eos", 43: "pad"}
    defaults = {"unk": 0, "bos": 1, "eos": 2, "pad": -1}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire != 2:  # ModelProto's fields are all messages
            raise ProtoError(f"unexpected wire type {wire} for field {number}")
        size, pos = _varint(data, pos)
        end = pos + size
        if end > len(data):
            raise ProtoError("truncated field")
        if number == 1:  # SentencePiece
            _pieces(data, pos, end, model)
        elif number == 2:  # TrainerSpec
            for n, w, v in _fields(data[pos:end]):
                if n == 3 and w == 0:
                    model.model_type = v
                elif n == 35 and w == 0:
                    model.byte_fallback = bool(v)
                elif n in trainer_ids and w == 0:
                    defaults[trainer_ids[n]] = v - (1 << 64) if v >= 1 << 63 else v
        elif number == 3:  # NormalizerSpec
            for n, w, v in _fields(data[pos:end]):
                if n == 3 and w == 0:
                    model.add_dummy_prefix = bool(v)
                elif n == 4 and w == 0:
                    model.remove_extra_whitespaces = bool(v)
        pos = end
    if not model.pieces:
        raise ProtoError("no pieces")
    model.special_ids = {k: v for k, v in defaults.items() if 0 <= v < len(model.pieces)}
    return model


def load(path: Path) -> SpmModel:
    return parse(read_capped(path, VocabMismatch))
