"""The bottom line: which model, how fast, how full the context, how much memory, where the layers run."""

from __future__ import annotations

from dataclasses import dataclass

from textual.widgets import Static

from edgellm.models.identity import model_label
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
    acceptance: float = 0.0  # share of the last answer's lookup-decoding drafts the model kept
    context_used: int = 0
    context_size: int = 0
    rss_bytes: int = 0
    split: str = ""
    activity: str = ""  # "loading model…", "reading prompt…", "writing…" (see Answer.activity)

    def fields(self) -> list[tuple[int, str]]:
        """(priority, text) in display order; a lower priority is dropped first when space is short."""
        parts = [(9, f"{model_label(self.model)} {self.file_type}".strip() if self.model else "no model")]
        if self.activity:
            parts.append((8, self.activity))
        if self.prompt_tps:
            parts.append((2, f"prompt {self.prompt_tps:.0f} tok/s"))
        if self.generation_tps:
            parts.append((7, f"gen {self.generation_tps:.1f} tok/s"))
        if self.ttft_seconds:
            parts.append((1, f"TTFT {self.ttft_seconds * 1000:.0f} ms"))
        if self.acceptance:
            parts.append((1, f"drafts {self.acceptance:.0%} kept"))
        if self.context_size:
            parts.append((6, f"ctx {self.context_used}/{self.context_size}"))
        if self.rss_bytes:
            parts.append((5, f"RAM {human_bytes(self.rss_bytes)}"))
        if self.split:
            parts.append((3, self.split))
        return parts

    def line(self, width: int | None = None) -> str:
        """The fields that fit ``width`` cells whole: the least useful go first (TTFT, prompt
        speed, the split, RAM, ...); a field is never cut, except a model name wider than the bar."""
        parts = self.fields()
        while width is not None and len(parts) > 1 and len(SEPARATOR.join(t for _, t in parts)) > width:
            parts.remove(min(parts[1:], key=lambda p: p[0]))
        text = SEPARATOR.join(t for _, t in parts)
        if width is not None and len(text) > width:
            text = text[: max(width - 1, 0)] + "…"
        return text


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

    def on_resize(self) -> None:
        self.refresh_status()

    def refresh_status(self) -> None:
        line = self.status.line(self.content_size.width or None)
        if line != self._shown:
            self._shown = line
            self.update(line, layout=False)  # one fixed line: repaint it, never re-lay-out the screen
