"""What goes wrong mid-answer, scripted: failures, huge answers, conversations outgrowing the context."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edgellm.errors import EdgeLLMError
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.engines import EngineSlot
from edgellm.tui.widgets.message import MessageView, NoticeView
from tests.tui.conftest import chat_view, send, wait_idle
from tests.tui.scripted import Script, ScriptedEngine

pytestmark = pytest.mark.anyio


def saved(app) -> list[tuple[str, str, str]]:  # noqa: ANN001
    return [(m.role, m.content, m.state) for m in app.store.messages(chat_view(app).chat.id)]


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (EdgeLLMError("llama.cpp failed to evaluate the prompt (code 1); try a smaller --ctx"), "try a smaller --ctx"),
        (RuntimeError("GGML_ASSERT failed"), "the answer failed: RuntimeError: GGML_ASSERT failed"),
    ],
)
async def test_error_mid_answer_keeps_the_partial_answer_and_the_app(make_scripted_app, error, shown) -> None:
    app, scripted = make_scripted_app([Script(["Half ", "an ", "answer"], fail_at=2, error=error), Script(["Fine."])])
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Question")
        await wait_idle(pilot)
        rows = saved(app)
        assert rows[:2] == [("user", "Question", "done"), ("assistant", "Half an ", "error")]
        assert rows[2][0] == "notice" and shown in rows[2][1] and len(rows) == 3
        view = chat_view(app)
        assert shown in str(view.query(NoticeView).last().render())
        assert "failed" in str(view.query(MessageView).last().query_one(".header").render())
        await send(pilot, "Again")  # still usable
        await wait_idle(pilot)
        assert saved(app)[-1] == ("assistant", "Fine.", "done")
        assert scripted.asked[-1][-2:] == [
            {"role": "assistant", "content": "Half an "},
            {"role": "user", "content": "Again"},
        ]


async def test_very_long_answer_is_saved_and_rendered_whole(make_scripted_app) -> None:
    pieces = [f"word{i} " if i % 50 else f"\n\n## Part {i}\n\n```python\nprint({i})\n```\n" for i in range(8_000)]
    app, _ = make_scripted_app([Script(pieces)])
    flushes = 0
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        original = view._flush

        async def counting() -> None:
            nonlocal flushes
            flushes += 1
            await original()

        view._flush = counting  # type: ignore[method-assign]
        await send(pilot, "Go on forever")
        await wait_idle(pilot, timeout=300)
        text = "".join(pieces)
        assert saved(app)[-1] == ("assistant", text, "done")
        message = view.query(MessageView).last()
        assert message.content == text and message.query_one("Markdown").source == text
        assert flushes < len(pieces) / 100  # repainted a few times a second, not once per token


async def test_dropping_old_turns_says_so(make_scripted_app) -> None:
    long = " ".join(["word"] * 120)
    app, scripted = make_scripted_app([Script([long])], n_ctx=300, settings=ChatSettings(max_tokens=128))
    async with app.run_test(size=(100, 30)) as pilot:
        for question in ("first question", "second question", "third question"):
            await send(pilot, question)
            await wait_idle(pilot)
        notices = [c for role, c, _ in saved(app) if role == "notice"]
        assert notices and "Left out the 2 oldest messages" in notices[0] and "300-token context" in notices[0]
        assert scripted.asked[-1][0] == {"role": "user", "content": "second question"}
        roles = [role for role, _, _ in saved(app)]
        assert roles.index("notice") < len(roles) - 1 and roles[-1] == "assistant"  # the notice precedes the answer


async def test_a_message_larger_than_the_context_is_refused_not_fatal(make_scripted_app) -> None:
    app, scripted = make_scripted_app(n_ctx=64)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, " ".join(["word"] * 100))
        await wait_idle(pilot)
        roles = [role for role, _, _ in saved(app)]
        assert roles == ["user", "notice"]  # no empty answer kept
        assert "context holds 64" in saved(app)[1][1]
        assert not scripted.asked
        await send(pilot, "short")
        await wait_idle(pilot)
        assert saved(app)[-1][0] == "assistant"


async def test_context_full_mid_answer_is_explained(make_scripted_app) -> None:
    app, _ = make_scripted_app([Script(["So ", "much"], stop_reason="context")])
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Talk")
        await wait_idle(pilot)
        assert saved(app)[-2][:2] == ("assistant", "So much")
        assert "context is full" in saved(app)[-1][1]


async def test_escape_while_the_model_loads_stops_before_it_starts(make_scripted_app, db_path) -> None:
    app, scripted = make_scripted_app()
    release = threading.Event()

    def slow_loader(_model, _options):  # noqa: ANN001, ANN202
        release.wait(30)
        return scripted

    app.slot = EngineSlot(loader=slow_loader, release=lambda _e: None)
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        await send(pilot, "Hello?")
        assert view.answer is not None and view.answer.activity == "loading model…"
        await pilot.press("escape")
        release.set()
        await wait_idle(pilot)
        assert not scripted.asked and [r for r, _, _ in saved(app)] == ["user"]


async def test_sending_while_an_answer_is_written_is_refused(make_scripted_app) -> None:
    app, scripted = make_scripted_app([Script(["a"] * 40, delay=0.02)])
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await send(pilot, "one")
        await send(pilot, "two")
        await wait_idle(pilot)
        assert [c for r, c, _ in saved(app) if r == "user"] == ["one"]
        assert len(scripted.asked) == 1


async def test_enter_pressed_before_the_first_chat_opens_sends_once_it_is_open(make_scripted_app, monkeypatch) -> None:
    from edgellm.tui.screens.chat import ChatScreen

    gate, mounted = asyncio.Event(), ChatScreen.on_mount

    async def mount_when_let(self: ChatScreen) -> None:  # the first chat opens when the test says so
        async def later() -> None:
            await gate.wait()
            await mounted(self)

        self.run_worker(later())

    monkeypatch.setattr(ChatScreen, "on_mount", mount_when_let)
    app, scripted = make_scripted_app([Script(["Hi", " there"])])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        view = chat_view(app)
        assert view.chat is None
        view.prompt.focus()
        view.prompt.insert("typed early")
        await pilot.press("enter")
        assert view.chat is None and view.prompt.text == "typed early"  # nothing to send it to yet
        gate.set()
        for _ in range(100):
            if view.chat is not None:
                break
            await pilot.pause(0.05)
        await wait_idle(pilot)
        assert saved(app)[:2] == [("user", "typed early", "done"), ("assistant", "Hi there", "done")]
        assert view.prompt.text == "" and len(scripted.asked) == 1


def test_scripted_engine_matches_the_interface() -> None:
    """The scripted engine has everything the TUI uses of the real one."""
    from edgellm.tui.engines import ChatEngine

    names = set(ChatEngine.__annotations__) | {n for n in vars(ChatEngine) if not n.startswith("_")}
    assert {"chat", "fit", "cancel", "close", "info", "options", "n_ctx", "template"} <= names
    missing = [n for n in names if not hasattr(ScriptedEngine(), n)]
    assert not missing, missing
