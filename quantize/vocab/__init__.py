"""The vocabulary readers: tokenizer files → the GGUF ``tokenizer.ggml.*`` fields.

This package holds every reader: SentencePiece (``spm_model`` parses tokenizer.model itself),
HF byte-level BPE (``bpe``) and tiktoken (``tiktoken_bpe``, Qwen-1); this module the shared
``Vocab`` and the Llama-style readers.

Readers are looked up by kind in ``READERS`` (a family lists the kinds it accepts, in order):
``"spm"`` reads tokenizer.model (+ added_tokens.json / added_tokens_decoder), ``"llama-hf"`` reads a
Llama-style tokenizer.json; other modules add kinds (``"tiktoken"`` in quantize.vocab.tiktoken_bpe).
A reader is ``(folder) -> Vocab | None``: None means its files are not there, so the next kind is
tried. Special tokens and the chat template come from tokenizer_config.json for every kind."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from quantize.errors import VocabMismatch
from quantize.sources import read_capped, read_json
from quantize.vocab import spm_model

TT = gguf.TokenType
SPECIAL_KINDS = ("bos", "eos", "unk", "pad", "sep")

# kind → "module:function"; each returns a Vocab, or None when its files are absent
READERS: dict[str, str] = {
    "spm": "quantize.vocab:load_spm",
    "llama-hf": "quantize.vocab:load_llama_hf",
    "tiktoken": "quantize.vocab.tiktoken_bpe:load_tiktoken",
    "byte-level-hf": "quantize.vocab.bpe:load_byte_level_hf",
}
READER_FILES = {
    "spm": "tokenizer.model",
    "llama-hf": "tokenizer.json",
    "tiktoken": "qwen.tiktoken",
    "byte-level-hf": "tokenizer.json",
}


@dataclass
class Vocab:
    """A tokenizer as GGUF stores it."""

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    tokens: list[str]
    scores: list[float]
    types: list[int]  # gguf.TokenType values
    source: str  # the files it was read from, for messages
    pre: str | None = None  # tokenizer.ggml.pre, for BPE pre-tokenizers ("qwen2", ...)
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad/sep/eot → token id
    add_special: dict[str, bool] = field(default_factory=dict)  # bos/eos → added when tokenizing
    add_space_prefix: bool | None = None
    chat_template: str | list[dict[str, str]] | None = None  # the folder's own, if any

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        if self.merges:
            writer.add_token_merges(self.merges)
        for kind, token_id in self.special.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        for kind, value in self.add_special.items():
            getattr(writer, f"add_add_{kind}_token")(value)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)


def load_vocab(folder: Path, kinds: tuple[str, ...]) -> Vocab:
    """The first vocabulary found among ``kinds``, or an error naming the files looked for."""
    for kind in kinds:
        module, func = READERS[kind].split(":")
        reader: Callable[[Path], Vocab | None] = getattr(importlib.import_module(module), func)
        vocab = reader(folder)
        if vocab is not None:
            return vocab
    wanted = " or ".join(READER_FILES.get(k, k) for k in kinds)
    raise VocabMismatch(f"{folder}: no tokenizer found (expected {wanted}); download the model's tokenizer files too")


# -- tokenizer_config.json: special tokens, add_bos/eos, chat template --------------------------------
def tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    return read_json(path) if path.is_file() else {}


def _content(entry: object) -> str | None:
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) and entry else None


def special_token_names(folder: Path) -> dict[str, str]:
    """bos/eos/unk/pad/sep → token text, from tokenizer_config.json then special_tokens_map.json;
    empty strings (early Llama conversions wrote "") count as unset."""
    names: dict[str, str] = {}
    stm = folder / "special_tokens_map.json"
    for source in (read_json(stm) if stm.is_file() else {}, tokenizer_config(folder)):
        for kind in SPECIAL_KINDS:
            text = _content(source.get(f"{kind}_token"))
            if text is not None:
                names[kind] = text
    return names


def add_special_flags(folder: Path, defaults: Mapping[str, bool]) -> dict[str, bool]:
    cfg = tokenizer_config(folder)
    flags = dict(defaults)
    for kind in ("bos", "eos"):
        value = cfg.get(f"add_{kind}_token")
        if isinstance(value, bool):
            flags[kind] = value
    return flags


def chat_template(folder: Path) -> str | list[dict[str, str]] | None:
    """The folder's own chat template: tokenizer_config.json, chat_template.jinja or .json."""
    template = tokenizer_config(folder).get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = read_capped(folder / "chat_template.jinja", VocabMismatch).decode("utf-8", errors="replace")
    if template is None and (folder / "chat_template.json").is_file():
        template = read_json(folder / "chat_template.json").get("chat_template")
    if isinstance(template, str) and template.strip():
        return template
    if isinstance(template, list) and all(isinstance(t, dict) and "name" in t and "template" in t for t in template):
        return template
    return None


def added_tokens(folder: Path) -> dict[int, tuple[str, bool]]:
    """id → (text, special) of tokens added on top of a base vocabulary, from added_tokens.json,
    tokenizer_config.json's added_tokens_decoder and tokenizer.json's added_tokens."""
    found: dict[int, tuple[str, bool]] = {}
    path = folder / "added_tokens.json"
    if path.is_file():
        for text, token_id in read_json(path).items():
            if isinstance(token_id, int):
                found[token_id] = (text, False)
    for token_id, entry in (tokenizer_config(folder).get("added_tokens_decoder") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("content"), str) and str(token_id).isdigit():
            found[int(token_id)] = (entry["content"], bool(entry.get("special", False)))
    tj = folder / "tokenizer.json"
    if tj.is_file():
        for entry in _tokenizer_json(tj).get("added_tokens") or []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("content"), str):
                found[entry["id"]] = (entry["content"], bool(entry.get("special", False)))
    return found


def _tokenizer_json(path: Path) -> dict[str, Any]:
    return read_json(path, VocabMismatch)


def tokens_by_id(path: Path, vocab: dict[str, int]) -> list[str]:
    """tokenizer.json's `model.vocab` (text -> id) as a list indexed by id; the ids must be 0..n-1."""
    n = len(vocab)
    tokens = [""] * n
    for text, token_id in vocab.items():
        if not (isinstance(token_id, int) and 0 <= token_id < n) or tokens[token_id]:
            raise VocabMismatch(f"{path}: token ids are not 0..{n - 1}; re-download it")
        tokens[token_id] = text
    return tokens


def _extend(
    tokens: list[str], scores: list[float], types: list[int], extra: dict[int, tuple[str, bool]], source: str
) -> None:
    """Append the added tokens beyond the base vocabulary; they must continue it without gaps."""
    for token_id in sorted(i for i in extra if i >= len(tokens)):
        if token_id != len(tokens):
            raise VocabMismatch(f"{source}: added token id {token_id} leaves a gap after id {len(tokens) - 1}")
        text, special = extra[token_id]
        tokens.append(text)
        scores.append(0.0)
        types.append(int(TT.CONTROL if special else TT.USER_DEFINED))


def _resolve_specials(folder: Path, tokens: list[str], fallback: Mapping[str, int], source: str) -> dict[str, int]:
    """Token ids of the special tokens: the names tokenizer_config.json gives when they are in the
    vocabulary, else the tokenizer model's own ids (config.json's bos/eos ids are not trusted:
    2023 Alpaca folders say bos 0 / eos 1 where the tokenizer has 1 / 2)."""
    index = {t: i for i, t in enumerate(tokens)}
    special = dict(fallback)
    for kind, text in special_token_names(folder).items():
        if text in index:
            special[kind] = index[text]
    return special


# -- SentencePiece: tokenizer.model ---------------------------------------------------------------
def load_spm(folder: Path) -> Vocab | None:
    path = folder / "tokenizer.model"
    if not path.is_file():
        return None
    try:
        model = spm_model.load(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise VocabMismatch(f"{path}: not a SentencePiece model ({err}); re-download it") from None
    if model.model_type != 2 and not model.byte_fallback:
        raise VocabMismatch(f"{path}: a unigram SentencePiece model; only BPE (Llama-style) tokenizers convert")
    tokens, scores, types = model.pieces, model.scores, model.types
    extra = added_tokens(folder)
    source = str(path) + (" + added_tokens.json" if (folder / "added_tokens.json").is_file() else "")
    _extend(tokens, scores, types, extra, source)
    return Vocab(
        model="llama",
        tokens=tokens,
        scores=scores,
        types=types,
        source=source,
        special=_resolve_specials(folder, tokens, model.special_ids, source),
        add_special=add_special_flags(folder, {"bos": True, "eos": False}),
        add_space_prefix=model.add_dummy_prefix,
        chat_template=chat_template(folder),
    )


# -- Llama-style tokenizer.json (SentencePiece BPE with byte fallback, exported by tokenizers) ----
def load_llama_hf(folder: Path) -> Vocab | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    data = _tokenizer_json(path)
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "BPE" or not model.get("byte_fallback") or not isinstance(vocab, dict):
        raise VocabMismatch(f"{path}: not a Llama (SentencePiece BPE with byte fallback) tokenizer")
    tokens = tokens_by_id(path, vocab)
    n = len(tokens)
    extra = added_tokens(folder)
    unk = special_token_names(folder).get("unk") or model.get("unk_token") or "<unk>"
    types = []
    for i, text in enumerate(tokens):
        if i in extra and extra[i][1]:
            types.append(int(TT.UNKNOWN if text == unk else TT.CONTROL))
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(int(TT.BYTE))
        else:
            types.append(int(TT.NORMAL))
    scores = [-float(i) for i in range(n)]  # merges were built in piece order: earlier wins
    _extend(tokens, scores, types, extra, str(path))
    fallback = {"unk": vocab[unk]} if unk in vocab else {}
    return Vocab(
        model="llama",
        tokens=tokens,
        scores=scores,
        types=types,
        source=str(path),
        special=_resolve_specials(folder, tokens, fallback, str(path)),
        add_special=add_special_flags(folder, {"bos": True, "eos": False}),
        add_space_prefix=_prepends_space(data),
        chat_template=chat_template(folder),
    )


def _prepends_space(data: dict[str, Any]) -> bool:
    """Whether the tokenizer puts "▁" before the text (SentencePiece's add_dummy_prefix): a
    Prepend normalizer (legacy export) or a Metaspace pre-tokenizer that prepends."""

    def parts(node: object) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        children = node.get("normalizers") or node.get("pretokenizers") or []
        return [node, *(p for child in children for p in parts(child))]

    for node in parts(data.get("normalizer")) + parts(data.get("pre_tokenizer")):
        if node.get("type") == "Prepend" or (
            node.get("type") == "Metaspace" and node.get("prepend_scheme", "always") != "never"
        ):
            return True
    return False
