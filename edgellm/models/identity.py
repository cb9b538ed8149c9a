"""Who a GGUF file is to the user: the registry entry behind it, the name it is shown by, and the
system prompt it gets when the user gives none (Ollama's Modelfile SYSTEM).

A file's own `general.name` is often a training-run label (the bundled model's says
`Smollm2 135M 8k Lc100K Mix1 Ep2`), so the name comes first from the registry (the bundled default
and pulled models are known there), then from the file name, which publishers write by the GGUF
naming convention (`Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`), and only for generic file names
(`ggml-model-q4_0.gguf`, `model.gguf`) from the header."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from edgellm import paths
from edgellm.errors import EdgeLLMError
from edgellm.models import default_model, registry
from edgellm.models.resolve import looks_like_path

# file names that say nothing about the model: the header's name is better
_GENERIC_TITLES = frozenset({"model", "ggml-model", "gguf-model", "ggml", "gguf", "weights", "consolidated"})
# llama.cpp's type names, and the bare k-quant names some publishers use (HFL's `ggml-model-q4_k.gguf`)
_TYPES = sorted({*registry.FILE_TYPES, "Q2_K", "Q3_K", "Q4_K", "Q5_K"}, key=len, reverse=True)
_TYPE_SUFFIX = re.compile(rf"[.\-_]({'|'.join(re.escape(t) for t in _TYPES)})$", re.I)


def file_title(path: str | os.PathLike[str]) -> str:
    """`Qwen2.5-0.5B-Instruct-Q4_K_M.gguf` -> `Qwen2.5-0.5B-Instruct`: the file name without `.gguf`
    and without the quantization type after its last `.`, `-` or `_`."""
    name = Path(path).name
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    return _TYPE_SUFFIX.sub("", stem)


def registry_name(path: str | os.PathLike[str]) -> str | None:
    """The registry name of the model in ``path``: the bundled default's, or the store folder's for a
    file in the store (`<models>/<name>/<name>-<TYPE>.gguf`); None for any other file."""
    try:
        real = Path(path).resolve()
    except OSError:
        return None
    try:
        if real == default_model.default_model_path().resolve():
            return default_model.REGISTRY_NAME
    except EdgeLLMError:  # not installed: then this file is not it
        pass
    try:
        inside = real.relative_to(paths.models_dir().resolve())
    except ValueError:
        return None
    return inside.parts[0] if len(inside.parts) == 2 else None


def entry_for(path: str | os.PathLike[str]) -> registry.ModelEntry | None:
    """The registry entry of the model in ``path``, if it has one. An unreadable user models.toml
    counts as no entry here (the commands that read the registry report it)."""
    name = registry_name(path)
    if name is None:
        return None
    try:
        return registry.load().get(name)
    except EdgeLLMError:
        return None


def display_name(path: str | os.PathLike[str], header_name: object = None) -> str:
    """The name a model file is shown by everywhere (banners, status bar, message headers, `show`)."""
    entry = entry_for(path)
    if entry is not None:
        return entry.display_name
    title = file_title(path)
    if (not title or title.lower() in _GENERIC_TITLES) and isinstance(header_name, str) and header_name.strip():
        return header_name.strip()
    return title or Path(path).name


def default_system(path: str | os.PathLike[str]) -> str | None:
    """The system prompt the registry gives this model when the conversation has none (None: the
    model's own template decides, as for any file the registry does not know)."""
    entry = entry_for(path)
    return entry.system if entry is not None else None


@functools.lru_cache(maxsize=256)
def model_label(model: str) -> str:
    """The one name a model is shown by (banners, status bar, message headers, sidebar, exports,
    `ps`), from the handle the user gave: `default` and registry names by the registry's name
    (`SmolLM2-135M-Instruct`), a file by its own name as given (a symlink keeps the name it was
    given), without `.gguf` and the type (shown beside it); anything else as typed, without `:TYPE`."""
    if looks_like_path(model):
        return file_title(model.rstrip("/" + os.sep)) or model
    name = model.partition(":")[0]
    try:
        entry = registry.load().get(default_model.REGISTRY_NAME if name == "default" else name)
    except EdgeLLMError:  # an unreadable user models.toml: the commands that read it say so
        entry = None
    return entry.display_name if entry is not None else name
