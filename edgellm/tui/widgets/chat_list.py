"""The sidebar: every saved chat, most recent first; Enter or a click opens one."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Label, ListItem, ListView

from edgellm.models.identity import model_label
from edgellm.models.resolve import looks_like_path
from edgellm.tui.sessions import Chat


def sidebar_label(model: str) -> str:
    """The model's one name (edgellm.models.identity.model_label), with the type a store reference names."""
    _, _, qtype = model.partition(":")
    return model_label(model) + (f" {qtype}" if qtype and not looks_like_path(model) else "")


class ChatItem(ListItem):
    def __init__(self, chat: Chat) -> None:
        title = Label(chat.title, markup=False, classes="title")
        super().__init__(title, Label(sidebar_label(chat.model), markup=False, classes="model"))
        self.chat = chat


class ChatList(ListView):
    DEFAULT_CSS = """
    ChatList {
        width: 30;
        height: 1fr;
        border-right: vkey $foreground 20%;
        background: $surface;
        & > ChatItem {
            padding: 0 1;
            & > .title { text-wrap: nowrap; text-overflow: ellipsis; width: 1fr; }
            & > .model { color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; width: 1fr; }
        }
        & > ChatItem.current > .title { text-style: bold; color: $accent; }
    }
    """
    BINDINGS = [Binding("delete", "screen.delete_chat", "Delete chat")]

    async def show(self, chats: list[Chat], current: int | None) -> None:
        """Rebuild the list; the current chat is marked and highlighted."""
        await self.clear()
        await self.extend(ChatItem(c) for c in chats)
        for index, item in enumerate(self.children):
            if isinstance(item, ChatItem) and item.chat.id == current:
                item.add_class("current")
                self.index = index
