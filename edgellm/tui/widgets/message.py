"""One message of a chat: who wrote it, then its text (Markdown for answers, verbatim for the user)."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, Markdown, Static
from textual.widgets.markdown import MarkdownFence

from edgellm.tui.sessions import STATE_LABELS, Message


def stats_label(stats: dict[str, object]) -> str:
    """`128 tokens · 78.1 tok/s` for an answer's header."""
    tokens = int(stats.get("generated_tokens", 0) or 0)  # type: ignore[call-overload]
    tps = float(stats.get("generation_tps", 0.0) or 0.0)  # type: ignore[arg-type]
    return f"{tokens} token{'s' if tokens != 1 else ''} · {tps:.1f} tok/s" if tokens else ""


def code_blocks(markdown: str) -> list[str]:
    """The fenced code blocks of a Markdown text, without the final newline (pasted into a shell,
    a copied command should wait for Enter)."""
    from markdown_it import MarkdownIt

    return [t.content.rstrip("\n") for t in MarkdownIt("gfm-like").parse(markdown) if t.type == "fence"]


class MessageView(Vertical, can_focus=True):
    """Focus it (Tab or click) to copy it with `c` or its code with `k`; a click on a code block copies that."""

    DEFAULT_CSS = """
    MessageView {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        & > .header { color: $text-muted; text-style: bold; }
        border-left: outer $foreground 10%;
        &.user { border-left: outer $accent 60%; }
        &.user > .header { color: $accent; }
        &.assistant { border-left: outer $success 60%; }
        &.assistant > .header { color: $success; }
        &:focus { background: $boost; }
        & > Markdown { margin: 0; padding: 0; }
        & > .body { padding: 0; }
    }
    """
    BINDINGS = [
        Binding("c", "copy", "Copy message"),
        Binding("k", "copy_code", "Copy code"),
    ]

    def __init__(self, message: Message, author: str, *, live: bool = False) -> None:
        super().__init__(classes=message.role)
        self.message = message
        self.author = author
        self.content = message.content
        self.live = live  # being written now, not interrupted

    def compose(self) -> ComposeResult:
        yield Label(self._header(), markup=False, classes="header")
        if self.message.role == "assistant":
            yield Markdown(self.content)
        else:
            yield Static(self.content, markup=False, classes="body")

    def _header(self) -> str:
        parts = [self.author]
        state = STATE_LABELS.get(self.message.state)
        if state and not self.live:
            parts.append(state)
        label = stats_label(self.message.stats)
        if label:
            parts.append(label)
        return " · ".join(parts)

    def set_header(self, text: str) -> None:
        self.query_one(".header", Label).update(text)

    async def append(self, text: str) -> None:
        """More of a streamed answer: only the last Markdown block is parsed again."""
        self.content += text
        await self.query_one(Markdown).append(text)

    async def finish(self, message: Message) -> None:
        """The answer is complete (or stopped): render it in full once."""
        self.message = message
        self.content = message.content
        self.live = False
        self.author = str(message.stats.get("model") or self.author)
        self.set_header(self._header())
        await self.query_one(Markdown).update(self.content)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify("Copied the message")

    def action_copy_code(self) -> None:
        blocks = code_blocks(self.content)
        if not blocks:
            self.notify("This message has no code block", severity="warning")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify("Copied the code block" if len(blocks) == 1 else f"Copied the last of {len(blocks)} code blocks")

    def on_click(self, event: events.Click) -> None:
        node = event.widget
        while node is not None and node is not self:
            if isinstance(node, MarkdownFence):
                self.app.copy_to_clipboard(node.code)
                self.notify("Copied the code block")
                return
            node = node.parent  # type: ignore[assignment]


class NoticeView(Static):
    """Something the user should know about the conversation: dropped turns, errors."""

    DEFAULT_CSS = """
    NoticeView {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        color: $warning;
        text-style: italic;
    }
    """

    def __init__(self, message: Message) -> None:
        super().__init__(f"⚠ {message.content}", markup=False, classes="notice")
        self.message = message
