"""F3: choose the chat's model among the local ones, with its size and memory need in numbers;
typing filters the list."""

from __future__ import annotations

import asyncio

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label

from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.model_choices import ModelChoice, model_choices
from edgellm.tui.screens.model_files import DownloadScreen, OpenFileScreen
from edgellm.units import human_bytes


class ModelPicker(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss", "Cancel"), Binding("ctrl+o", "open_file", "Open file")]

    def __init__(self, current: str, settings: ChatSettings) -> None:
        super().__init__(classes="dialog")
        self.current = current
        self.settings = settings
        self.choices: list[ModelChoice] = []
        self.shown: list[ModelChoice] = []  # the choices the filter lets through, in table order

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box picker-box"):
            yield Label("Choose the model of this chat (size and memory for its context size)", classes="dialog-title")
            yield Input(placeholder="type to filter", id="filter", select_on_focus=False)
            yield DataTable(cursor_type="row", zebra_stripes=True, id="models")
            yield Label("Enter chooses (a model not here is downloaded) · Ctrl+O opens a .gguf file · Esc cancels",
                        classes="hint", id="picker-note")

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "Model", "Type", "Size", "Memory", "Note")
        table.loading = True
        settings = self.settings
        self.choices = await asyncio.to_thread(model_choices, settings.n_ctx, settings.n_gpu_layers, self.current)
        table.loading = False
        self._fill("")
        refs = [c.ref for c in self.shown]
        if self.current in refs:
            table.move_cursor(row=refs.index(self.current))
        table.focus()

    @on(Input.Changed, "#filter")
    def _typed(self, event: Input.Changed) -> None:
        self._fill(event.value.strip().lower())

    def on_key(self, event: events.Key) -> None:
        """Letters typed while the list has the focus go to the filter."""
        box = self.query_one("#filter", Input)
        if event.is_printable and event.character and not box.has_focus and event.character.strip():
            box.focus()
            box.insert_text_at_cursor(event.character)
            event.stop()

    def _fill(self, text: str) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.shown = [c for c in self.choices if text in f"{c.name} {c.ref} {c.file_type}".lower()]
        for choice in self.shown:
            table.add_row(
                "●" if choice.ref == self.current else "",
                choice.name,
                choice.file_type,
                human_bytes(choice.size) if choice.size else "",
                choice.fits_label,
                choice.note,
                key=choice.ref,
            )

    @on(Input.Submitted, "#filter")
    def _submitted(self) -> None:
        table = self.query_one(DataTable)
        if self.shown:
            self._choose(self.shown[min(table.cursor_row, len(self.shown) - 1)])

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        self._choose(next(c for c in self.choices if c.ref == event.row_key.value))

    def _dismiss_with(self, model: str | None) -> None:
        """A downloaded or opened model becomes the chat's; nothing (stopped, cancelled) keeps the picker."""
        if model:
            self.dismiss(model)

    def action_open_file(self) -> None:
        self.app.push_screen(OpenFileScreen(), self._dismiss_with)

    def _choose(self, choice: ModelChoice) -> None:
        if not choice.local:  # download it (with progress), then it is the chat's model
            self.app.push_screen(DownloadScreen(choice), self._dismiss_with)
            return
        if choice.fits is False:
            self.notify(f"{choice.name} may not fit: {choice.note}", severity="warning")
        self.dismiss(choice.ref)
