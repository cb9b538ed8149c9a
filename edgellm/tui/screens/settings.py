"""Per-chat settings: the system prompt (the model family's default filled in) and every parameter."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.sessions import Chat


@dataclass(frozen=True)
class SettingsResult:
    system: str | None  # None: the family default
    settings: ChatSettings


def _number(kind: Callable[[str], float], low: float | None = None, high: float | None = None, blank_ok: bool = False):  # noqa: ANN202
    """A parser for one field: the value, or ValueError with a message a user understands."""

    def parse(text: str) -> float | None:
        text = text.strip()
        if not text and blank_ok:
            return None
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"“{text}” is not {'a whole number' if kind is int else 'a number'}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bounds}")
        return value

    return parse


# field, label, parser, hint
FIELDS = [
    ("temperature", "Temperature", _number(float, 0.0, 5.0), "0 = always the likeliest token"),
    ("top_k", "Top-k", _number(int, 0), "0 = off"),
    ("top_p", "Top-p", _number(float, 0.0, 1.0), "1 = off"),
    ("min_p", "Min-p", _number(float, 0.0, 1.0), "0 = off"),
    ("repeat_penalty", "Repeat penalty", _number(float, 0.0, 5.0), "1 = off"),
    ("max_tokens", "Max tokens", _number(int, -1), "-1 = until the context is full"),
    ("n_ctx", "Context size", _number(int, 64, blank_ok=True), "blank = model's (up to 4096)"),
    ("n_threads", "Threads", _number(int, 1, blank_ok=True), "blank = physical cores"),
    ("n_gpu_layers", "GPU layers", _number(int, -1), "-1 = all, 0 = CPU only"),
]


class SettingsScreen(ModalScreen[SettingsResult | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, chat: Chat, default_system: str) -> None:
        super().__init__(classes="dialog")
        self.chat = chat
        self.settings = ChatSettings.from_json(chat.settings)
        self.default_system = default_system  # what the model answers under when the chat sets none

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box settings-box"):
            yield Label(f"Settings of “{self.chat.title}”", classes="dialog-title", markup=False)
            with VerticalScroll():
                yield Label("System prompt (the model family's default until you change it)")
                system = self.chat.system if self.chat.system is not None else self.default_system
                yield TextArea(system, id="system", soft_wrap=True, classes="system-prompt")
                with Grid(classes="settings-grid"):
                    for name, label, _parse, hint in FIELDS:
                        value = getattr(self.settings, name)
                        yield Label(label)
                        yield Input("" if value is None else str(value), id=name, placeholder=hint, tooltip=hint)
                        yield Label(hint, classes="hint")
                yield Label("Context size, threads and GPU layers reload the model.", classes="hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Model default prompt", id="reset")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed, "#reset")
    def _reset_system(self) -> None:
        self.query_one("#system", TextArea).text = self.default_system

    @on(Button.Pressed, "#save")
    @on(Input.Submitted)
    def action_save(self) -> None:
        values: dict[str, object] = {}
        for name, label, parse, _hint in FIELDS:
            field = self.query_one(f"#{name}", Input)
            try:
                values[name] = parse(field.value)
            except ValueError as err:
                field.focus()
                self.notify(f"{label}: {err}", severity="error")
                return
        settings = dataclasses.replace(self.settings, **values)  # type: ignore[arg-type]
        text = self.query_one("#system", TextArea).text
        system = None if text == self.default_system else text
        self.dismiss(SettingsResult(system, settings))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
