"""The message box: Enter sends, Shift+Enter or Ctrl+J starts a new line."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

# Most terminals send Shift+Enter as plain Enter; Ctrl+J (a bare line feed) works everywhere.
NEWLINE_KEYS = frozenset({"shift+enter", "ctrl+j", "newline"})


class PromptInput(TextArea):
    DEFAULT_CSS = """
    PromptInput {
        height: auto;
        min-height: 3;
        max-height: 12;
        border: round $primary 50%;
        &:focus { border: round $primary; }
    }
    """

    class Submitted(Message):
        """The user pressed Enter; ``text`` is what the box held."""

        def __init__(self, prompt: PromptInput, text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

    class EditLast(Message):
        """Up in an empty box: edit the last message sent (as in Slack or Discord)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            soft_wrap=True,
            tab_behavior="focus",
            highlight_cursor_line=False,
            placeholder="Message (Enter sends)",
            **kwargs,  # type: ignore[arg-type]
        )
        self.border_subtitle = "Enter send · Ctrl+J newline · Esc stop · F1 help"

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key == "up" and not self.text:
            event.stop()
            event.prevent_default()
            self.post_message(self.EditLast())
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)
