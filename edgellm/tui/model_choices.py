"""What the model picker offers: the default model and every GGUF file in the model store,
each with its size and whether it fits this machine's memory."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import psutil

from edgellm import paths
from edgellm.default_model import default_model_path
from edgellm.errors import EdgeLLMError
from edgellm.gguf_file import GGUFInfo, inspect


@dataclass(frozen=True)
class ModelChoice:
    ref: str  # what a chat stores and `resolve_model` understands
    name: str
    file_type: str
    size: int  # bytes on disk (0: unknown)
    fits: bool | None  # None: cannot tell
    note: str = ""


def kv_cache_bytes(info: GGUFInfo, n_ctx: int) -> int:
    """f16 K and V for every layer and position."""
    head_dim = info.embedding_length // max(info.head_count, 1)
    return 2 * info.block_count * n_ctx * info.head_count_kv * head_dim * 2


def fits_memory(info: GGUFInfo, n_ctx: int | None, available: int) -> bool:
    """Weights (mapped, so they must stay resident to run at speed) plus the KV cache, against free RAM."""
    ctx = n_ctx or min(4096, info.context_length)
    return info.file_size + kv_cache_bytes(info, ctx) <= available


def _choice(ref: str, path: Path, n_ctx: int | None, available: int) -> ModelChoice:
    try:
        info = inspect(path)
    except EdgeLLMError as err:
        return ModelChoice(ref, path.name, "?", path.stat().st_size if path.exists() else 0, None, str(err))
    return ModelChoice(ref, info.name, info.file_type, info.file_size, fits_memory(info, n_ctx, available))


def store_files() -> list[Path]:
    folder = paths.data_dir() / "models"
    return sorted(folder.rglob("*.gguf")) if folder.is_dir() else []


def model_choices(n_ctx: int | None, current: str) -> list[ModelChoice]:
    """Default model first, then the store's files; ``current`` is listed even if it is elsewhere."""
    available = psutil.virtual_memory().available
    refs: list[tuple[str, Path]] = []
    with contextlib.suppress(EdgeLLMError):
        refs.append(("default", default_model_path()))
    refs += [(str(p), p) for p in store_files()]
    if current not in {r for r, _ in refs}:
        from edgellm.resolve import resolve_model

        with contextlib.suppress(EdgeLLMError):
            refs.append((current, resolve_model(current)))
    return [_choice(ref, path, n_ctx, available) for ref, path in refs]
