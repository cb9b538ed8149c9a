"""Shared fixtures: the real default model and one Engine on it per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgellm.models.default_model import default_model_path
from edgellm.runtime.client import RemoteEngine
from edgellm.runtime.engine import Engine, LoadOptions


@pytest.fixture(scope="session")
def default_model() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def engine(default_model: Path) -> Iterator[Engine]:
    with Engine(default_model, LoadOptions(n_ctx=2048)) as eng:
        yield eng


@pytest.fixture(scope="session")
def remote_engine(default_model: Path) -> Iterator[RemoteEngine]:
    """The default model in a runner process, as the CLI and the chat app load it."""
    with RemoteEngine(default_model, LoadOptions(n_ctx=2048)) as eng:
        yield eng


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real data, config or cache directories."""
    root = tmp_path_factory.mktemp("home")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(var, str(root / var.lower()))
    monkeypatch.delenv("EDGELLM_HOME", raising=False)
