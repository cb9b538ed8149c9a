"""The on-disk KV cache store: a closed chat's KV cache, so that reopening it skips re-reading it.

Reading a 2,000-token conversation takes seconds on a laptop CPU; loading its KV cache from disk
takes a fraction of that. When a chat is closed the engine saves its sequence with llama.cpp's
`llama_state_seq_save_file` (streamed to disk, no copy in memory); the next turn whose prompt
starts with a saved token prefix loads it with `llama_state_seq_load_file` and evaluates only the
rest. `edgellm serve --cache-size` uses the same store: when it stops, every conversation it holds
(edgellm.runtime.prompt_cache) is saved from its own sequence, and read back into one when it
returns.

Keys. A saved state is only valid for the same weights evaluated the same way: the key hashes the
model file's path, size and modification time, the LoRA adapters likewise, the context settings
that shape or change the cache (context size, batch size, KV type, flash attention, offload,
RPC workers: every load option except those that cannot change a number), and llama.cpp's version
and build. The file name carries the key, the prefix length and a hash of the exact token prefix,
and the file starts with the exact token prefix it holds (llama.cpp's header), so finding the entry
that shares the longest prefix with a new prompt reads a few KB per candidate.

Never trusted. Files are written under a temporary name and renamed when complete (edgellm.durable).
Each ends in a footer: the full key digest and a SHA-256 of everything before it. A file whose
footer, key, digest or token prefix does not match is deleted and the prompt simply evaluated; so is
anything llama.cpp refuses to load. Disk use is bounded (`--cache-size`): least recently used
files (by modification time, refreshed on every use) go first."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

from edgellm import durable, paths

DEFAULT_LIMIT = 4_000_000_000  # bytes: "a few GB" (`--cache-size`)
MIN_TOKENS = 64  # shorter prefixes are quicker to evaluate than to save and find
SUFFIX = ".kv"
_MAGIC = b"EDGEKV01"
_FOOTER = struct.Struct("<32s32s8s")  # key digest, SHA-256 of the bytes before the footer, magic
_STALE_TMP_SECONDS = 3600  # temporary files of a writer that died
_CHUNK = 1 << 20
_HEADER = struct.Struct("<III")  # llama.cpp's sequence file: magic, version, token count (then the ids)


def _saved_tokens(path: Path) -> np.ndarray | None:
    """The token ids at the head of a saved state, None if the header is not llama.cpp's."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return None
            magic, version, n = _HEADER.unpack(head)
            if (magic, version) != (llama_cpp.LLAMA_STATE_SEQ_MAGIC, llama_cpp.LLAMA_STATE_SEQ_VERSION):
                return None
            ids = np.frombuffer(fh.read(4 * n), dtype="<i4")
            return ids if len(ids) == n else None
    except OSError:
        return None


def default_folder() -> Path:
    return paths.cache_dir() / "kv"


def key_digest(settings: dict[str, object]) -> bytes:
    """The key of a context's settings (see the module docstring for what goes in)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).digest()


def prefix_hash(tokens: list[int]) -> str:
    return hashlib.sha256(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()[:24]


def _file_digest(fh: object, size: int) -> bytes:
    """SHA-256 of the first ``size`` bytes of an open file (streamed: bounded memory)."""
    h = hashlib.sha256()
    left = size
    while left:
        chunk = fh.read(min(_CHUNK, left))  # type: ignore[attr-defined]
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.digest()


@dataclass(frozen=True)
class Entry:
    path: Path
    n_tokens: int  # of the prompt it was found for, the prefix it holds
    saved: int  # tokens it holds in all


class KVStore:
    """Saved sequence states in one folder (by default $XDG_CACHE_HOME/edgellm/kv), at most
    ``limit`` bytes in all. Safe to share between processes: writes are atomic renames and a file
    that vanishes under a reader is a miss."""

    def __init__(self, folder: Path | None = None, limit: int = DEFAULT_LIMIT) -> None:
        self.folder = folder or default_folder()
        self.limit = limit
        self.min_tokens = MIN_TOKENS

    # -- finding ---------------------------------------------------------------------------------
    def _name(self, key: bytes, tokens: list[int]) -> str:
        return f"{key.hex()[:16]}-{len(tokens)}-{prefix_hash(tokens)}{SUFFIX}"

    def find(self, key: bytes, tokens: list[int], longer_than: int = 0) -> Entry | None:
        """The saved state sharing the longest token prefix with ``tokens`` (more than
        ``longer_than`` tokens): ``n_tokens`` of it are usable. Reads only the token list at the
        head of each file saved under this key (llama.cpp's header: magic, version, count, ids)."""
        stem = key.hex()[:16] + "-"
        want = np.asarray(tokens, dtype=np.int32)
        best: Entry | None = None
        try:
            names = [n for n in os.listdir(self.folder) if n.startswith(stem) and n.endswith(SUFFIX)]
        except OSError:
            return None
        for name in names:
            saved = _saved_tokens(self.folder / name)
            if saved is None:
                continue
            m = min(len(saved), len(want))
            differ = np.flatnonzero(saved[:m] != want[:m])
            common = int(differ[0]) if differ.size else m
            if common > max(longer_than, best.n_tokens if best else 0):
                best = Entry(self.folder / name, common, len(saved))
        return best

    # -- restoring -------------------------------------------------------------------------------
    def _verified(self, entry: Entry, key: bytes) -> bool:
        """The file ends in a footer with this key and a digest matching its contents."""
        try:
            with open(entry.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size - _FOOTER.size
                if size <= 0:
                    return False
                fh.seek(size)
                file_key, digest, magic = _FOOTER.unpack(fh.read(_FOOTER.size))
                if magic != _MAGIC or file_key != key:
                    return False
                fh.seek(0)
                return _file_digest(fh, size) == digest
        except OSError:
            return False

    def restore(self, ctx: llama_cpp.llama_context_p, key: bytes, tokens: list[int], longer_than: int = 0,
                seq: int = 0) -> int:  # fmt: skip
        """Load into sequence ``seq`` the saved state sharing the longest prefix with ``tokens`` (if
        longer than ``longer_than``), cut to that prefix; returns its length, 0 when nothing was
        loaded (the sequence is then empty if a file was tried: the caller evaluates the prompt).
        A file that fails a check is deleted."""
        entry = self.find(key, tokens, longer_than)
        if entry is None:
            return 0
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        if self._verified(entry, key):
            out = (llama_cpp.llama_token * entry.saved)()
            count = ctypes.c_size_t()
            loaded = llama_cpp.llama_state_seq_load_file(
                ctx, str(entry.path).encode(), seq, out, entry.saved, ctypes.byref(count)
            )
            if loaded and count.value == entry.saved and list(out[: entry.n_tokens]) == tokens[: entry.n_tokens]:
                llama_cpp.llama_memory_seq_rm(memory, seq, entry.n_tokens, -1)  # keep the shared prefix
                with contextlib.suppress(OSError):
                    os.utime(entry.path)  # most recently used
                return entry.n_tokens
        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        with contextlib.suppress(OSError):
            entry.path.unlink()
        return 0

    # -- saving ----------------------------------------------------------------------------------
    def save(self, ctx: llama_cpp.llama_context_p, key: bytes, tokens: list[int], seq: int = 0) -> Path | None:
        """Save sequence ``seq`` (holding ``tokens``) under ``key``; None when it is too short, would
        not fit the size limit, or the disk refused (a cache: never an error for the caller)."""
        if len(tokens) < self.min_tokens:
            return None
        final = self.folder / self._name(key, tokens)
        if final.exists():
            with contextlib.suppress(OSError):
                os.utime(final)
            return final
        estimate = llama_cpp.llama_state_seq_get_size(ctx, seq) + 4 * len(tokens) + 12 + _FOOTER.size
        if estimate > self.limit:
            return None
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._evict(self.limit - estimate)
            arr = (llama_cpp.llama_token * len(tokens))(*tokens)
            if not llama_cpp.llama_state_seq_save_file(ctx, str(tmp).encode(), seq, arr, len(tokens)):
                return None
            with open(tmp, "r+b") as fh:
                size = os.fstat(fh.fileno()).st_size
                digest = _file_digest(fh, size)
                fh.seek(size)
                fh.write(_FOOTER.pack(key, digest, _MAGIC))
            durable.replace(tmp, final)
            return final
        except OSError:
            return None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _evict(self, budget: int) -> None:
        """Delete least recently used entries until the rest take at most ``budget`` bytes, and
        temporary files a dead writer left."""
        entries = []
        now = time.time()
        for path in self.folder.iterdir():
            try:
                st = path.stat()
            except OSError:
                continue
            if path.name.endswith(".tmp"):
                if now - st.st_mtime > _STALE_TMP_SECONDS:
                    path.unlink(missing_ok=True)
            elif path.name.endswith(SUFFIX):
                entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= budget:
                break
            path.unlink(missing_ok=True)
            total -= size

    def usage(self) -> int:
        """Bytes the saved states take."""
        try:
            return sum(p.stat().st_size for p in self.folder.glob(f"*{SUFFIX}"))
        except OSError:
            return 0
