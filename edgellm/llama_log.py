"""Route llama.cpp's log through Python: kept in a ring buffer for error messages, printed only
when verbose. With llama.cpp silent, every refusal is 'failed to load model'; the log says why."""

from __future__ import annotations

import collections
import ctypes
import sys
import threading

import llama_cpp

_LEVEL_ERROR = 3
_LEVEL_WARN = 2
_LEVEL_CONT = 5

_lock = threading.Lock()
_lines: collections.deque[tuple[int, int, str]] = collections.deque(maxlen=200)  # (seq, level, text)
_seq = 0
_partial: list[str] = []
_last_level = 0
_verbose = False


@llama_cpp.llama_log_callback
def _on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    global _last_level, _seq
    piece = text.decode("utf-8", errors="replace")
    if _verbose:
        sys.stderr.write(piece)
    with _lock:
        if level != _LEVEL_CONT:
            _last_level = level
        _partial.append(piece)
        if piece.endswith("\n"):
            _seq += 1
            _lines.append((_seq, _last_level, "".join(_partial).rstrip()))
            _partial.clear()


def install(verbose: bool = False) -> None:
    """Take over llama.cpp's log (idempotent); ``verbose`` echoes it to stderr."""
    global _verbose
    _verbose = verbose
    llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))


def mark() -> int:
    """A position in the log, to read what came after it with :func:`problems_since`."""
    with _lock:
        return _seq


def problems_since(marker: int) -> list[str]:
    """Warnings and errors logged after ``marker`` (oldest first)."""
    with _lock:
        return [msg for seq, level, msg in _lines if seq > marker and level in (_LEVEL_ERROR, _LEVEL_WARN) and msg]
