"""The chat app when its model's runner process dies mid-answer: the app stays up, everything
already shown stays (the partial answer is marked as failed, with the reason), and the next
message starts a fresh runner."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from edgellm.runtime.engine import LoadOptions
from edgellm.tui.app import ChatApp
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.engines import EngineSlot, load_engine
from edgellm.tui.sessions import SessionStore
from edgellm.tui.widgets.message import MessageView
from tests.tui.conftest import chat_view, send, wait_idle, wait_writing

pytestmark = pytest.mark.anyio


async def test_a_killed_runner_fails_the_answer_and_the_next_message_works(db_path: Path) -> None:
    store = SessionStore(db_path)
    slot = EngineSlot(loader=load_engine)  # the real loader: a runner process per model
    app = ChatApp(store, slot=slot, model="default", base_options=LoadOptions(n_ctx=1024),
                  new_chat_settings=ChatSettings(temperature=0.0, max_tokens=60, n_ctx=1024))
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            view = chat_view(app)
            await send(pilot, "Write a very long story about a dragon.")
            answer = view.answer
            await wait_writing(pilot)
            first_runner = answer.engine.runner.proc.pid
            os.kill(first_runner, signal.SIGKILL)
            await wait_idle(pilot)
            saved = [(m.role, m.content, m.state) for m in store.messages(view.chat.id)]
            assert [r[0] for r in saved] == ["user", "assistant", "notice"]
            assert saved[1][2] == "error" and len(saved[1][1]) > 20  # the partial answer is kept, marked
            assert "SIGKILL" in saved[2][1] and ".gguf" in saved[2][1]  # why, naming the model file
            shown = view.query(MessageView)[1]
            assert shown.content == saved[1][1] and "failed" in str(shown.query_one(".header").render())
            assert "SIGKILL" in str(answer.error)

            await send(pilot, "Hi")
            await wait_idle(pilot)
            saved = [(m.role, m.content, m.state) for m in store.messages(view.chat.id)]
            assert saved[-1][0] == "assistant" and saved[-1][1] and saved[-1][2] == "done"
            assert slot.engine.runner.proc.pid != first_runner
    finally:
        slot.close()
        store.close()
