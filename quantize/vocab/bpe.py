"""GPT-2 byte-level BPE `tokenizer.json` (Qwen1.5 and other Qwen2-architecture models) → a GGUF
`gpt2` vocabulary.

llama.cpp re-implements the pre-tokenizer by name (`tokenizer.ggml.pre`) rather than running the
regex stored in tokenizer.json, so the regex is looked up in a table of the ones llama.cpp knows;
an unknown one is refused instead of silently tokenizing differently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from quantize.errors import VocabMismatch
from quantize.vocab import (
    Vocab,
    _extend,
    _resolve_specials,
    _tokenizer_json,
    add_special_flags,
    added_tokens,
    chat_template,
    tokens_by_id,
)

QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PRE_TOKENIZERS = {QWEN2_SPLIT: "qwen2"}  # tokenizer.json's Split regex → llama.cpp's pre-tokenizer name
_SPACE = chr(ord(" ") + 256)  # what a space byte is in GPT-2's byte-level alphabet ("Ġ")


def _split_regexes(pre_tokenizer: dict[str, Any] | None) -> list[str]:
    if not pre_tokenizer:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return [r for p in pre_tokenizer.get("pretokenizers") or [] for r in _split_regexes(p)]
    pattern = pre_tokenizer.get("pattern") or {}
    return [pattern["Regex"]] if pre_tokenizer.get("type") == "Split" and "Regex" in pattern else []


def _pre(data: dict[str, Any], path: Path) -> str:
    regexes = _split_regexes(data.get("pre_tokenizer"))
    if len(regexes) == 1 and regexes[0] in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[regexes[0]]
    raise VocabMismatch(
        f"{path}: its pre-tokenizer ({regexes or 'none'}) is not one llama.cpp implements "
        f"(known: {', '.join(sorted(set(PRE_TOKENIZERS.values())))}); the GGUF would tokenize differently"
    )


def _merges(raw: object, path: Path) -> list[str]:
    """Merges as GGUF stores them ("a b"), from either tokenizer.json form: "a b" strings (before
    transformers 4.45) or ["a", "b"] pairs (after; a literal space becomes its byte-level "Ġ")."""
    if not isinstance(raw, list) or not raw:
        raise VocabMismatch(f"{path}: no BPE merges; re-download it")
    if all(isinstance(m, str) and m.count(" ") == 1 for m in raw):
        return raw
    if all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m) for m in raw):
        return [f"{a.replace(' ', _SPACE)} {b.replace(' ', _SPACE)}" for a, b in raw]
    raise VocabMismatch(f"{path}: merges are neither 'a b' strings nor [a, b] pairs; re-download it")


def load_byte_level_hf(folder: Path) -> Vocab | None:
    """tokenizer.json's vocabulary (ids 0..n-1), then its added tokens (special ones as control
    tokens), its merges, and special tokens, add-BOS flag and chat template from tokenizer_config.json."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    data = _tokenizer_json(path)
    model = data.get("model") or {}
    vocab = model.get("vocab")
    byte_level = (data.get("decoder") or {}).get("type") == "ByteLevel" and not model.get("byte_fallback")
    if model.get("type") != "BPE" or not byte_level or not isinstance(vocab, dict):
        raise VocabMismatch(f"{path}: not a GPT-2 byte-level BPE tokenizer (model BPE with a ByteLevel decoder)")
    tokens = tokens_by_id(path, vocab)
    n = len(tokens)
    extra = added_tokens(folder)
    added_type = {True: gguf.TokenType.CONTROL, False: gguf.TokenType.USER_DEFINED}
    types = [int(added_type[extra[i][1]] if i in extra else gguf.TokenType.NORMAL) for i in range(n)]
    scores = [0.0] * n
    _extend(tokens, scores, types, extra, str(path))
    return Vocab(
        model="gpt2",
        tokens=tokens,
        scores=scores,
        types=types,
        source=str(path),
        pre=_pre(data, path),
        merges=_merges(model.get("merges"), path),
        special=_resolve_specials(folder, tokens, {}, str(path)),
        add_special=add_special_flags(folder, {"bos": False, "eos": False}),
        chat_template=chat_template(folder),
    )
