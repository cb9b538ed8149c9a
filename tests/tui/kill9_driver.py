"""Run the chat app on the real default model, ask for a long answer, and print (one JSON line each
time it changes) what the answer's Markdown widget shows, until killed. test_kill9.py kills it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from edgellm.runtime.engine import LoadOptions
from edgellm.tui.app import ChatApp
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.sessions import SessionStore
from edgellm.tui.widgets.chat_view import ChatView


async def main(db: Path) -> None:
    settings = ChatSettings(temperature=0.0, max_tokens=4000, n_ctx=1024)
    app = ChatApp(SessionStore(db), base_options=LoadOptions(n_ctx=1024), new_chat_settings=settings)
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.screen.query_one(ChatView)
        view.prompt.insert("Write a very long story about a lighthouse keeper.")
        await pilot.press("enter")
        last = ""
        while True:
            answer = view._answer_view
            shown = answer.query_one("Markdown").source if answer is not None and answer.is_mounted else ""
            if shown != last:
                last = shown
                print(json.dumps({"shown": shown}), flush=True)
            await pilot.pause(0.01)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
