"""Human-readable sizes, counts and model names: one convention for every command and the chat app.

Sizes are decimal (1 MB = 1,000,000 bytes), as Ollama, the Hugging Face Hub and disk vendors print
them, so a file is the same number in `show`, `plan`, `list`, `bench`, `pull` and `quantize`."""

from __future__ import annotations

import os


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_count(n: float) -> str:
    for unit in ("", "K", "M", "B"):
        if abs(n) < 1000 or unit == "B":
            return f"{n:.0f}" if not unit else f"{n:.1f}{unit}"
        n /= 1000
    raise AssertionError("unreachable")


def model_label(model: str) -> str:
    """The one name a model is shown by (banners, status bar, message headers, exports, `ps`):
    `default` and store names as typed (without a `:TYPE`, which is shown beside it), a file by its
    own name without `.gguf`, taken from the path as given, so a symlink keeps the name it was given."""
    if "/" in model or os.sep in model or model.lower().endswith(".gguf") or model.startswith(("~", ".")):
        name = os.path.basename(model.rstrip("/" + os.sep)) or model
        return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    return model.partition(":")[0]
