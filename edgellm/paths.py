"""Where edgellm keeps its files: the XDG base directories, or one folder named by EDGELLM_HOME.

`EDGELLM_HOME=/some/dir` is the data folder itself, with config/ and cache/ inside it (portable
installs, tests); otherwise $XDG_DATA_HOME/edgellm, $XDG_CONFIG_HOME/edgellm and $XDG_CACHE_HOME/edgellm
with the XDG defaults (~/.local/share, ~/.config, ~/.cache). Nothing is created here: callers
make the folder they write to."""

from __future__ import annotations

import os
from pathlib import Path

APP = "edgellm"


def _base(xdg_var: str, fallback: str, home_sub: str) -> Path:
    home = os.environ.get("EDGELLM_HOME")
    if home:
        return Path(home).expanduser() / home_sub
    xdg = os.environ.get(xdg_var)
    # The XDG spec says relative paths are invalid and must be ignored.
    root = Path(xdg).expanduser() if xdg and os.path.isabs(os.path.expanduser(xdg)) else Path.home() / fallback
    return root / APP


def data_dir() -> Path:
    """Models, chats: what a user would back up."""
    return _base("XDG_DATA_HOME", ".local/share", "")


def config_dir() -> Path:
    """Settings a user may edit by hand."""
    return _base("XDG_CONFIG_HOME", ".config", "config")


def cache_dir() -> Path:
    """Anything that can be rebuilt or downloaded again."""
    return _base("XDG_CACHE_HOME", ".cache", "cache")


def models_dir() -> Path:
    """The model store: one folder per model name, GGUF files inside (see edgellm.models.store)."""
    return data_dir() / "models"


def runtime_dir() -> Path:
    """Files that live only while a process does (the runners' status files for `edgellm ps`):
    $XDG_RUNTIME_DIR/edgellm, else the cache folder's ``run/`` (per user either way)."""
    if not os.environ.get("EDGELLM_HOME"):
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and os.path.isabs(xdg):
            return Path(xdg) / APP
    return cache_dir() / "run"
