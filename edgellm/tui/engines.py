"""The one model the TUI holds in memory, swapped when a chat asks for another model or load options.

A laptop holds one model at a time: the slot frees the old engine before it loads the next. The
TUI talks to the engine only through `ChatEngine`, which the runner process's `RemoteEngine` (and
the in-process `Engine`) satisfies and the tests' scripted engine imitates. The TUI never loads
llama.cpp itself: a runner that dies fails its turn, and the next turn starts a fresh one."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from edgellm.models.gguf_file import GGUFInfo
from edgellm.models.resolve import resolve_model
from edgellm.runtime.client import RemoteEngine
from edgellm.runtime.engine import LoadOptions, SamplingParams, TurnStats
from edgellm.runtime.planner import check_load


class ChatTurn(Protocol):
    stats: TurnStats

    def __iter__(self) -> Iterator[str]: ...


class ChatEngine(Protocol):
    info: GGUFInfo
    options: LoadOptions
    n_ctx: int
    template: str

    def chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None) -> ChatTurn: ...

    def fit(self, messages: list[dict[str, str]], reserve: int) -> tuple[list[dict[str, str]], int]: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


Loader = Callable[[str, LoadOptions], ChatEngine]


def load_engine(model: str, options: LoadOptions) -> ChatEngine:
    """`default`, a store name or a .gguf path, loaded in a runner process once the planner says it fits."""
    path = resolve_model(model)
    check_load(path, options.n_ctx, options.n_gpu_layers, flash_attn=options.flash_attn)
    return RemoteEngine(path, options, model=model)


def close_engine(engine: ChatEngine) -> None:
    engine.close()


class EngineSlot:
    """Holds at most one engine, keyed by (model, load options); safe to use from worker threads."""

    def __init__(self, loader: Loader = load_engine, release: Callable[[ChatEngine], None] = close_engine) -> None:
        self._loader = loader
        self._release = release
        self._lock = threading.Lock()
        self._key: tuple[str, LoadOptions] | None = None
        self.engine: ChatEngine | None = None

    def held(self, model: str, options: LoadOptions) -> ChatEngine | None:
        """The engine if it is ``model`` loaded with ``options``, else None."""
        return self.engine if self._key == (model, options) else None

    @contextlib.contextmanager
    def use(self, model: str, options: LoadOptions) -> Iterator[ChatEngine]:
        """The engine for ``model`` with ``options`` (loaded if it is not the one held), which
        cannot be swapped or closed until the block ends: a turn runs inside it."""
        with self._lock:
            if self.engine is None or self._key != (model, options):
                self._drop()
                self.engine = self._loader(model, options)
                self._key = (model, options)
            yield self.engine

    def load(self, model: str, options: LoadOptions) -> None:
        with self.use(model, options):
            pass

    def close(self) -> None:
        """Stop whatever runs on the engine, wait for it, and free the model."""
        engine = self.engine
        if engine is not None:
            engine.cancel()
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self.engine is not None:
            engine, self.engine, self._key = self.engine, None, None
            self._release(engine)
