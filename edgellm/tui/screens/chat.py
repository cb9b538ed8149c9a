"""The main screen: chats in a sidebar, the open chat, the status bar, and every chat action."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, ListView

from edgellm.errors import EdgeLLMError
from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.export import export_path, write_markdown
from edgellm.tui.screens.dialogs import ConfirmDialog, TextDialog
from edgellm.tui.screens.model_picker import ModelPicker
from edgellm.tui.screens.settings import SettingsResult, SettingsScreen
from edgellm.tui.sessions import NEW_CHAT_TITLE, Chat
from edgellm.tui.system_prompt import model_default, model_template
from edgellm.tui.widgets.chat_list import ChatItem, ChatList
from edgellm.tui.widgets.chat_view import ChatView
from edgellm.tui.widgets.message import code_blocks
from edgellm.tui.widgets.status_bar import StatusBar

STATUS_SECONDS = 2.0  # how often RAM in use is measured again

# (action, palette title, palette help): one table for the palette, the help screen and the tests.
ACTIONS: list[tuple[str, str, str]] = [
    ("new_chat", "New chat", "Start a chat with the current model and settings"),
    ("stop", "Stop", "Stop the answer being written (Esc)"),
    ("regenerate", "Regenerate answer", "Write the last answer again"),
    ("edit_last", "Edit last message", "Put your last message back in the box to change and resend it"),
    ("copy_answer", "Copy last answer", "Copy the last answer to the clipboard"),
    ("copy_code", "Copy last code block", "Copy the last code block of the last answer"),
    ("switch_chat", "Switch chat (search chats)", "Open another chat, found by its title or its messages (Ctrl+F)"),
    ("rename_chat", "Rename chat", "Give the open chat a new title"),
    ("delete_chat", "Delete chat", "Delete the open chat and its messages"),
    ("export_chat", "Export chat to Markdown", "Write the open chat to a Markdown file"),
    ("pick_model", "Choose model", "Pick the model of the open chat"),
    ("settings", "Chat settings", "System prompt, sampling, context size, threads, GPU layers"),
    ("toggle_sidebar", "Toggle sidebar", "Show or hide the list of chats"),
    ("toggle_dark", "Toggle light/dark theme", "Switch between Textual's dark and light themes"),
    ("help", "Help", "Keys and features (F1)"),
]


class ChatScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "stop", "Stop", priority=True),
        Binding("f1", "help", "Help"),
        Binding("ctrl+n", "new_chat", "New"),
        Binding("ctrl+f", "switch_chat", "Find chat"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("f2", "rename_chat", "Rename"),
        Binding("f3", "pick_model", "Model"),
        Binding("f4", "settings", "Settings"),
        Binding("ctrl+s", "export_chat", "Export"),
        Binding("ctrl+o", "copy_answer", "Copy answer", show=False),
        Binding("ctrl+g", "copy_code", "Copy code", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", show=False),
        Binding("ctrl+t", "toggle_dark", "Light/dark", show=False),
    ]

    def __init__(self, start_model: str | None) -> None:
        super().__init__()
        self.start_model = start_model

    def compose(self) -> ComposeResult:
        app = self.app
        with Horizontal(id="body"):
            yield ChatList(id="chats")
            yield ChatView(app.store, app.slot, app.base_options, id="chat")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def chat_view(self) -> ChatView:
        return self.query_one(ChatView)

    @property
    def chat(self) -> Chat | None:
        return self.chat_view.chat

    async def on_mount(self) -> None:
        await self.chat_view.open(self._first_chat())
        await self.refresh_chats()
        self.chat_view.prompt.focus()
        self.set_interval(STATUS_SECONDS, self._measure_memory)

    def _first_chat(self) -> Chat:
        """Where the user left off: the last chat, unless another model was asked for; blank chats
        a killed app left behind go first."""
        self.app.store.discard_blank()
        chats = self.app.store.chats()
        if chats and self.start_model in (None, chats[0].model):
            return chats[0]
        return self._new_chat_row(self.start_model or "default")

    def _new_chat_row(self, model: str) -> Chat:
        app = self.app
        return app.store.new_chat(model, system=app.new_chat_system, settings=app.new_chat_settings.to_json())

    def _measure_memory(self) -> None:
        bar = self.query_one(StatusBar)
        bar.status.rss_bytes = self.app.memory_in_use()
        bar.refresh_status()

    async def refresh_chats(self) -> None:
        current = self.chat.id if self.chat else None
        await self.query_one(ChatList).show(self.app.store.chats(), current)

    @on(ChatView.Changed)
    async def _chat_changed(self) -> None:
        await self.refresh_chats()

    @on(ListView.Selected, "#chats")
    async def _chat_selected(self, event: ListView.Selected) -> None:
        item = event.item
        if isinstance(item, ChatItem) and (self.chat is None or item.chat.id != self.chat.id):
            await self.chat_view.open(self.app.store.chat(item.chat.id))
            await self.refresh_chats()
        self.chat_view.prompt.focus()

    # -- actions -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":  # Esc belongs to the focused widget unless there is something to stop
            view = self.chat_view
            return view.busy or view.editing is not None
        return True

    def action_stop(self) -> None:
        view = self.chat_view
        if not view.stop():
            view.cancel_edit()

    def action_help(self) -> None:
        from edgellm.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen())

    async def action_new_chat(self) -> None:
        current = self.chat
        if current is not None and current.title == NEW_CHAT_TITLE and not self.chat_view.rows:
            self.chat_view.prompt.focus()  # already in an empty new chat
            return
        model = current.model if current else (self.start_model or "default")
        chat = self.app.store.new_chat(
            model, system=current.system if current else None, settings=current.settings if current else None
        )
        await self.chat_view.open(chat)
        await self.refresh_chats()
        self.chat_view.prompt.focus()

    async def action_regenerate(self) -> None:
        await self.chat_view.regenerate()

    def action_edit_last(self) -> None:
        self.chat_view.edit_last()

    def action_copy_answer(self) -> None:
        last = self.chat_view.last_answer()
        if last is None:
            self.notify("No answer to copy yet", severity="warning")
            return
        self.app.copy_to_clipboard(last.content)
        self.notify("Copied the last answer")

    def action_copy_code(self) -> None:
        last = self.chat_view.last_answer()
        blocks = code_blocks(last.content) if last else []
        if not blocks:
            self.notify("The last answer has no code block", severity="warning")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify("Copied the last code block")

    @work
    async def action_switch_chat(self) -> None:
        from edgellm.tui.screens.chat_search import ChatSearch

        chosen = await self.app.push_screen_wait(ChatSearch(self.app.store, self.chat.id if self.chat else None))
        if chosen is not None and (self.chat is None or chosen != self.chat.id):
            await self.chat_view.open(self.app.store.chat(chosen))
            await self.refresh_chats()
        self.chat_view.prompt.focus()

    @work
    async def action_rename_chat(self) -> None:
        chat = self.chat
        if chat is None:
            return
        title = await self.app.push_screen_wait(TextDialog("Rename chat", chat.title, "Title"))
        if title and title.strip() and title.strip() != chat.title:
            self.chat_view.chat = self.app.store.update_chat(chat.id, title=title.strip())
            await self.refresh_chats()

    @work
    async def action_delete_chat(self) -> None:
        chat = self.chat
        if chat is None:
            return
        if not await self.app.push_screen_wait(ConfirmDialog(f"Delete “{chat.title}” and all its messages?")):
            return
        await self.chat_view.stop_and_wait()
        self.app.store.delete_chat(chat.id)
        self.chat_view.chat = None  # gone: nothing of it (its draft) is saved again
        remaining = self.app.store.chats()
        await self.chat_view.open(remaining[0] if remaining else self._new_chat_row(chat.model))
        await self.refresh_chats()
        self.notify(f"Deleted “{chat.title}”")

    @work
    async def action_export_chat(self) -> None:
        chat = self.chat
        if chat is None:
            return
        suggestion = str(export_path(chat.title, Path.cwd()))
        target = await self.app.push_screen_wait(TextDialog("Export chat to Markdown", suggestion, "File"))
        if not target:
            return
        try:
            path = write_markdown(Path(target).expanduser(), chat, self.app.store.messages(chat.id))
        except EdgeLLMError as err:
            self.notify(str(err), title="Not exported", severity="error", timeout=10)
            return
        self.notify(f"Exported to {path}")

    @work
    async def action_pick_model(self) -> None:
        chat = self.chat
        if chat is None:
            return
        model = await self.app.push_screen_wait(ModelPicker(chat.model, ChatSettings.from_json(chat.settings)))
        if model and model != chat.model:
            self.chat_view.replace_chat(self.app.store.update_chat(chat.id, model=model))
            await self.refresh_chats()

    @work
    async def action_settings(self) -> None:
        chat = self.chat
        if chat is None:
            return
        view = self.chat_view
        engine = view.slot.held(chat.model, view.load_options)
        template = engine.template if engine is not None else await asyncio.to_thread(model_template, chat.model)
        model = str(engine.info.path) if engine is not None else chat.model
        default = await asyncio.to_thread(model_default, model, template)
        result: SettingsResult | None = await self.app.push_screen_wait(SettingsScreen(chat, default))
        if result is None:
            return
        store = self.app.store
        store.set_system(chat.id, result.system)
        self.chat_view.replace_chat(store.update_chat(chat.id, settings=result.settings.to_json()))

    def action_toggle_sidebar(self) -> None:
        chats = self.query_one(ChatList)
        chats.display = not chats.display

    def action_toggle_dark(self) -> None:
        self.app.toggle_dark()
