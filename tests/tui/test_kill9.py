"""kill -9 in the middle of an answer loses nothing that was on screen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.tui.sessions import SessionStore
from tests.tui.conftest import chat_view

DRIVER = Path(__file__).with_name("kill9_driver.py")
ROOT = Path(__file__).resolve().parents[2]


def test_kill_9_mid_answer_keeps_everything_shown(tmp_path: Path) -> None:
    db = tmp_path / "chats.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(db)], stdout=subprocess.PIPE, text=True, env=env)
    shown: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = json.loads(line)["shown"]
            if text:
                shown.append(text)
            if len(shown) >= 3 and len(text) > 80:  # several repaints into the answer
                break
        else:
            pytest.fail(f"the driver ended before answering (exit code {proc.wait()})")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    store = SessionStore(db)
    try:
        messages = store.messages(store.chats()[0].id)
    finally:
        store.close()
    assert [m.role for m in messages] == ["user", "assistant"]
    saved = messages[1]
    assert saved.state == "streaming"  # it never finished: reopened as "interrupted"
    assert saved.content.startswith(shown[-1])  # everything shown had been saved before it was shown


@pytest.mark.anyio
async def test_an_interrupted_answer_reopens_marked_and_can_be_regenerated(make_scripted_app) -> None:
    app, scripted = make_scripted_app()
    chat = app.store.new_chat("scripted", title="Crashed chat")
    app.store.add_message(chat.id, "user", "Tell me a story.")
    app.store.add_message(chat.id, "assistant", "Once upon a", state="streaming")
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        await pilot.pause()
        assert view.chat.title == "Crashed chat"
        header = str(view.query("MessageView").last().query_one(".header").render())
        assert "interrupted" in header
        await pilot.press("ctrl+r")
        while view.busy:
            await pilot.pause(0.05)
        assert [m.content for m in app.store.messages(chat.id)] == ["Tell me a story.", "Hello there!"]
        assert scripted.asked[-1] == [{"role": "user", "content": "Tell me a story."}]
