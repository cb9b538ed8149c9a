"""The bottom line: which model, how fast, how full the context, how much memory, where the layers run."""

from __future__ import annotations

from dataclasses import dataclass

from textual.widgets import Static

from edgellm.units import human_bytes

SEPARATOR = " │ "


@dataclass
class Status:
    """What the bar shows; fields left empty are not shown."""

    model: str = ""
    file_type: str = ""
    prompt_tps: float = 0.0
    generation_tps: float = 0.0
    ttft_seconds: float = 0.0
    context_used: int = 0
    context_size: int = 0
    rss_bytes: int = 0
    split: str = ""
    activity: str = ""  # "loading model…", "reading prompt…", "writing…" (see Answer.activity)

    def line(self) -> str:
        parts = [f"{self.model} {self.file_type}".strip() or "no model"]
        if self.activity:
            parts.append(self.activity)
        if self.prompt_tps:
            parts.append(f"prompt {self.prompt_tps:.0f} tok/s")
        if self.generation_tps:
            parts.append(f"gen {self.generation_tps:.1f} tok/s")
        if self.ttft_seconds:
            parts.append(f"TTFT {self.ttft_seconds * 1000:.0f} ms")
        if self.context_size:
            parts.append(f"ctx {self.context_used}/{self.context_size}")
        if self.rss_bytes:
            parts.append(f"RAM {human_bytes(self.rss_bytes)}")
        if self.split:
            parts.append(self.split)
        return SEPARATOR.join(parts)


class StatusBar(Static):
    """Renders a `Status`; the chat view changes fields and calls `refresh_status`."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", markup=False, **kwargs)  # type: ignore[arg-type]
        self.status = Status()
        self._shown = ""

    def refresh_status(self) -> None:
        line = self.status.line()
        if line != self._shown:
            self._shown = line
            self.update(line, layout=False)  # one fixed line: repaint it, never re-lay-out the screen
