"""Snapshots of the main screens (pytest-textual-snapshot), on the scripted engine so they are exact.
Chinese text in messages, tables and the sidebar checks that wide characters take two cells.
After an intended change of the look: pytest tests/tui/test_snapshots.py --snapshot-update."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from edgellm.errors import EdgeLLMError
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.model_choices import ModelChoice
from edgellm.tui.widgets.prompt import PromptInput
from tests.tui.conftest import send, wait_idle
from tests.tui.scripted import Script

SIZE = (110, 34)
CHINESE_ANSWER = [
    "递归是函数**调用自身**的方法。",
    "每次调用处理一个更小的问题，直到遇到基本情况。\n\n",
    "```python\ndef fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n```\n\n",
    "| 语言 | 例子 |\n|---|---|\n| Python | `fact(5)` → 120 |\n| 中文 | 阶乘 |\n",
]


def still(pilot: Pilot) -> None:
    """No blinking cursor in a snapshot."""
    for prompt in pilot.app.screen.query(PromptInput):
        prompt.cursor_blink = False


async def ready(pilot: Pilot) -> None:
    """snap_compare runs this before the first screen is up; wait for it."""
    while not pilot.app.screen.query("ChatView"):
        await pilot.pause(0.01)
    await pilot.pause()


async def conversation(pilot: Pilot) -> None:
    await ready(pilot)
    app = pilot.app
    older = app.store.new_chat("scripted", title="Plan a trip to Kyoto 京都旅行")
    app.store.add_message(older.id, "user", "Plan a trip")
    await app.screen.refresh_chats()
    await send(pilot, "用中文解释一下递归。")
    await wait_idle(pilot)
    still(pilot)
    await pilot.pause()


@pytest.fixture
def chinese_app(make_scripted_app):  # noqa: ANN201
    app, _ = make_scripted_app([Script(CHINESE_ANSWER)])
    return app


def test_chat_screen_dark(chinese_app, snap_compare) -> None:
    assert snap_compare(chinese_app, terminal_size=SIZE, run_before=conversation)


def test_chat_screen_light(chinese_app, snap_compare) -> None:
    async def light(pilot: Pilot) -> None:
        await conversation(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()

    assert snap_compare(chinese_app, terminal_size=SIZE, run_before=light)


def test_help_screen(chinese_app, snap_compare) -> None:
    async def help_open(pilot: Pilot) -> None:
        await ready(pilot)
        still(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(chinese_app, terminal_size=SIZE, run_before=help_open)


def test_settings_screen(chinese_app, snap_compare) -> None:
    async def settings_open(pilot: Pilot) -> None:
        await ready(pilot)
        still(pilot)
        await pilot.press("f4")
        await pilot.pause()
        for area in pilot.app.screen.query("TextArea"):
            area.cursor_blink = False
        await pilot.pause()

    assert snap_compare(chinese_app, terminal_size=(110, 40), run_before=settings_open)


def test_model_picker(chinese_app, snap_compare, monkeypatch) -> None:
    choices = [
        ModelChoice("default", "SmolLM2 135M Instruct", "Q4_1", 98_362_432, True),
        ModelChoice("qwen1.5-7b-chat:Q4_K_M", "qwen1.5-7b-chat", "Q4_K_M", 4_681_053_004, True),
        ModelChoice("llama-2-70b-chat:Q4_K_M", "llama-2-70b-chat", "Q4_K_M", 41_817_092_966, False,
                    "edgellm pull llama-2-70b-chat:Q4_K_M", local=False),
    ]  # fmt: skip
    monkeypatch.setattr("edgellm.tui.screens.model_picker.model_choices", lambda *_: choices)

    async def picker_open(pilot: Pilot) -> None:
        await ready(pilot)
        still(pilot)
        await pilot.press("f3")
        await pilot.pause(0.2)

    assert snap_compare(chinese_app, terminal_size=SIZE, run_before=picker_open)


def test_failed_answer_and_dropped_turns(make_scripted_app, snap_compare) -> None:
    app, _ = make_scripted_app(
        [
            Script([" ".join(["长"] * 150)]),
            Script(["Partial ", "answer ", "then"], fail_at=2, error=EdgeLLMError("llama.cpp ran out of memory")),
        ],
        n_ctx=170,
        settings=ChatSettings(max_tokens=16),
    )

    async def trouble(pilot: Pilot) -> None:
        await ready(pilot)
        await send(pilot, "第一个问题")
        await wait_idle(pilot)
        await send(pilot, "Second question")
        await wait_idle(pilot)
        still(pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=trouble)
