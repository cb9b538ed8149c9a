"""The server's prompt cache in host memory: idle sequences' KV caches, out of the way of the others.

Why. `edgellm serve` keeps every sequence in one unified KV cache. A finished request's cells are
worth keeping (a conversation's next turn then evaluates only its new tokens), but kept in the
cache they widen every later decode's attention range: on the CPU, one stream decoding while 7
idle slots hold ~120 cells each runs 10% slower (llama.cpp's single-token flash attention splits
the cells between threads, and one thread gets all the live ones). So, as llama-server does with
``--cache-ram`` and ``--cache-idle-slots``, a new request parks every idle slot: its sequence is
copied here (``llama_state_seq_get_data``, a memcpy) and cleared from the cache. A later prompt
that starts with a parked one is restored (``llama_state_seq_set_data``) instead of evaluated.

Bounded: at most ``limit`` bytes, least recently used entries evicted first; an entry whose tokens
are a prefix of a newer one is dropped (the newer one serves every prompt it would). Entries live
only as long as the runner process and are never read from disk; with `serve --cache-size` the
batching engine writes them to the disk store (`edgellm.runtime.kv_store`, checked on reading)
when it stops."""

from __future__ import annotations

import collections
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass

import llama_cpp

DEFAULT_LIMIT = 2_000_000_000  # bytes per model, at most (`edgellm serve --cache-ram`)


def default_limit(available: int, models: int = 1) -> int:
    """Each model's share of DEFAULT_LIMIT or of a quarter of the ``available`` memory, whichever
    is less: the cache fills only as conversations go idle, yet it must never be what pushes the
    machine into swap."""
    return min(DEFAULT_LIMIT, available // 4) // max(1, models)


@dataclass
class Parked:
    """One sequence's KV cache as llama.cpp serialized it, and the tokens it holds."""

    tokens: list[int]
    state: ctypes.Array


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share. Slices compare in C: a bisection over them
    beats a Python loop over the tokens (every placement compares the prompt with every parked
    conversation, which often share a long system prompt)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class PromptCache:
    """Parked sequences, least recently used first; ``limit`` bytes at most (0: nothing is kept)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.used = 0
        self._entries: collections.OrderedDict[int, Parked] = collections.OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[int]:
        """The entries' keys, least recently used first (a snapshot: restoring reorders them)."""
        return iter(list(self._entries))

    def save(self, ctx: llama_cpp.llama_context_p, seq: int, tokens: list[int]) -> bool:
        """Copy sequence ``seq`` (holding ``tokens``) here; False when it cannot be kept."""
        if not self.limit or not tokens:
            return False
        for key, entry in self._entries.items():
            if entry.tokens[: len(tokens)] == tokens:  # already held, in full or as part of a longer one
                self._entries.move_to_end(key)
                return True
        size = llama_cpp.llama_state_seq_get_size(ctx, seq)
        if not size or size > self.limit:
            return False
        state = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, state, size, seq) != size:
            return False
        for key in [k for k, e in self._entries.items() if tokens[: len(e.tokens)] == e.tokens]:
            self._drop(key)  # a prefix of this one: this one serves every prompt it would
        self._entries[self._next] = Parked(list(tokens), state)
        self._next += 1
        self.used += size
        while self.used > self.limit:
            self._drop(next(iter(self._entries)))
        return True

    def best(self, prompt: list[int]) -> tuple[int | None, int]:
        """(key, tokens shared with ``prompt``) of the entry sharing the longest prefix; (None, 0) if none."""
        best, shared = None, 0
        for key, entry in self._entries.items():
            n = common_prefix(entry.tokens, prompt)
            if n > shared:
                best, shared = key, n
        return best, shared

    def restore(self, ctx: llama_cpp.llama_context_p, key: int, seq: int) -> list[int] | None:
        """Load entry ``key`` into sequence ``seq`` (replacing what it held); the tokens it now
        holds, or None when llama.cpp refused (the sequence is then empty)."""
        entry = self._entries[key]
        self._entries.move_to_end(key)
        if llama_cpp.llama_state_seq_set_data(ctx, entry.state, len(entry.state), seq) == 0:
            self._drop(key)
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq, -1, -1)
            return None
        return list(entry.tokens)

    def _drop(self, key: int) -> None:
        self.used -= len(self._entries.pop(key).state)
