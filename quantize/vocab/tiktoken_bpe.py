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
from pathlib import Path

import gguf

from quantize.errors import VocabMismatch
from quantize.sources import read_capped
from quantize.vocab import Vocab, chat_template

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


def read_ranks(path: Path) -> list[bytes]:
    """The token bytes of a `.tiktoken` file (one `base64 rank` per line), indexed by rank."""
    lines = read_capped(path, VocabMismatch).splitlines()
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
            raise VocabMismatch(
                f"{path}: line {number} is not 'base64-token rank' with ranks 0, 1, 2, ... in order; re-download it"
            ) from None
        tokens.append(token)
    if sorted(tokens[:256]) != [bytes([b]) for b in range(256)]:
        raise VocabMismatch(f"{path}: ranks 0-255 are not the 256 single bytes; not a byte-level BPE vocabulary")
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
    """The two lower-ranked tokens that BPE joins into ``token``; None if no merge builds it."""
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
            raise VocabMismatch(f"{source}: token of rank {rank} is not two lower-ranked tokens joined; re-download it")
        merges.append(merge)
    return merges


def load_tiktoken(folder: Path) -> Vocab | None:
    """Qwen-1's vocabulary: the ranks, then Qwen's special tokens (defined in its tokenizer code,
    not in the file) as control tokens. Padding up to the embedding rows is the family's job."""
    path = folder / TIKTOKEN_FILE
    if not path.is_file():
        return None
    ranked = read_ranks(path)
    merges = [f"{byte_level(a)} {byte_level(b)}" for a, b in derive_merges(ranked, path)]
    tokens = [byte_level(t) for t in ranked] + list(SPECIAL_TOKENS)
    types = [int(gguf.TokenType.NORMAL)] * len(ranked) + [int(gguf.TokenType.CONTROL)] * len(SPECIAL_TOKENS)
    ids = {text: len(ranked) + i for i, text in enumerate(SPECIAL_TOKENS)}
    return Vocab(
        model="gpt2",
        tokens=tokens,
        scores=[0.0] * len(tokens),
        types=types,
        source=str(path),
        pre=PRE_TOKENIZER,
        merges=merges,
        # Qwen-1 has no BOS; <|endoftext|> ends documents, <|im_end|> ends chat turns
        special={"bos": ids[ENDOFTEXT], "eos": ids[ENDOFTEXT], "eot": ids[IM_END], "pad": ids[ENDOFTEXT]},
        add_special={"bos": False, "eos": False},
        chat_template=chat_template(folder),
    )
