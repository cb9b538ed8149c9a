"""Issue 16 point 7, the chat app as a demanding user expects: help that scrolls and fits 80x24, a
status bar that drops fields instead of cutting words, no blank "New chat" rows left behind, a
model picker that filters and shows memory in numbers, chat search / switch chat (scripted engine)."""

from __future__ import annotations

import pytest
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, OptionList

from edgellm.tui.app import ChatApp
from edgellm.tui.model_choices import ModelChoice
from edgellm.tui.screens.chat_search import ChatSearch
from edgellm.tui.screens.help import HelpScreen
from edgellm.tui.screens.model_picker import ModelPicker
from edgellm.tui.sessions import NEW_CHAT_TITLE, SessionStore
from edgellm.tui.widgets.chat_list import ChatList
from edgellm.tui.widgets.status_bar import SEPARATOR, Status
from tests.tui.conftest import chat_view, send, wait_idle

pytestmark = pytest.mark.anyio
FULL = Status(model="qwen1.5-0.5b-chat:Q4_K_M", file_type="Q4_K_M", prompt_tps=280.4, generation_tps=78.06,
              ttft_seconds=0.1234, context_used=412, context_size=2048, rss_bytes=310_000_000, split="100% CPU",
              activity="writing…")  # fmt: skip


def titles(app: ChatApp) -> list[str]:
    return [item.chat.title for item in app.screen.query_one(ChatList).children]


@pytest.mark.parametrize("width", [200, 100, 80, 60, 40, 30, 24])
def test_status_bar_drops_whole_fields_at_narrow_widths(width: int) -> None:
    whole = [text for _, text in FULL.fields()]
    line = FULL.line(width)
    assert len(line) <= width
    shown = line.split(SEPARATOR)
    assert all(part in whole for part in shown), "no field is cut"
    assert shown[0] == "Qwen1.5-0.5B-Chat Q4_K_M", "the model is always there, by its one (registry) name"
    assert shown == [t for t in whole if t in shown], "in the same order"
    if width >= len(SEPARATOR.join(whole)):
        assert shown == whole
    wider = FULL.line(width + 20).split(SEPARATOR)
    assert set(shown) <= set(wider), "a wider bar shows at least as much"
    order = [t for _, t in sorted(FULL.fields(), key=lambda f: -f[0])]
    assert shown[1:] == [t for t in whole if t in order[: len(shown)]][1:], "the most useful fields stay"


def test_a_model_name_wider_than_the_bar_is_shortened_not_wrapped() -> None:
    assert Status("x" * 50, "Q4_1").line(20) == "x" * 19 + "…"


async def test_help_fits_80x24_and_scrolls_with_the_keyboard(make_scripted_app) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one(".help-box")
        assert box.region.right <= 80 and box.region.bottom <= 24
        scroll = app.screen.query_one(VerticalScroll)
        assert scroll.has_focus and scroll.max_scroll_y > 0, "longer than the screen: it must scroll"
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y == scroll.max_scroll_y
        await pilot.press("home", "down", "down")
        await pilot.pause()
        assert scroll.scroll_y == 2
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_opening_and_leaving_leaves_no_blank_chats(make_scripted_app, db_path) -> None:
    for _ in range(3):  # open the app, look, quit: three times
        app, _ = make_scripted_app()
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await app.action_quit()
    assert SessionStore(db_path).chats() == []
    app, _ = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Keep me")
        await wait_idle(pilot)
        await pilot.press("ctrl+n")  # a new chat, then back to the old one without writing in it
        await pilot.pause()
        assert titles(app) == [NEW_CHAT_TITLE, "Keep me"]
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert titles(app) == [NEW_CHAT_TITLE, "Keep me"], "one blank chat at most"
        keep = next(c for c in app.store.chats() if c.title == "Keep me")
        await chat_view(app).open(keep)  # leaving the blank chat: it goes
        await pilot.pause()
        assert [c.title for c in app.store.chats()] == ["Keep me"]
        await pilot.press("ctrl+n")
        await pilot.pause()
        chat_view(app).prompt.insert("half a thought")  # a draft is kept, with its chat
        await chat_view(app).open(keep)
        await pilot.pause()
        assert sorted(c.title for c in app.store.chats()) == ["Keep me", NEW_CHAT_TITLE]
        await app.action_quit()
    store = SessionStore(db_path)
    assert sorted(c.title for c in store.chats()) == ["Keep me", NEW_CHAT_TITLE], "the draft kept its chat"
    store.close()


async def test_switch_chat_finds_chats_by_title_and_by_message(make_scripted_app) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        for text in ("Bread with rye flour", "Sourdough starter", "Python decorators"):
            await send(pilot, text)
            await wait_idle(pilot)
            await pilot.press("ctrl+n")
            await pilot.pause()
        offered = {c.title for c in app.get_system_commands(app.screen)}
        assert "Switch chat (search chats)" in offered
        await pilot.press("ctrl+f")
        await pilot.pause()
        search = app.screen
        assert isinstance(search, ChatSearch)
        found = search.query_one(OptionList)
        assert found.option_count == 4  # every chat before typing (the new one too)
        await pilot.press(*"RYE")
        await pilot.pause()
        assert found.option_count == 1 and "Bread with rye flour" in str(found.get_option_at_index(0).prompt)
        search.query_one(Input).value = "there!"  # words of the answers, in no title
        await pilot.pause()
        assert found.option_count == 3 and "Hello there!" in str(found.get_option_at_index(0).prompt)
        search.query_one(Input).value = "decorat"
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, ChatSearch)
        assert chat_view(app).chat.title == "Python decorators"


async def test_model_picker_filters_as_you_type_and_shows_memory(make_scripted_app, monkeypatch) -> None:
    choices = [
        ModelChoice("default", "default", "Q4_1", 98_362_432, True, memory=298_700_000),
        ModelChoice("qwen1.5-7b-chat:Q4_K_M", "qwen1.5-7b-chat", "Q4_K_M", 4_681_053_004, True, memory=5_900_000_000),
        ModelChoice("llama-2-70b-chat:Q4_K_M", "llama-2-70b-chat", "Q4_K_M", 41_817_092_966, False,
                    "edgellm pull llama-2-70b-chat:Q4_K_M", local=False, memory=45_200_000_000),
    ]  # fmt: skip
    monkeypatch.setattr("edgellm.tui.screens.model_picker.model_choices", lambda *_: choices)
    app, _ = make_scripted_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("f3")
        await pilot.pause(0.2)
        picker = app.screen
        assert isinstance(picker, ModelPicker)
        table = picker.query_one(DataTable)
        assert table.row_count == 3
        memory = [str(table.get_row_at(i)[4]) for i in range(3)]
        assert memory == ["298.7 MB, fits", "5.9 GB, fits", "45.2 GB, too big"]
        await pilot.press(*"qwen")
        await pilot.pause()
        assert picker.query_one(Input).value == "qwen" and table.row_count == 1
        await pilot.press("enter")
        await pilot.pause()
        assert chat_view(app).chat.model == "qwen1.5-7b-chat:Q4_K_M"
