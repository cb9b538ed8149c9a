"""Ctrl+F / "Switch chat" in the palette: find a chat by its title or by words in its messages,
and open it. The list filters as you type; Enter opens the highlighted chat."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from edgellm.tui.sessions import SessionStore
from edgellm.tui.widgets.chat_list import sidebar_label


class ChatSearch(ModalScreen[int | None]):
    """Dismisses with the chosen chat's id, or None."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel"), Binding("down", "focus_list", show=False)]

    def __init__(self, store: SessionStore, current: int | None) -> None:
        super().__init__(classes="dialog")
        self.store = store
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box search-box"):
            yield Label("Switch chat: type words of its title or messages", classes="dialog-title")
            yield Input(placeholder="search chats", id="query")
            yield OptionList(id="found")
            yield Label("Enter opens · ↓ to the list · Esc cancels", classes="hint", id="search-note")

    def on_mount(self) -> None:
        self._fill("")

    @on(Input.Changed, "#query")
    def _typed(self, event: Input.Changed) -> None:
        self._fill(event.value.strip())

    def _fill(self, text: str) -> None:
        found = self.store.search(text) if text else [(c, "") for c in self.store.chats()]
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options(
            Option(f"{chat.title}  ·  {sidebar_label(chat.model)}" + (f"\n  {hit}" if hit else ""), id=str(chat.id))
            for chat, hit in found
        )
        options.highlighted = 0 if found else None
        self.query_one("#search-note", Label).update(
            f"{len(found)} chat{'s' if len(found) != 1 else ''} · Enter opens · ↓ to the list · Esc cancels"
        )

    def action_focus_list(self) -> None:
        self.query_one(OptionList).focus()

    @on(Input.Submitted, "#query")
    def _submitted(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self.dismiss(int(options.get_option_at_index(options.highlighted).id or 0))

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))
