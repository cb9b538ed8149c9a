"""F1: the keys and what the TUI can do, in one page that scrolls with the keyboard (it is longer
than an 80x24 terminal)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown

HELP = """\
# edgellm chat

| Key | Does |
| --- | --- |
| **Enter** | send the message |
| **Shift+Enter**, **Ctrl+J** | new line in the message |
| **Esc** | stop the answer at once (also while the prompt is read); cancel editing |
| **↑** in an empty box | edit your last message and send it again |
| **Ctrl+R** | write the last answer again |
| **Ctrl+N** | new chat (same model and settings) |
| **F2** / **Delete** in the list | rename / delete the chat |
| **F3** | choose the model: type to filter, Enter on one not downloaded downloads it, Ctrl+O opens a .gguf file |
| **Ctrl+F** | find a chat by its title or its messages, and open it |
| **F4** | system prompt and parameters of this chat |
| **Ctrl+S** | export the chat to Markdown |
| **Ctrl+O** / **Ctrl+G** | copy the last answer / its last code block |
| **c** / **k** on a message | copy it / its code block (click a code block to copy it) |
| **Ctrl+B** | show or hide the chat list |
| **Ctrl+T** | light or dark theme |
| **Ctrl+P** | command palette: every action by name |
| **Tab** | move between the chat list, the messages and the box |
| **Ctrl+Q** | quit |

Chats are saved as you go (even half-written answers) in `chats.db` in the data folder
(`$XDG_DATA_HOME/edgellm`, or `$EDGELLM_HOME`). When a conversation outgrows the context window
the oldest messages are left out of the prompt, and the chat says so.

The status bar shows the model and its quantization, prompt and generation speed, time to first
token, context used / size, memory in use and where the layers run (CPU / GPU).
"""


class HelpScreen(ModalScreen[None]):
    def __init__(self) -> None:
        super().__init__(classes="dialog")

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box help-box"):
            with VerticalScroll():
                yield Markdown(HELP)
            yield Label("↑ ↓ PgUp PgDn Home End scroll · Esc closes", classes="hint")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()  # the arrow and page keys scroll it
