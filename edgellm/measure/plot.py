"""A labelled scatter plot written as PNG with numpy and zlib alone.

The quantization report needs one chart (file size against KL divergence); pulling matplotlib
(and its compiled dependencies) onto every laptop for it would weigh more than the rest of
edgellm. A 5x7 bitmap font (upper case, digits and a few signs) is enough for axis labels,
tick values and quantization type names."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgellm import durable

# 5x7 glyphs, one string of 7 rows per character; '#' is ink.
_GLYPHS = {
    " ": ".....|.....|.....|.....|.....|.....|.....",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.",
    "D": "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
    "E": "#####|#....|#....|####.|#....|#....|#####",
    "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####",
    "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
    "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
    "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
    "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
    "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
    "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.",
    "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
    "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
    "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
    "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    "-": ".....|.....|.....|#####|.....|.....|.....",
    "_": ".....|.....|.....|.....|.....|.....|#####",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    "/": ".....|....#|...#.|..#..|.#...|#....|.....",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....",
    "=": ".....|.....|#####|.....|#####|.....|.....",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
}
_FONT = {c: np.array([[ch == "#" for ch in row] for row in g.split("|")], dtype=bool) for c, g in _GLYPHS.items()}
_SCALE = 2  # pixels per font dot
_PALETTE = [  # matplotlib's tab10: distinct for the ten or so types a report compares
    (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def text_mask(text: str, scale: int = _SCALE) -> np.ndarray:
    """The ink of ``text`` (upper-cased; unknown characters as '?'), one dot of space between glyphs."""
    glyphs = [_FONT.get(c, _FONT["?"]) for c in text.upper()] or [_FONT[" "]]
    gap = np.zeros((7, 1), dtype=bool)
    row = np.hstack([part for g in glyphs for part in (g, gap)][:-1])
    return np.kron(row, np.ones((scale, scale), dtype=bool))


class Canvas:
    """An RGB image with the few drawing operations a scatter plot needs."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        h, w, _ = self.pixels.shape
        self.pixels[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = color

    def text(self, x: int, y: int, text: str, color=(0, 0, 0), anchor: str = "left", vertical: bool = False) -> None:  # noqa: ANN001
        """Draw ``text`` with its top-left (or its centre/right edge) at (x, y); vertical reads upwards."""
        mask = text_mask(text)
        if vertical:
            mask = np.rot90(mask)
        h, w = mask.shape
        if anchor == "center":
            x, y = (x - w // 2, y) if not vertical else (x, y - h // 2)
        elif anchor == "right":
            x = x - w
        region = self.pixels[y : y + h, x : x + w]
        region[mask[: region.shape[0], : region.shape[1]]] = color

    def disc(self, cx: int, cy: int, r: int, color: tuple[int, int, int]) -> None:
        yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
        inside = xx * xx + yy * yy <= r * r
        h, w, _ = self.pixels.shape
        if r <= cx < w - r and r <= cy < h - r:
            self.pixels[cy - r : cy + r + 1, cx - r : cx + r + 1][inside] = color

    def png(self) -> bytes:
        """The image as an 8-bit RGB PNG (filter 0 on every row)."""
        h, w, _ = self.pixels.shape
        raw = np.hstack([np.zeros((h, 1), dtype=np.uint8), self.pixels.reshape(h, w * 3)]).tobytes()

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        )


@dataclass
class Point:
    x: float
    y: float
    label: str


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    span = (hi - lo) or abs(hi) or 1.0
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]


def format_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e-4 and abs(v) < 1e6:
        return f"{v:.6f}".rstrip("0").rstrip(".") if abs(v) < 1 else f"{v:g}"
    return f"{v:.0E}".replace("E-0", "E-").replace("E+0", "E")


def scatter(points: list[Point], path: Path, title: str, x_label: str, y_label: str, log_y: bool = True) -> None:
    """Write a scatter plot of ``points`` (labelled) to ``path`` (PNG, written atomically).
    With ``log_y``, points with y <= 0 cannot be shown and are left out."""
    shown = [p for p in points if p.y > 0 or not log_y]
    width, height = 900, 600
    left, right, top, bottom = 130, 40, 60, 80
    canvas = Canvas(width, height)
    xs = [p.x for p in shown] or [0.0, 1.0]
    ys = [p.y for p in shown] or [1.0]
    xt = nice_ticks(min(xs), max(xs))
    x0, x1 = xt[0], xt[-1]
    if log_y:
        e0, e1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        e1 = max(e1, e0 + 1)
        yt = [10.0**e for e in range(e0, e1 + 1)]
        fy = lambda v: (math.log10(v) - e0) / (e1 - e0)  # noqa: E731
    else:
        yt = nice_ticks(min(ys), max(ys))
        fy = lambda v: (v - yt[0]) / ((yt[-1] - yt[0]) or 1)  # noqa: E731
    pw, ph = width - left - right, height - top - bottom

    def px(v: float) -> int:
        return left + round((v - x0) / ((x1 - x0) or 1) * pw)

    def py(v: float) -> int:
        return top + ph - round(fy(v) * ph)

    grid, axis = (225, 225, 225), (0, 0, 0)
    for v in xt:
        canvas.rect(px(v), top, px(v) + 1, top + ph, grid)
        canvas.rect(px(v), top + ph, px(v) + 1, top + ph + 6, axis)
        canvas.text(px(v), top + ph + 12, format_tick(v), anchor="center")
    for v in yt:
        canvas.rect(left, py(v), left + pw, py(v) + 1, grid)
        canvas.rect(left - 6, py(v), left, py(v) + 1, axis)
        canvas.text(left - 10, py(v) - 7, format_tick(v), anchor="right")
    canvas.rect(left, top, left + 1, top + ph + 1, axis)
    canvas.rect(left, top + ph, left + pw + 1, top + ph + 1, axis)
    canvas.text(width // 2, 20, title, anchor="center")
    canvas.text(left + pw // 2, height - 30, x_label, anchor="center")
    canvas.text(20, top + ph // 2, y_label + (" (LOG SCALE)" if log_y else ""), anchor="center", vertical=True)
    for i, p in enumerate(shown):
        color = _PALETTE[i % len(_PALETTE)]
        canvas.disc(px(p.x), py(p.y), 6, color)
        label_x = px(p.x) + 10 if px(p.x) < left + pw - 120 else px(p.x) - 10
        canvas.text(label_x, py(p.y) - 7, p.label, color, anchor="left" if label_x > px(p.x) else "right")
    durable.write_bytes(path, canvas.png())
