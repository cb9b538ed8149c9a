"""The quantization report's chart (file size against KL divergence), drawn with matplotlib.

matplotlib's object API (a Figure on the Agg canvas, never pyplot) needs no display and keeps no
global state, so a report made from a worker thread or a test cannot leak open figures; anyone can
restyle the chart with matplotlib's usual rcParams/style sheets."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgellm import durable

SIZE_INCHES = (9.0, 6.0)
DPI = 100  # 900 x 600 pixels: readable in a README and on a laptop screen


@dataclass
class Point:
    x: float
    y: float
    label: str


def figure(points: list[Point], title: str, x_label: str, y_label: str, log_y: bool = True) -> Figure:
    """A labelled scatter plot of ``points``, one colour each (matplotlib's tab10 cycle).
    With ``log_y``, points with y <= 0 cannot be shown and are left out."""
    shown = [p for p in points if p.y > 0 or not log_y]
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for p in shown:
        ax.scatter([p.x], [p.y], s=60, zorder=3)
        ax.annotate(p.label, (p.x, p.y), xytext=(7, 4), textcoords="offset points", fontsize=10)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label + (" (log scale)" if log_y else ""))
    ax.grid(True, which="major", color="0.88", zorder=0)
    ax.margins(x=0.12, y=0.12)
    return fig


def scatter(points: list[Point], path: Path, title: str, x_label: str, y_label: str, log_y: bool = True) -> None:
    """Write ``figure(...)`` to ``path`` as PNG, atomically (a temporary file renamed when complete)."""
    buf = io.BytesIO()
    figure(points, title, x_label, y_label, log_y).savefig(buf, format="png")
    durable.write_bytes(path, buf.getvalue())
