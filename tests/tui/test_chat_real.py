"""The chat TUI driven by Textual's Pilot against the real default model (greedy, short answers)."""

from __future__ import annotations

import dataclasses

import pytest

from edgellm.runtime.client import RemoteEngine
from edgellm.runtime.engine import Engine
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.widgets.message import MessageView
from edgellm.tui.widgets.status_bar import StatusBar
from tests.tui.conftest import GREEDY, chat_view, send, wait_idle, wait_writing

pytestmark = pytest.mark.anyio
ESSAY = "Write a very long essay about the history of Rome."


def rows(app) -> list[tuple[str, str, str]]:  # noqa: ANN001
    view = chat_view(app)
    return [(m.role, m.content, m.state) for m in app.store.messages(view.chat.id)]


async def test_send_streams_what_the_engine_says_and_saves_it(make_real_app, remote_engine: RemoteEngine,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # long enough (about a second) that the 10 Hz screen updates show partial answers
    settings = dataclasses.replace(GREEDY, max_tokens=160)
    seen: list[str] = []  # what the answer's view showed after each streaming update
    append = MessageView.append

    async def recording_append(self: MessageView, text: str) -> None:
        await append(self, text)
        seen.append(self.content)

    monkeypatch.setattr(MessageView, "append", recording_append)
    app = make_real_app(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        await send(pilot, ESSAY)
        streamed = view.answer  # the pieces exactly as the engine's turn yielded them
        await wait_idle(pilot)

        saved = rows(app)
        assert [r[0] for r in saved] == ["user", "assistant"]
        answer = saved[1][1]
        assert answer == "".join(streamed.pieces)  # the screen and the database hold exactly what the engine wrote
        assert streamed.stats.generated_tokens > 100  # a real answer, streamed in many pieces
        assert saved[1][2] == "done"
        assert len(seen) > 2 and seen[-1] == answer  # shown in several updates while streaming...
        assert all(answer.startswith(p) for p in seen) and seen == sorted(seen, key=len)  # ...growing, in order
        shown = view.query(MessageView).last()
        assert shown.content == answer and shown.query_one("Markdown").source == answer
        status = app.screen.query_one(StatusBar).status
        assert status.generation_tps > 0 and status.prompt_tps > 0 and status.ttft_seconds > 0
        assert status.context_size == remote_engine.n_ctx and 0 < status.context_used <= remote_engine.n_ctx
        assert status.split == "100% CPU" and status.rss_bytes > 50_000_000
        title = app.screen.query_one("#chats").children[0].chat.title
        assert title.endswith("…") and ESSAY.startswith(title.removesuffix("…"))  # named after the first message


async def test_escape_stops_the_answer_and_keeps_what_was_written(make_real_app) -> None:
    app = make_real_app(ChatSettings(temperature=0.0, max_tokens=2000, n_ctx=2048))
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        await send(pilot, "Write a very long story about a dragon.")
        answer = view.answer
        await wait_writing(pilot)
        await pilot.press("escape")
        await wait_idle(pilot)
        assert answer.stats.stop_reason == "cancelled"
        assert 0 < answer.stats.generated_tokens < 2000
        saved = rows(app)
        assert saved[-1][0] == "assistant" and saved[-1][2] == "stopped"
        assert saved[-1][1] == view.query(MessageView).last().content
        assert "stopped" in str(view.query(MessageView).last().query_one(".header").render())


async def test_escape_stops_while_the_prompt_is_read(make_real_app) -> None:
    app = make_real_app()
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        long_prompt = "Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 150
        await send(pilot, long_prompt)
        answer = view.answer
        while answer.engine is None or answer.stats is None:  # the turn has started: the prompt is being read
            await pilot.pause(0.01)
        await pilot.press("escape")
        await wait_idle(pilot)
        assert answer.stats.stop_reason == "cancelled"
        assert answer.stats.generated_tokens == 0 and answer.stats.ttft_seconds == 0
        assert [r[0] for r in rows(app)] == ["user"]  # nothing written, nothing kept
        await pilot.press("ctrl+n")  # the engine is usable again (in a new chat: no long prompt to read)
        await pilot.pause()
        await send(pilot, "Hi")
        await wait_idle(pilot)
        assert rows(app)[-1][0] == "assistant" and rows(app)[-1][1]


async def test_regenerate_replaces_the_last_answer(make_real_app) -> None:
    app = make_real_app()
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        await send(pilot, "Say hello.")
        await wait_idle(pilot)
        first = app.store.messages(view.chat.id)
        await pilot.press("ctrl+r")
        await pilot.pause()
        await wait_idle(pilot)
        second = app.store.messages(view.chat.id)
        assert [m.role for m in second] == ["user", "assistant"]
        assert second[0].id == first[0].id and second[1].created > first[1].created  # a new answer
        assert second[1].content == first[1].content  # greedy: the same words again
        assert second[1].stats["cached_tokens"] > 0  # the prompt came from the KV cache
        assert len(view.query(MessageView)) == 2


async def test_edit_and_resend_replaces_message_and_answer(make_real_app, engine: Engine) -> None:
    app = make_real_app()
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        await send(pilot, "What is the capital of France?")
        await wait_idle(pilot)
        first = app.store.messages(view.chat.id)
        await pilot.press("up")  # in the empty box: edit the last message
        assert view.prompt.text == "What is the capital of France?" and view.editing is not None
        view.prompt.clear()
        view.prompt.insert("What is the capital of Italy?")
        await pilot.press("enter")
        await pilot.pause()
        await wait_idle(pilot)
        saved = rows(app)
        assert [(r[0], r[1]) for r in saved][0] == ("user", "What is the capital of Italy?")
        assert [r[0] for r in saved] == ["user", "assistant"]
        assert [v.content for v in view.query(MessageView)][0] == "What is the capital of Italy?"
        answer = app.store.messages(view.chat.id)[1]
        assert answer.created > first[1].created  # a new answer, not the old one kept (ids are reused)
        assert answer.content == engine.chat(view.history()[:-1], view.settings.sampling()).result()  # greedy


async def test_chats_persist_and_reopen_where_left(make_real_app, db_path) -> None:
    app = make_real_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Tell me a fact.")
        await wait_idle(pilot)
        before = rows(app)
        await pilot.press("ctrl+n")
        await pilot.pause()
        await send(pilot, "Second chat here.")
        await wait_idle(pilot)
        await app.action_quit()
    again = make_real_app()
    async with again.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        view = chat_view(again)
        assert view.chat.title == "Second chat here."  # the chat the user was last in
        titles = [item.chat.title for item in again.screen.query_one("#chats").children]
        assert titles == ["Second chat here.", "Tell me a fact."]
        sidebar = again.screen.query_one("#chats")
        sidebar.focus()
        sidebar.index = 1
        await pilot.press("enter")  # open the older chat from the sidebar
        await pilot.pause()
        assert view.chat.title == "Tell me a fact."
        assert rows(again) == before
        assert [v.content for v in view.query(MessageView)] == [r[1] for r in before]
