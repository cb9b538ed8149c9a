"""Qwen-1's tiktoken vocabulary (`qwen.tiktoken`) as a GGUF GPT-2 byte-level BPE vocabulary.

tiktoken stores only ranks: two adjacent pieces merge when their concatenation is a token, lowest
rank first. llama.cpp's BPE applies an explicit merge list instead, so the merges are re-derived:
for each token, the two pieces tiktoken's own merge loop holds just before building it (running on
the token's bytes with only lower ranks allowed). Most tokens have a single split into two
lower-ranked tokens, which is then the answer without simulating anything; that keeps the whole
151,643-rank export around a second."""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from pathlib import Path

import gguf

from edgellm.errors import BadModelFile

TIKTOKEN_FILE = "qwen.tiktoken"
PRE_TOKENIZER = "qwen2"  # llama.cpp's name for Qwen's split regex (identical for Qwen-1 and Qwen1.5)
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, *(f"<|extra_{i}|>" for i in range(205)))


@functools.cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table, as a str.translate map over latin-1."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table


def byte_level(token: bytes) -> str:
    """A token's bytes as GPT-2 byte-level text (the form GGUF `gpt2` vocabularies store)."""
    return token.decode("latin-1").translate(_byte_to_unicode())


@dataclass(frozen=True)
class ByteLevelVocab:
    """What a GGUF `gpt2` tokenizer needs: tokens by id, their types, merges by priority."""

    tokens: list[str]
    token_types: list[gguf.TokenType]
    merges: list[str]
    special_ids: dict[str, int]  # token text -> id, for the special tokens
    pre: str = PRE_TOKENIZER


def read_ranks(path: Path) -> list[bytes]:
    """The token bytes of a `.tiktoken` file (one `base64 rank` per line), indexed by rank."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise BadModelFile(
            path, "missing: Qwen-1 checkpoints ship qwen.tiktoken beside config.json; copy it from the original download"
        ) from None
    except OSError as err:
        raise BadModelFile(path, f"cannot read the tokenizer ({err.strerror})") from None
    tokens: list[bytes] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            text, rank = line.split()
            token = base64.b64decode(text, validate=True)
            if int(rank) != len(tokens) or not token:
                raise ValueError
        except (ValueError, binascii.Error):
            raise BadModelFile(
                path, f"line {number} is not 'base64-token rank' with ranks 0, 1, 2, ... in order; re-download it"
            ) from None
        tokens.append(token)
    if sorted(tokens[:256]) != [bytes([b]) for b in range(256)]:
        raise BadModelFile(path, "ranks 0-255 must be the 256 single bytes; this is not a byte-level BPE vocabulary")
    return tokens


def _simulate(ranks: dict[bytes, int], token: bytes, rank: int) -> list[bytes]:
    """tiktoken's merge loop on ``token``'s bytes, using only merges ranked below ``rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = -1, rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1], rank)
            if r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def _final_merge(ranks: dict[bytes, int], token: bytes, rank: int) -> tuple[bytes, bytes] | None:
    splits = []
    for i in range(1, len(token)):
        left, right = ranks.get(token[:i], rank), ranks.get(token[i:], rank)
        if left < rank and right < rank:
            splits.append((token[:i], token[i:]))
    if len(splits) == 1:
        return splits[0]
    parts = _simulate(ranks, token, rank) if splits else []
    return (parts[0], parts[1]) if len(parts) == 2 else None


def derive_merges(tokens: list[bytes], source: Path) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order (llama.cpp's merge priority is list order)."""
    ranks = {token: rank for rank, token in enumerate(tokens)}
    merges = []
    for rank, token in enumerate(tokens):
        if len(token) == 1:
            continue
        merge = _final_merge(ranks, token, rank)
        if merge is None:
            raise BadModelFile(source, f"token of rank {rank} cannot be built from lower-ranked tokens; re-download it")
        merges.append(merge)
    return merges


def qwen_vocab(path: Path, vocab_size: int, config: Path) -> ByteLevelVocab:
    """Qwen-1's vocabulary: the ranks, then the special tokens, padded to ``vocab_size`` (the
    embedding rows) with unused `[PAD{id}]` tokens so ids and rows line up."""
    ranked = read_ranks(path)
    merges = [f"{byte_level(a)} {byte_level(b)}" for a, b in derive_merges(ranked, path)]
    tokens = [byte_level(t) for t in ranked] + list(SPECIAL_TOKENS)
    if vocab_size < len(tokens):
        raise BadModelFile(
            config,
            f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokens)} tokens ({path.name} + "
            "Qwen's special tokens); the config does not belong to this tokenizer",
        )
    types = [gguf.TokenType.NORMAL] * len(ranked) + [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    types += [gguf.TokenType.UNUSED] * (vocab_size - len(types))
    special_ids = {text: len(ranked) + i for i, text in enumerate(SPECIAL_TOKENS)}
    return ByteLevelVocab(tokens=tokens, token_types=types, merges=merges, special_ids=special_ids)
