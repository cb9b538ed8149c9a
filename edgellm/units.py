"""Human-readable sizes and counts: one convention for every command and the chat app.

Sizes are decimal (1 MB = 1,000,000 bytes), as Ollama, the Hugging Face Hub and disk vendors print
them, so a file is the same number in `show`, `plan`, `list`, `bench`, `pull` and `quantize`."""

from __future__ import annotations


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
