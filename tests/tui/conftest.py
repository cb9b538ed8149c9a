"""Apps under test: on the real default model (the session's shared runner) or on a scripted engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from edgellm.runtime.client import RemoteEngine
from edgellm.runtime.engine import LoadOptions
from edgellm.tui.app import ChatApp
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.engines import EngineSlot
from edgellm.tui.sessions import SessionStore
from edgellm.tui.widgets.chat_view import ChatView
from tests.tui.scripted import Script, ScriptedEngine

FIXED_RSS = 123_400_000  # snapshots must not depend on this process's memory
GREEDY = ChatSettings(temperature=0.0, max_tokens=24, n_ctx=2048)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def keep(_engine: object) -> None:
    """Engines shared between tests are closed by their fixture, not by the app."""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chats.db"


@pytest.fixture
def make_real_app(remote_engine: RemoteEngine, db_path: Path) -> Iterator[Callable[..., ChatApp]]:
    """A ChatApp on the real default model in its runner process, loaded once per test session."""
    stores: list[SessionStore] = []

    def make(settings: ChatSettings = GREEDY, path: Path = db_path) -> ChatApp:
        store = SessionStore(path)
        stores.append(store)
        slot = EngineSlot(loader=lambda _model, _options: remote_engine, release=keep)
        return ChatApp(store, slot=slot, base_options=LoadOptions(n_ctx=2048), new_chat_settings=settings)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def make_scripted_app(db_path: Path) -> Iterator[Callable[..., tuple[ChatApp, ScriptedEngine]]]:
    stores: list[SessionStore] = []

    def make(
        scripts: list[Script] | None = None, *, n_ctx: int = 512, settings: ChatSettings | None = None
    ) -> tuple[ChatApp, ScriptedEngine]:
        scripted = ScriptedEngine(scripts, n_ctx=n_ctx)
        store = SessionStore(db_path)
        stores.append(store)
        slot = EngineSlot(loader=lambda _model, _options: scripted, release=keep)
        app = ChatApp(
            store,
            slot=slot,
            model="scripted",
            new_chat_settings=settings or ChatSettings(max_tokens=64),
            memory_probe=lambda: FIXED_RSS,
        )
        return app, scripted

    yield make
    for store in stores:
        store.close()


def chat_view(app: ChatApp) -> ChatView:
    return app.screen.query_one(ChatView)


async def wait_idle(pilot: Pilot, timeout: float = 120.0) -> None:
    """Until the answer being written (if any) is finished, saved and rendered."""
    view = chat_view(pilot.app)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while view.busy:
        if loop.time() > deadline:
            raise AssertionError("the answer did not finish")
        await pilot.pause(0.05)
    await pilot.pause()


async def wait_writing(pilot: Pilot, chars: int = 20, timeout: float = 120.0) -> None:
    """Until the answer being written shows more than ``chars`` characters (mid-answer)."""
    view = chat_view(pilot.app)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (view._answer_view and len(view._answer_view.content) > chars):
        if loop.time() > deadline:
            raise AssertionError(f"no answer of more than {chars} characters within {timeout:g} s")
        await pilot.pause(0.02)


async def send(pilot: Pilot, text: str) -> None:
    """Type ``text`` in the message box and press Enter (once the screen has opened its chat)."""
    view = chat_view(pilot.app)
    for _ in range(200):
        if view.chat is not None:
            break
        await pilot.pause(0.05)
    view.prompt.focus()
    view.prompt.insert(text)
    await pilot.press("enter")
    await pilot.pause()
