"""A user's text file (an evaluation text, a calibration text), read as llama.cpp's tools read it,
with one line naming the file and the fix for every way reading it can fail.

Bytes decoded as UTF-8 with no newline translation (llama-perplexity and llama-imatrix read the
file in binary), and at most MAX_BYTES of them: every reader uses the first chunks only, and a
multi-gigabyte file read whole would take the memory instead."""

from __future__ import annotations

from pathlib import Path

from edgellm.errors import EdgeLLMError

MAX_BYTES = 1 << 30  # 1 GiB: far more than any chunk count reads


def read_utf8(path: Path, instead: str) -> str:
    """``path``'s text; EdgeLLMError naming the file and the fix otherwise (``instead``: the
    option that picks a bundled text, e.g. `--text bundled`)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise EdgeLLMError(f"{path}: no such file (give a UTF-8 text file, or {instead})") from None
    except IsADirectoryError:
        raise EdgeLLMError(f"{path}: is a directory (give a UTF-8 text file)") from None
    except PermissionError:
        raise EdgeLLMError(f"{path}: not readable (permission denied): check its permissions") from None
    except OSError as err:
        raise EdgeLLMError(f"{path}: cannot be read ({err.strerror or err}); give a UTF-8 text file") from None
    if len(data) > MAX_BYTES:
        raise EdgeLLMError(f"{path}: larger than {MAX_BYTES >> 30} GiB; give its first part as a smaller file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EdgeLLMError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); convert it to UTF-8") from None
