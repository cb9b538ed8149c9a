"""F3: choose the chat's model among the local ones, with size and whether each fits in memory."""

from __future__ import annotations

import asyncio

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from edgellm.tui.chat_settings import ChatSettings
from edgellm.tui.model_choices import ModelChoice, model_choices
from edgellm.units import human_bytes


class ModelPicker(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss", "Cancel")]

    def __init__(self, current: str, settings: ChatSettings) -> None:
        super().__init__(classes="dialog")
        self.current = current
        self.settings = settings
        self.choices: list[ModelChoice] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box picker-box"):
            yield Label("Choose the model of this chat (size and memory for its context size)", classes="dialog-title")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="models")
            yield Label("Enter chooses · Esc cancels", classes="hint", id="picker-note")

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "Model", "Type", "Size", "Memory", "Note")
        table.loading = True
        settings = self.settings
        self.choices = await asyncio.to_thread(model_choices, settings.n_ctx, settings.n_gpu_layers, self.current)
        table.loading = False
        for choice in self.choices:
            table.add_row(
                "●" if choice.ref == self.current else "",
                choice.name,
                choice.file_type,
                human_bytes(choice.size) if choice.size else "",
                choice.fits_label,
                choice.note,
                key=choice.ref,
            )
        refs = [c.ref for c in self.choices]
        if self.current in refs:
            table.move_cursor(row=refs.index(self.current))
        table.focus()

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        choice = next(c for c in self.choices if c.ref == event.row_key.value)
        if not choice.local:
            self.notify(f"{choice.name} is not downloaded: run `{choice.note}` first", severity="warning")
            return
        if choice.fits is False:
            self.notify(f"{choice.name} may not fit: {choice.note}", severity="warning")
        self.dismiss(choice.ref)
