"""Chat management, dialogs, settings, model picker, palette, help, themes and copying (scripted engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.tui.app import ChatApp
from edgellm.tui.screens.chat import ACTIONS
from edgellm.tui.screens.help import HelpScreen
from edgellm.tui.screens.model_picker import ModelPicker
from edgellm.tui.screens.settings import SettingsScreen
from edgellm.tui.sessions import SessionStore
from edgellm.tui.widgets.chat_list import ChatList
from tests.tui.conftest import chat_view, send, wait_idle
from tests.tui.scripted import Script

pytestmark = pytest.mark.anyio
CODE_ANSWER = ["Here:\n\n", "```python\n", "print('hi')\n", "```\n", "\nDone."]


def titles(app: ChatApp) -> list[str]:
    return [item.chat.title for item in app.screen.query_one(ChatList).children]


async def test_palette_offers_every_action(make_scripted_app) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        offered = {c.title for c in app.get_system_commands(app.screen)}
        assert {title for _, title, _ in ACTIONS} <= offered
        for action, _, _ in ACTIONS:  # every entry runs an action the screen has
            assert callable(getattr(app.screen, f"action_{action}"))


async def test_help_opens_with_f1_and_closes_with_escape(make_scripted_app) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        assert "Shift+Enter" in app.screen.query_one("Markdown").source
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_new_rename_delete_and_export(make_scripted_app, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app, _ = make_scripted_app([Script(CODE_ANSWER)])
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "第一个问题：你好")
        await wait_idle(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        await send(pilot, "Second")
        await wait_idle(pilot)
        assert titles(app) == ["Second", "第一个问题：你好"]

        await pilot.press("f2")
        await pilot.pause()
        dialog_input = app.screen.query_one("Input")
        dialog_input.value = "Renamed"
        await pilot.press("enter")
        await pilot.pause()
        assert titles(app) == ["Renamed", "第一个问题：你好"]

        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.query_one("Input").value == str(tmp_path / "Renamed.md")
        await pilot.press("enter")
        await pilot.pause()
        exported = (tmp_path / "Renamed.md").read_text(encoding="utf-8")
        assert exported.startswith("# Renamed\n") and "```python\nprint('hi')\n```" in exported

        await app.screen.run_action("delete_chat")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert titles(app) == ["第一个问题：你好"]
        assert chat_view(app).chat.title == "第一个问题：你好"


async def test_delete_can_be_cancelled(make_scripted_app) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Keep me")
        await wait_idle(pilot)
        await app.screen.run_action("delete_chat")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert titles(app) == ["Keep me"]


async def test_settings_prefill_the_family_prompt_and_apply(make_scripted_app) -> None:
    app, scripted = make_scripted_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "Hi")
        await wait_idle(pilot)
        assert scripted.asked[-1][0]["role"] == "user"  # no system message: the template's default applies
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        system = screen.query_one("#system")
        assert system.text == "You are a scripted assistant."  # the family default, read from the template
        screen.query_one("#temperature").value = "abc"
        await screen.run_action("save")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)  # refused, with a message, and kept open
        screen.query_one("#temperature").value = "0.3"
        screen.query_one("#max_tokens").value = "32"
        system.text = "Answer in one word."
        await screen.run_action("save")
        await pilot.pause()
        assert not isinstance(app.screen, SettingsScreen)
        chat = app.store.chat(chat_view(app).chat.id)
        assert chat.system == "Answer in one word." and chat.settings["temperature"] == 0.3
        assert chat.settings["max_tokens"] == 32
        await send(pilot, "Again")
        await wait_idle(pilot)
        assert scripted.asked[-1][0] == {"role": "system", "content": "Answer in one word."}


async def test_model_picker_lists_the_default_model_and_switches(make_scripted_app, default_model) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        picker = app.screen
        assert isinstance(picker, ModelPicker)
        while not picker.choices:
            await pilot.pause(0.05)
        default = next(c for c in picker.choices if c.ref == "default")
        assert default.size == default_model.stat().st_size and default.fits is True and default.file_type == "Q4_1"
        assert any(not c.local and c.note.startswith("edgellm pull ") for c in picker.choices)
        table = picker.query_one("DataTable")
        table.move_cursor(row=[c.ref for c in picker.choices].index("default"))
        await pilot.press("enter")
        await pilot.pause()
        assert chat_view(app).chat.model == "default"
        assert app.store.chat(chat_view(app).chat.id).model == "default"


async def test_theme_toggle_is_remembered(make_scripted_app, db_path) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.current_theme.dark
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not app.current_theme.dark
        app.theme = "nord"  # what the palette's "Change theme" does
        await pilot.pause()
    store = SessionStore(db_path)
    assert ChatApp(store, slot=app.slot, model="scripted").theme == "nord"
    store.set_pref("theme", "textual-light")
    assert ChatApp(store, slot=app.slot, model="scripted").theme == "textual-light"
    store.close()


async def test_copy_answer_code_block_and_message(make_scripted_app) -> None:
    app, _ = make_scripted_app([Script(CODE_ANSWER)])
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Code please")
        await wait_idle(pilot)
        await pilot.press("ctrl+o")
        assert app.clipboard == "".join(CODE_ANSWER)
        await pilot.press("ctrl+g")
        assert app.clipboard == "print('hi')"
        view = chat_view(app)
        user_message = view.query("MessageView").first()
        user_message.focus()
        await pilot.press("c")
        assert app.clipboard == "Code please"
        app.copy_to_clipboard("")
        fence = view.query("MarkdownFence").first()
        await pilot.click(fence)
        assert app.clipboard == "print('hi')"


async def test_newline_keys_do_not_send(make_scripted_app) -> None:
    app, scripted = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        view = chat_view(app)
        view.prompt.focus()
        await pilot.press("l", "i", "n", "e", "ctrl+j", "t", "w", "o")
        assert view.prompt.text == "line\ntwo" and not scripted.asked
        await pilot.press("enter")
        await wait_idle(pilot)
        assert scripted.asked[-1][-1] == {"role": "user", "content": "line\ntwo"}


async def test_unsent_text_stays_with_its_chat(make_scripted_app, db_path) -> None:
    app, _ = make_scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "First chat")
        await wait_idle(pilot)
        view = chat_view(app)
        view.prompt.insert("half-typed 半句")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert view.prompt.text == ""
        sidebar = app.screen.query_one(ChatList)
        sidebar.focus()
        sidebar.index = [item.chat.title for item in sidebar.children].index("First chat")
        await pilot.press("enter")
        await pilot.pause()
        assert view.chat.title == "First chat" and view.prompt.text == "half-typed 半句"
        view.prompt.insert(" more")
        await app.action_quit()
    store = SessionStore(db_path)
    again = ChatApp(store, slot=app.slot, model="scripted")
    async with again.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert chat_view(again).prompt.text == "half-typed 半句 more"
    store.close()
