"""Turn what a user typed as MODEL into a GGUF path."""

from __future__ import annotations

from pathlib import Path

from edgellm.default_model import default_model_path


def resolve_model(name: str) -> Path:
    """`default`, or a path to a .gguf file (used in place, never copied)."""
    if name == "default":
        return default_model_path()
    return Path(name).expanduser()
