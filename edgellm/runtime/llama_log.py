"""Route llama.cpp's log through Python: kept in a ring buffer for error messages, printed only
when verbose. With llama.cpp silent, every refusal is 'failed to load model'; the log says why."""

from __future__ import annotations

import collections
import ctypes
import re
import sys
import threading
from collections.abc import Iterable

import llama_cpp

# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line)
_LEVEL_WARN = 3
_LEVEL_ERROR = 4
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
    """A position in the log, to read what came after it with :func:`errors_since`."""
    with _lock:
        return _seq


def errors_since(marker: int) -> list[str]:
    """Errors logged after ``marker``, oldest (the root cause) first, without llama.cpp's
    `function_name: ` prefixes."""
    with _lock:
        found = [msg for seq, level, msg in _lines if seq > marker and level == _LEVEL_ERROR and msg]
    return [_strip_prefixes(msg) for msg in found]


def _strip_prefixes(msg: str) -> str:
    """'llama_model_load: error loading model: invalid n_rot' -> 'invalid n_rot'."""
    head, sep, tail = msg.rpartition("error loading model: ")
    if sep:
        return tail
    name, sep, rest = msg.partition(": ")
    return rest if sep and name.isidentifier() else msg


# How llama.cpp's last words look on stderr, best first, and how to cut each down to its message:
# an assertion, a C++ exception, ggml_abort's "file.cpp:123: message", then any error line.
_LAST_WORDS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"GGML_ASSERT\((.*)\) failed"), 0),
    (re.compile(r"what\(\):\s*(.*)"), 1),
    (re.compile(r"^\S+\.(?:c|cc|cpp|h|cu|m):\d+: (.*)"), 1),
    (re.compile(r".*\b(?:error|failed)\b.*", re.I), 0),
)


def last_error(lines: Iterable[str]) -> str:
    """Why llama.cpp died, from the log it left (a dead process's stderr): the last assertion,
    exception or abort message, without its source path; "" when it said nothing useful."""
    kept = [ln.strip() for ln in lines if ln.strip()]
    for pattern, group in _LAST_WORDS:
        for line in reversed(kept):
            found = pattern.search(line)
            if found:
                return _strip_prefixes(found.group(group).strip())
    return ""
